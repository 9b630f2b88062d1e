"""Fold jobs as Ray tasks on a local 2-CPU cluster: same artifacts as the serial run, nothing
retrained that is done, a failed job named while the others finish."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lib import executors
from lib import train as T


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """Each run in its own runs/ root (workers get fold directories as explicit paths)."""

    def use(name):
        monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / name))

    return use


def test_ray_folds_match_the_serial_run_and_are_not_retrained(smoke, ray_cluster, runs_dir, monkeypatch):
    prof, data = smoke
    cfg = prof.train_config(epochs=1, msd_k=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task with num_cpus=1 runs torch on one thread: same float sums
    try:
        runs_dir("serial")
        serial = T.run_kfold(prof, cfg, data, executor="serial")
    finally:
        torch.set_num_threads(threads)
    runs_dir("ray")
    monkeypatch.setattr(T, "_train_fold", lambda *a, **k: pytest.fail("the driver trained a fold itself"))
    par = T.run_kfold(prof, cfg, data, executor="ray")
    assert par.root != serial.root and par.root.name == serial.root.name  # same key, other storage root
    assert np.array_equal(par.oof, serial.oof) and not np.isnan(par.oof).any()
    for s in T.SPLITS_PREDICTED:
        assert np.array_equal(par.logits[s], serial.logits[s])
    stamps = [(par.root / f"fold{k}" / "done.json").stat().st_mtime_ns for k in par.folds]
    root, jobs = T.fold_jobs(prof, cfg, data, par.folds)
    assert root == par.root and jobs == []  # done folds are never submitted again
    T.run_kfold(prof, cfg, data, executor="ray")
    assert stamps == [(par.root / f"fold{k}" / "done.json").stat().st_mtime_ns for k in par.folds]
    again = T.run_kfold(prof, cfg, data, folds=[1], executor="ray", force=True)  # force retrains on Ray too
    assert (par.root / "fold1" / "done.json").stat().st_mtime_ns != stamps[1]
    assert np.array_equal(again.logits["validation"][0], serial.logits["validation"][1])


def test_a_failed_fold_is_named_and_the_others_finish(smoke, ray_cluster, runs_dir, tmp_path):
    prof, data = smoke
    runs_dir("failing")
    cfg = prof.train_config(epochs=1, msd_k=2, seed=5)
    root, jobs = T.fold_jobs(prof, cfg, data, [0, 1], save_checkpoints=False)
    broken = replace(jobs[1], backbone=str(tmp_path / "no-such-backbone"))
    with pytest.raises(
        executors.FoldJobsFailed, match=r"1 of 2 fold jobs failed[\s\S]*fold 1 \(tiny-random hamam\): OSError"
    ) as err:
        executors.run([jobs[0], broken], data, "ray")
    assert "fold 0" not in str(err.value)
    assert json.loads((root / "fold0" / "done.json").read_text())["fold"] == 0 and not (root / "fold1").exists()


def test_executor_is_chosen_by_argument_then_environment_then_profile(monkeypatch):
    assert executors.resolve() == "serial" and executors.resolve(None, "ray") == "ray"
    monkeypatch.setenv("HAMAM_EXECUTOR", "ray")
    assert executors.resolve(None, "serial") == "ray"  # the environment switches notebooks without edits
    assert executors.resolve("serial", "ray") == "serial"  # an explicit choice wins
    monkeypatch.setenv("HAMAM_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="executor must be one of"):
        executors.resolve(None)
    monkeypatch.delenv("HAMAM_EXECUTOR")
    with pytest.raises(SystemExit) as e:
        T.main(["--profile", "smoke", "--executor", "dask"])
    assert e.value.code == 2


def test_shared_storage_directories_must_be_absolute(monkeypatch, tmp_path):
    from lib.config import RunPaths, backbone_cache

    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    assert RunPaths("smoke").models == tmp_path / "smoke" / "models"
    monkeypatch.setenv("HAMAM_CACHE_DIR", str(tmp_path / "cache"))
    assert RunPaths("smoke").cache == backbone_cache() == tmp_path / "cache"  # backbones.resolve's default too
    monkeypatch.setenv("HAMAM_CACHE_DIR", "relative/cache")
    with pytest.raises(ValueError, match="HAMAM_CACHE_DIR='relative/cache' must be an absolute path"):
        RunPaths("smoke").cache
