import json
import shutil

import numpy as np
import pytest

from lib import train as T
from lib.config import get_profile
from lib.folds import prepare


@pytest.fixture(scope="module")
def smoke():
    prof = get_profile("smoke")
    return prof, prepare(prof)


def test_bucketing_covers_every_index_once_and_pads_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, 1000)
    bucketed = T.batches(lengths, 32, shuffle=True, bucket=True, rng=np.random.default_rng(1))
    plain = T.batches(lengths, 32, shuffle=True, bucket=False, rng=np.random.default_rng(1))
    for bs in (bucketed, plain):
        assert sorted(i for b in bs for i in b) == list(range(1000))
    padded = lambda bs: sum(len(b) * max(lengths[b]) for b in bs)
    assert padded(bucketed) < 0.7 * padded(plain)


def test_collate_pads_dynamically_or_to_a_fixed_width():
    exs = [{"input_ids": [2, 7, 3], "entity_mask": [0, 1, 0]}, {"input_ids": [2, 3], "entity_mask": [0, 0]}]
    x = T.collate(exs, pad_id=0, labels=[1, -1])
    assert x["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]] and x["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert x["labels"].tolist() == [2, 0]
    assert T.collate(exs, pad_id=0, pad_to=8)["input_ids"].shape == (2, 8)


def test_training_is_deterministic_for_a_seed(smoke):
    prof, data = smoke
    cfg = prof.train_config(epochs=1)
    bb = T.backbones.resolve(cfg.backbone, T.backbone_sentences(cfg.backbone, data))
    tr = data["train"]
    held = tr["fold"] == 0
    runs = [T.train_model(cfg, bb, tr[~held], tr[held], "cpu", max_steps=6)[2] for _ in range(2)]
    assert runs[0].step_loss == runs[1].step_loss and len(runs[0].step_loss) == 6


def test_kfold_writes_artifacts_and_reuses_matching_folds(smoke, tmp_path, monkeypatch):
    prof, data = smoke
    monkeypatch.setattr(T.RunPaths, "__post_init__", lambda self: setattr(self, "root", tmp_path / self.profile))
    cfg = prof.train_config(epochs=1, msd_k=2)
    res = T.run_kfold(prof, cfg, data)
    assert not np.isnan(res.oof).any() and res.logits["validation"].shape == (prof.n_folds, len(data["validation"]), 3)
    fold0 = res.root / "fold0"
    assert np.array_equal(res.logits["validation"][0], np.load(fold0 / "logits_validation.npy"))
    assert (fold0 / "checkpoint" / "config.json").is_file() and (fold0 / "checkpoint" / "hamam_head.safetensors").is_file()
    stamp = (fold0 / "done.json").stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(T, "_train_fold", lambda *a, **k: calls.append(a))
    again = T.run_kfold(prof, cfg, data)
    assert calls == [] and np.array_equal(again.oof, res.oof)  # nothing retrained
    assert (fold0 / "done.json").stat().st_mtime_ns == stamp

    # a fold without its checkpoint is retrained only when a checkpoint is asked for
    shutil.rmtree(fold0 / "checkpoint")
    T.run_kfold(prof, cfg, data, save_checkpoints=False)
    assert calls == []
    T.run_kfold(prof, cfg, data)
    assert [a[3] for a in calls] == [0]  # fold 0 only
    calls.clear()

    # a done.json written for another config (or artifact version) is not trusted
    meta = json.loads((fold0 / "done.json").read_text())
    meta["config"]["lr"] = 123.0
    (fold0 / "done.json").write_text(json.dumps(meta))
    (fold0 / "checkpoint").mkdir()
    (fold0 / "checkpoint" / "hamam_config.json").write_text("{}")
    T.run_kfold(prof, cfg, data)
    assert [a[3] for a in calls] == [0]
    calls.clear()

    # every ingredient of the key moves the run directory: config, backbone build, training code, data
    paths, bb = T.RunPaths(prof.name), T.backbones.resolve(cfg.backbone, T.backbone_sentences(cfg.backbone, data))
    assert T.run_dir(paths, cfg, data, bb) == res.root  # unchanged ingredients hit
    assert T.run_dir(paths, prof.train_config(epochs=1, msd_k=3), data, bb) != res.root
    monkeypatch.setattr(T.backbones, "content_digest", lambda path: "another-build")
    assert T.run_dir(paths, cfg, data, bb) != res.root
    monkeypatch.undo()
    monkeypatch.setattr(T.RunPaths, "__post_init__", lambda self: setattr(self, "root", tmp_path / self.profile))
    monkeypatch.setattr(T, "training_source", lambda: "edited training loop")
    assert T.run_dir(paths, cfg, data, bb) != res.root
    monkeypatch.undo()
    other = {**data, "train": data["train"].assign(label=np.roll(data["train"]["label"].to_numpy(), 1))}
    assert T.run_dir(paths, cfg, other, bb) != res.root

