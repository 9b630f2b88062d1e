"""One cache protocol (lib.cache) for every kind of artifact: a changed ingredient misses, unchanged ones hit, a
docstring- or comment-only edit hits, an edit of a function the artifact depends on misses."""

import importlib
import sys
from dataclasses import replace

import numpy as np
import pytest

from lib import backbones, cache, folds, metrics, plan, sbert
from lib import model as hm
from lib import training as T
from lib.config import ROOT, TrainConfig

BODY = """
def f1pn(y, p, sample_weight=None):
    {doc}
    # {comment}
    return {expr}
"""


@pytest.fixture
def variants(tmp_path, monkeypatch):
    """Three importable versions of one function: A, A with other prose (docstring, comment, layout), B."""
    texts = {
        "a": BODY.format(doc='"""Official F1pn."""', comment="why", expr="0.5"),
        "a_prose": BODY.format(doc='"""Another docstring."""', comment="other words", expr="(0.5)"),
        "b": BODY.format(doc='"""Official F1pn."""', comment="why", expr="0.25"),
    }
    for name, text in texts.items():
        (tmp_path / f"variant_{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {name: importlib.import_module(f"variant_{name}").f1pn for name in texts}
    for name in texts:
        sys.modules.pop(f"variant_{name}", None)


def test_code_digest_ignores_prose_and_sees_logic(variants):
    a, prose, b = (cache.code_digest(variants[k]) for k in ("a", "a_prose", "b"))
    assert a == prose and a != b


def test_fold_run_key(smoke, variants, monkeypatch):
    prof, data = smoke
    cfg = prof.train_config()
    bb = backbones.resolve(cfg.backbone, T.backbones.backbone_sentences(cfg.backbone, data))
    key = T.fold_key(cfg, data, bb)
    assert T.fold_key(cfg, data, bb) == key  # every ingredient kept: hit
    assert T.fold_key(replace(cfg, lr=cfg.lr * 2), data, bb) != key  # config
    other = {**data, "train": data["train"].assign(label=np.roll(data["train"]["label"].to_numpy(), 1))}
    assert T.fold_key(cfg, other, bb) != key  # data
    with monkeypatch.context() as m:
        m.setattr(backbones, "content_digest", lambda path: "another build")
        assert T.fold_key(cfg, data, bb) != key  # upstream artifact
    # metrics.f1pn picks the checkpoint: its logic is part of the key, its prose is not
    monkeypatch.setattr(metrics, "f1pn", variants["a"])
    with_a = T.fold_key(cfg, data, bb)
    monkeypatch.setattr(metrics, "f1pn", variants["a_prose"])
    assert T.fold_key(cfg, data, bb) == with_a
    monkeypatch.setattr(metrics, "f1pn", variants["b"])
    assert T.fold_key(cfg, data, bb) != with_a


def test_fold_run_key_covers_module_constants_and_the_resolved_precision(smoke, monkeypatch):
    """The label order (the column order of every saved logit file), the splits a run predicts, and what
    `precision="auto"` resolves to on this machine (bf16 and fp32 runs are different models)."""
    from lib import config

    prof, data = smoke
    cfg = prof.train_config(precision="auto")
    bb = backbones.resolve(cfg.backbone, T.backbones.backbone_sentences(cfg.backbone, data))
    key = T.fold_key(cfg, data, bb)
    with monkeypatch.context() as m:
        m.setattr(config, "LABELS", (1, 0, -1))
        assert T.fold_key(cfg, data, bb) != key
    with monkeypatch.context() as m:
        m.setattr(T, "SPLITS_PREDICTED", ("validation",))
        assert T.fold_key(cfg, data, bb) != key
    keys = set()
    for resolved in ("fp32", "bf16"):
        with monkeypatch.context() as m:
            m.setattr(T, "resolve_precision", lambda precision, device, r=resolved: r)
            keys.add(T.fold_key(cfg, data, bb))
    assert len(keys) == 2


def test_sbert_run_key(smoke, variants, monkeypatch):
    prof, data = smoke
    cfg = prof.train_config()
    bb = backbones.resolve(cfg.backbone, T.backbones.backbone_sentences(cfg.backbone, data))

    def key(**kw):
        return sbert.sbert_key(kw.get("cfg", cfg), data, kw.get("variant", "softmax-entity"), 1, 8, kw.get("bb", bb))

    k = key()
    assert key() == k
    assert key(variant="softmax-plain") != k and key(cfg=replace(cfg, freeze_layers=1)) != k
    assert key(cfg=replace(cfg, mask_mentions=True, mode="masked")) == k  # a field no SBERT model reads
    monkeypatch.setattr(backbones, "hub_digest", lambda name: f"{name}@sha")  # offline: no hub call
    assert key(bb="another/backbone") != k
    # the variant's definition, not only its name: redefine softmax-entity and the key moves
    with monkeypatch.context() as m:
        m.setitem(sbert.VARIANTS, "softmax-entity", ("softmax", "plain"))
        assert key() != k
    # model.loss_fn builds SoftmaxLoss's cross-entropy: editing it retrains the SBERT folds
    monkeypatch.setattr(hm, "loss_fn", variants["a"])
    with_a = key()
    monkeypatch.setattr(hm, "loss_fn", variants["a_prose"])
    assert key() == with_a
    monkeypatch.setattr(hm, "loss_fn", variants["b"])
    assert key() != with_a


def test_backbone_build_key(variants, monkeypatch):
    s = ["Первое предложение.", "Второе предложение."]
    k = backbones.build_key("tiny-random", s)
    assert backbones.build_key("tiny-random", s) == k
    assert backbones.build_key("tiny-random", s[:1]) != k
    monkeypatch.setattr(backbones, "BUILDERS", {**backbones.BUILDERS, "tiny-random": variants["a"]})
    with_a = backbones.build_key("tiny-random", s)
    monkeypatch.setitem(backbones.BUILDERS, "tiny-random", variants["a_prose"])
    assert backbones.build_key("tiny-random", s) == with_a
    monkeypatch.setitem(backbones.BUILDERS, "tiny-random", variants["b"])
    assert backbones.build_key("tiny-random", s) != with_a


def test_prepared_tables_key(raw_copy, variants, monkeypatch, tmp_path):
    from lib.config import get_profile

    prof = get_profile("smoke")
    k = folds.prepared_key(prof, raw_copy)
    assert folds.prepared_key(prof, raw_copy) == k
    assert folds.prepared_key(replace(prof, n_folds=3), raw_copy) != k
    monkeypatch.setattr(folds, "make_folds", variants["a"])
    with_a = folds.prepared_key(prof, raw_copy)
    monkeypatch.setattr(folds, "make_folds", variants["a_prose"])
    assert folds.prepared_key(prof, raw_copy) == with_a
    monkeypatch.setattr(folds, "make_folds", variants["b"])
    assert folds.prepared_key(prof, raw_copy) != with_a
    monkeypatch.undo()
    (raw_copy / "train_data.csv").write_text((raw_copy / "train_data.csv").read_text().replace("\t1\n", "\t0\n", 1))
    assert folds.prepared_key(prof, raw_copy) != k  # the data's bytes


def test_another_data_directory_gets_its_own_tables(raw_copy, tmp_path, monkeypatch):
    """What `./run_all.sh --only 02 --data-dir X` relies on: every chapter's setup reads X, not the last prepared."""
    from lib.chapters import study

    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / "runs"))
    vendored = study.setup("smoke")
    other = study.setup("smoke", data_dir=str(raw_copy))
    assert other.data.data_dir == raw_copy.resolve() and other.data.folder != vendored.data.folder
    assert len(other.train) == 40 and len(vendored.train) != 40
    assert len(study.setup("smoke").train) == len(vendored.train)  # and back: nothing sticks


