"""Backbone cache keys cover every input: a local checkpoint's bytes, a hub id's commit, the navec file's bytes and
the builder's logic (not its prose). Tiny files only: no model is built and the hub is never called for real."""

import hashlib
import importlib.util
import inspect
import os
import shutil
import warnings
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import constants

from lib import backbones, cache

SENTENCES = ["Первое предложение.", "Второе предложение."]


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch, tmp_path):
    """No answer memoised by another test, and an empty local hub cache."""
    monkeypatch.setattr(backbones, "_HUB", {})
    monkeypatch.setattr(backbones, "_FILE_SHA", {})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def checkpoint(path):
    """A local checkpoint directory as `save_pretrained` leaves one (weights, config, tokenizer), in a few bytes."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (path / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    (path / "tokenizer.json").write_text('{"model": {"vocab": {"[UNK]": 0}}}')
    return path


def flip_byte(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


# 1. a local checkpoint directory: its files' content, not its name


def test_local_checkpoint_is_keyed_by_the_content_of_its_files(tmp_path):
    ck = checkpoint(tmp_path / "ck")
    before = backbones.content_digest(str(ck))
    assert backbones.content_digest(str(ck)) == before

    flip_byte(ck / "model.safetensors")  # same size, same name, one byte of the weights
    weights = backbones.content_digest(str(ck))
    assert weights != before

    (ck / "config.json").write_text('{"model_type": "bert", "hidden_size": 64}')
    assert backbones.content_digest(str(ck)) not in (before, weights)

    config = backbones.content_digest(str(ck))
    (ck / "tokenizer.json").write_text('{"model": {"vocab": {"[UNK]": 1}}}')
    assert backbones.content_digest(str(ck)) not in (before, weights, config)


def test_the_same_files_at_another_path_give_the_same_digest(tmp_path):
    ck = checkpoint(tmp_path / "ck")
    copy = shutil.copytree(ck, tmp_path / "elsewhere" / "renamed")
    assert backbones.content_digest(str(copy)) == backbones.content_digest(str(ck))
    assert backbones.content_digest(ck) == backbones.content_digest(str(ck))  # a Path as well as a str
    (copy / "config.json").rename(copy / "config2.json")  # the names inside the checkpoint count
    assert backbones.content_digest(str(copy)) != backbones.content_digest(str(ck))


def test_a_single_checkpoint_file_is_keyed_by_its_bytes(tmp_path):
    f = checkpoint(tmp_path / "ck") / "model.safetensors"
    before = backbones.content_digest(str(f))
    flip_byte(f)
    assert backbones.content_digest(str(f)) != before


def test_markers_do_not_count_and_a_built_backbone_is_keyed_by_its_recorded_digest(tmp_path):
    ck = checkpoint(tmp_path / "ck")
    before = backbones.content_digest(str(ck))
    cache.write_meta(ck, "some-key")  # a done.json without a recorded digest
    (ck / ".cache").mkdir()
    (ck / ".cache" / "download.metadata").write_text("etag, timestamp")
    assert backbones.content_digest(str(ck)) == before
    # a built backbone (lib.backbones.resolve) records its files' digest: read, not recomputed
    cache.write_meta(ck, "some-key", content=cache.files_digest(ck))
    assert backbones.content_digest(str(ck)) == cache.files_digest(ck)


def test_each_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "_SETTLED_NS", 0)  # these files were just written: memoise them all the same
    hashed = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, name: hashed.append(f.name) or real(f, name))
    ck = checkpoint(tmp_path / "ck")
    before = backbones.content_digest(str(ck))
    assert backbones.content_digest(str(ck)) == before and len(hashed) == 3
    new = tmp_path / "new.safetensors"  # replaced by another file of the same size: hashed again
    shutil.copy(ck / "model.safetensors", new)
    flip_byte(new)
    os.replace(new, ck / "model.safetensors")
    assert backbones.content_digest(str(ck)) != before and len(hashed) == 4


# 2. a hub id: the commit the hub resolves it to


def fake_hub(monkeypatch, answers):
    asked = []

    def model_info(self, repo_id, *, revision=None, **kw):
        asked.append((repo_id, revision))
        answer = answers[min(len(asked), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(sha=answer)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    return asked


def test_hub_id_is_keyed_by_its_resolved_commit_asked_once_per_process(monkeypatch):
    asked = fake_hub(monkeypatch, ["a" * 40, "b" * 40])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = backbones.content_digest("org/model")
        assert backbones.content_digest("org/model") == first  # the plan's many runs: one question
        assert asked == [("org/model", "main")]
        backbones._HUB.clear()  # a later process, after the hub moved the branch
        assert backbones.content_digest("org/model") != first
    assert first == "org/model@" + "a" * 40


def test_offline_hub_falls_back_to_the_name_with_a_warning(monkeypatch):
    asked = fake_hub(monkeypatch, [ConnectionError("Name or service not known")])
    with pytest.warns(UserWarning, match="name only"):
        assert backbones.content_digest("org/model") == "org/model"
    backbones.content_digest("org/model")
    assert len(asked) == 1  # the failed answer is remembered too: one timeout per process, not one per run


def test_offline_hub_uses_the_commit_the_local_hub_cache_would_load(monkeypatch):
    fake_hub(monkeypatch, [huggingface_hub.errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1")])
    ref = backbones.Path(constants.HF_HUB_CACHE) / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("c" * 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backbones.content_digest("org/model") == "org/model@" + "c" * 40


# 3. navec: the file's bytes, not its size


def test_navec_files_of_one_size_with_other_bytes_give_other_build_keys(tmp_path, monkeypatch):
    a, b, a_copy = tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "copy" / "a.tar"
    a.write_bytes(b"\0" * 1000)
    b.write_bytes(b"\0" * 999 + b"\1")
    a_copy.parent.mkdir()
    shutil.copy(a, a_copy)
    keys = {}
    for f in (a, b, a_copy):
        monkeypatch.setattr(backbones, "navec_path", lambda f=f: f)
        keys[f] = backbones.build_key("navec-bert", SENTENCES)
    assert keys[a] != keys[b]
    assert keys[a] == keys[a_copy]


# 4. the builder: its logic counts, its docstring does not


def edited_builder(tmp_path, name, old, new):
    """The real tiny-random builder's source with one edit, as a function of an importable file."""
    source = inspect.getsource(backbones.build_tiny_random)
    assert old in source
    path = tmp_path / f"{name}.py"
    path.write_text("from __future__ import annotations\n\n" + source.replace(old, new))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_random


def test_a_docstring_edit_of_the_builder_keeps_the_build_key_and_a_logic_edit_moves_it(tmp_path, monkeypatch):
    key = backbones.build_key("tiny-random", SENTENCES)
    doc = inspect.getdoc(backbones.build_tiny_random)
    prose = edited_builder(tmp_path, "builder_prose", doc, "Reworded: the same builder, other words.")
    logic = edited_builder(tmp_path, "builder_logic", "num_hidden_layers=2", "num_hidden_layers=3")
    monkeypatch.setitem(backbones.BUILDERS, "tiny-random", prose)
    assert backbones.build_key("tiny-random", SENTENCES) == key
    monkeypatch.setitem(backbones.BUILDERS, "tiny-random", logic)
    assert backbones.build_key("tiny-random", SENTENCES) != key
