"""Where jobs run: in this process (`serial`) or as Ray tasks (`ray`), one task per job.

A job (`lib.training.FoldJob`, `lib.sbert.SbertJob`) trains one fold of one run of the plan and writes its
directory (`done.json` last, `lib.cache`); it has `execute(data, device)` and `is_done()`. The driver only
reads what jobs wrote. So a job can run on any node that sees the same runs/ directory and
backbone cache (shared storage: HAMAM_RUNS_DIR, HAMAM_CACHE_DIR) and has this repository
installed (`pip install -e .`). With RAY_ADDRESS set, `ray.init` joins that cluster; otherwise it
starts a local one. Each task asks for one GPU where the cluster has GPUs, else `cpus` CPUs.
Choose the executor with the profile's `executor`, `python -m lib.train --executor ray`,
`./run_all.sh --executor ray`, or HAMAM_EXECUTOR=ray (the notebooks need no change).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

EXECUTORS = ("serial", "ray")


class FoldJobsFailed(RuntimeError):
    """Some fold jobs failed; the others finished and their directories are complete."""


def resolve(explicit: str | None = None, default: str | None = None) -> str:
    """An explicit choice (argument, --executor) first, then HAMAM_EXECUTOR (so notebooks switch
    without edits), then the profile's default."""
    name = explicit or os.environ.get("HAMAM_EXECUTOR") or default or "serial"
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {name!r}")
    return name


def run(jobs: list, data: dict, executor: str = "serial", device: str = "auto", cpus: int = 1) -> None:
    """Train every job. Serially the first failure stops the loop (an ordinary exception); on Ray
    every job runs and FoldJobsFailed names the failed folds after the others finish.
    `device` is the profile's setting ("auto" = CUDA where the process has it, else CPU)."""
    if not jobs:
        return
    if executor == "ray":
        return _run_ray(jobs, data, str(device), cpus)
    for job in tqdm(jobs, desc=f"{len(jobs)} jobs", leave=False, disable=None):
        job.execute(data, str(device))


def _execute(job, data: dict, device: str) -> None:
    if job.is_done():  # finished meanwhile (another driver or task): never retrained
        return
    job.execute(data, device)


def connect():
    """The running Ray session, a cluster at RAY_ADDRESS, or a new local one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    return ray


def _run_ray(jobs: list, data: dict, device: str, cpus: int) -> None:
    ray = connect()
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0 and (device == "auto" or device.startswith("cuda"))
    task = ray.remote(_execute).options(max_retries=0, **({"num_gpus": 1} if use_gpu else {"num_cpus": cpus}))
    data_ref = ray.put(data)  # one copy in the object store, shared by the tasks
    pending = {task.remote(job, data_ref, device): job for job in jobs}
    failed = []
    with tqdm(total=len(jobs), desc=f"ray: {len(jobs)} fold jobs", leave=False, disable=None) as bar:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                ray.get(ready)
            except Exception as e:  # a task's error, re-raised by ray.get: keep going, report at the end
                cause = getattr(e, "cause", None) or e  # RayTaskError wraps the task's own exception
                first = (str(cause).strip().splitlines() or [""])[0]
                failed.append(f"{job}: {type(cause).__name__}: {first}")
            bar.update(1)
    if failed:
        raise FoldJobsFailed(
            f"{len(failed)} of {len(jobs)} fold jobs failed (the others finished):\n" + "\n".join(failed)
        )