def test_an_artifact_is_complete_only_with_its_key_written_last(tmp_path):
    d = tmp_path / "artifact"
    with cache.building(d) as tmp:
        (tmp / "a.npy").write_bytes(b"x")
        assert not d.exists()  # nothing is visible before the build completes
        cache.write_meta(tmp, "k1", note="n")
    assert cache.is_complete(d, "k1") and not cache.is_complete(d, "k2")
    cache.invalidate(d)
    assert not cache.is_complete(d, "k1")
    with pytest.raises(RuntimeError), cache.building(d) as tmp:
        raise RuntimeError("a killed build")
    assert (d / "a.npy").is_file() and not list(tmp_path.glob("artifact.tmp-*"))  # the old copy stays, no debris


# --- the plan ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_plan_names_are_unique_and_chapters_read_only_planned_runs(profile):
    from lib.config import get_profile

    prof = get_profile(profile)
    names = [r.name for r in plan.runs(prof)]
    assert len(names) == len(set(names))
    assert {"data/prepared", "02/hamam", "02/unmasked", "02/masked", "05/cls"} <= set(names)
    for r in plan.runs(prof):
        assert r.kind in ("prepared", "backbone", "fold", "sbert") and set(r.readers) <= set(plan.CHAPTERS)
        if r.kind == "fold":
            assert isinstance(r.cfg, TrainConfig) and r.folds
    sources = " ".join(p.read_text() for p in (ROOT / "notebooks").glob("*.ipynb"))
    for forbidden in ("run_kfold", "config_for(", "train_config(", "TrainConfig("):
        assert forbidden not in sources  # notebooks get their runs from the plan by name


def test_one_config_constructor_for_every_chapter():
    """The paper profile's per-backbone settings reach every chapter's runs of that backbone alike."""
    from lib.config import get_profile

    prof = get_profile("paper", backbone="xlm-roberta-large")
    hamam = plan.get(prof, "02/hamam").cfg
    assert (hamam.lr, hamam.grad_accum_steps) == (1e-5, 2)
    for r in plan.runs(prof):
        if r.kind == "fold" and r.cfg.backbone == "xlm-roberta-large":
            if r.cfg.loss == "dice":  # a batch-level loss is not accumulated: it trains on the micro-batch
                assert (r.cfg.lr, r.cfg.grad_accum_steps, r.cfg.batch_size) == (1e-5, 1, 16), r.name
            else:
                assert (r.cfg.lr, r.cfg.grad_accum_steps) == (1e-5, 2), r.name


def test_batch_size_must_be_a_multiple_of_the_accumulation_steps():
    with pytest.raises(ValueError, match="multiple of grad_accum_steps"):
        TrainConfig(batch_size=32, grad_accum_steps=3)


def test_importing_the_metrics_does_not_load_torch():
    import subprocess

    code = "import sys, lib.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
