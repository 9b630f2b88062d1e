"""Fold jobs as Ray tasks on a local 2-CPU cluster: same artifacts as the serial run, nothing
retrained that is done, a failed job named while the others finish."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lib import cli, executors, plan
from lib import training as T


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


def _artifacts(prof, data) -> dict:
    """Every fold artifact of the plan: (run name, fold, file) -> array."""
    out = {}
    for r in plan.runs(prof):
        res = plan.resolve(prof, r, data)
        for k in res.done if r.kind in ("fold", "sbert") else []:
            if r.kind == "fold":
                files = ["logits_oof.npy", *(f"logits_{s}.npy" for s in T.SPLITS_PREDICTED)]
                out.update({(r.name, k, f): np.load(res.root / f"fold{k}" / f) for f in files})
            else:
                z = np.load(res.root / f"fold{k}" / "outputs.npz")
                out.update({(r.name, k, f): z[f] for f in ("oof", "validation")})
    return out


def test_the_whole_plan_on_ray_matches_the_serial_run_bit_for_bit(smoke, ray_cluster, runs_dir, monkeypatch):
    """What `./run_all.sh --profile smoke --executor ray` does first: every job of the plan as one batch of tasks."""
    prof, data = smoke
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task with num_cpus=1 runs torch on one thread: same float sums
    try:
        runs_dir("serial")
        plan.materialise(prof, data, executor="serial", quiet=True)
        serial = _artifacts(prof, data)
    finally:
        torch.set_num_threads(threads)
    runs_dir("ray")
    monkeypatch.setattr(T.FoldJob, "execute", lambda *a: pytest.fail("the driver trained a fold itself"))
    plan.materialise(prof, data, executor="ray", quiet=True)
    par = _artifacts(prof, data)
    assert par.keys() == serial.keys() and len(par) > 50
    different = [k for k in serial if not np.array_equal(serial[k], par[k], equal_nan=True)]
    assert not different, different[:5]
    assert all(not plan.resolve(prof, r, data).missing for r in plan.runs(prof))
    # done folds are never submitted again; force retrains on Ray too
    hamam = plan.resolve(prof, plan.get(prof, "02/hamam"), data)
    stamps = [(hamam.root / f"fold{k}" / "done.json").stat().st_mtime_ns for k in hamam.done]
    plan.materialise(prof, data, names=["02/hamam"], executor="ray", quiet=True)
    assert stamps == [(hamam.root / f"fold{k}" / "done.json").stat().st_mtime_ns for k in hamam.done]
    plan.materialise(prof, data, names=["02/hamam"], force={"02/hamam"}, folds=[1], executor="ray", quiet=True)
    assert (hamam.root / "fold1" / "done.json").stat().st_mtime_ns != stamps[1]
    assert np.array_equal(
        np.load(hamam.root / "fold1" / "logits_validation.npy"), serial[("02/hamam", 1, "logits_validation.npy")]
    )


def test_a_failed_fold_is_named_and_the_others_finish(smoke, ray_cluster, runs_dir, tmp_path):
    prof, data = smoke
    runs_dir("failing")
    run = plan.Run("test/failing", "fold", "test", (), prof.train_config(epochs=1, msd_k=2, seed=5), (0, 1), False)
    res = plan.resolve(prof, run, data, build=True)
    root, jobs = res.root, plan.jobs(res)
    broken = replace(jobs[1], backbone=str(tmp_path / "no-such-backbone"))
    with pytest.raises(
        executors.FoldJobsFailed, match=r"1 of 2 fold jobs failed[\s\S]*fold 1 \(tiny-random hamam\): OSError"
    ) as err:
        executors.run([jobs[0], broken], data, "ray")
    assert "fold 0" not in str(err.value)
    assert json.loads((root / "fold0" / "done.json").read_text())["fold"] == 0
    assert not (root / "fold1" / "done.json").exists()  # the failed fold is never complete


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
        cli.main(["--profile", "smoke", "--executor", "dask"])
    assert e.value.code == 2


def test_shared_storage_directories_must_be_absolute(monkeypatch, tmp_path):
    from lib.config import RunPaths, backbone_cache

    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    assert RunPaths("smoke").models == tmp_path / "smoke" / "models"
    monkeypatch.setenv("HAMAM_CACHE_DIR", str(tmp_path / "cache"))
    assert RunPaths("smoke").cache == backbone_cache() == tmp_path / "cache"  # backbones.resolve's default too
    monkeypatch.setenv("HAMAM_CACHE_DIR", "relative/cache")
    with pytest.raises(ValueError, match="HAMAM_CACHE_DIR='relative/cache' must be an absolute path"):
        _ = RunPaths("smoke").cache
