"""What a run of the plan costs on this machine before anything is trained: a few timed optimiser steps of each kind
of model the plan trains (seconds, not minutes), so `./run_all.sh --plan` shows minutes on a fresh clone.

A kind is what decides the cost of a step (`cost_key`: backbone, mode, pooling, frozen layers, sequence length,
batch, K > 1, loss, precision). Each kind is built once, warmed up with one step and timed over a few more on real
length-bucketed training batches, with the training loop's own `optimiser_step`. The result is an estimate, not a
measurement of the run: early stopping may end a run sooner, held-out evaluations add time, and from the second
epoch on the frozen layers' outputs are replayed (`HamamModel.cache_frozen`), which makes steps cheaper. Once a run
has been trained here, its own seconds replace the estimate (`lib.plan.measured_rates`). Results are kept per
machine in `runs/<profile>/calibration.json`, keyed by the hardware line and the training code's digest.

Before timing anything, a fresh clone reads the committed run's record (`figures/results.json` `run.runs`): a run
whose signature (config, folds' dataset, training code) and hardware match what was recorded is estimated by the
seconds that run took, per fold (`recorded_seconds`), no calibration needed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import cache
from . import model as hm
from . import training as T
from .config import RunPaths, TrainConfig


def cost_key(cfg: TrainConfig, precision) -> tuple:
    """The settings a step's cost depends on."""
    return (
        cfg.backbone,
        cfg.mode,
        cfg.pooling,
        cfg.freeze_layers,
        cfg.max_length,
        cfg.batch_size,
        cfg.msd_k > 1,
        cfg.loss,
        cfg.group_sentences,
        cfg.gradient_checkpointing,
        cfg.grad_accum_steps,
        precision,
    )


def timing_batches(enc, train, cfg: TrainConfig, quantiles) -> list[np.ndarray]:
    """Training batches of the loop's own kind (`lib.training.batches` over the whole set: length buckets, a
    sentence's rows together where the recipe groups them), at the given quantiles of their padded length."""
    lengths = [len(e["input_ids"]) for e in enc]
    groups = train["sentence"].to_numpy() if cfg.group_sentences else None  # as training batches them
    batches = T.batches(lengths, cfg.batch_size, True, cfg.bucket, np.random.default_rng(cfg.seed), groups)
    order = np.argsort([max(lengths[i] for i in b) for b in batches], kind="stable")
    return [np.asarray(batches[order[int(q * (len(order) - 1))]]) for q in quantiles]


def seconds_per_step(cfg: TrainConfig, backbone_path: str, train, device: str = "cpu", steps: int = 3) -> float:
    """Mean wall seconds of an optimiser step, timed on `steps` batches of the training loop's own kind (length
    buckets of the whole training set, as `lib.training.batches` makes them) at the 20th to 80th percentile of
    their padded length, after one untimed warm-up step."""
    dev = T.pick_device(device)
    precision = T.resolve_precision(cfg.precision, dev)
    model, tok = hm.build(backbone_path, cfg)
    model.to(dev).train()
    enc = T.encode_df(tok, train, cfg)
    y = train["label"].to_numpy()
    picked = timing_batches(enc, train, cfg, (0.5, *np.linspace(0.2, 0.8, steps)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")
    loss_fn, row_weight = T.step_objective(cfg, dev)
    micro = cfg.batch_size // cfg.grad_accum_steps
    times = []
    for s, rows in enumerate(picked):
        parts = T.step_parts(enc, rows, y, tok.pad_token_id, micro, dev)
        t0 = time.perf_counter()
        T.optimiser_step(model, opt, scaler, parts, loss_fn, row_weight, dev, precision, cfg.grad_clip)
        if s:  # the first step pays for allocation and kernels' first use
            times.append(time.perf_counter() - t0)
    return float(np.mean(times)) if times else float("nan")


TIMING_CODE = seconds_per_step  # the timing method as defined here (its digest is part of the stored key)


def _file(profile_name: str) -> Path:
    return RunPaths(profile_name).root / "calibration.json"


def calibrated_rates(profile_name: str, todo: list[tuple[TrainConfig, str, object]], device: str = "auto") -> dict:
    """{cost_key: seconds per step} for every kind in `todo` [(cfg, backbone_path, train rows)], timed here once
    and read back from `calibration.json` afterwards (same hardware, same training code)."""
    here = T.hardware()
    code = cache.code_digest(*T.TRAINING_CODE, TIMING_CODE)  # a new timing method re-times
    f = _file(profile_name)
    stored = json.loads(f.read_text()) if f.is_file() else {}
    if stored.get("hardware") != here or stored.get("code") != code:
        stored = {"hardware": here, "code": code, "rates": {}}
    dev = T.pick_device(device)
    rates = {}
    for cfg, backbone_path, train in todo:
        key = cost_key(cfg, T.resolve_precision(cfg.precision, dev))
        name = json.dumps(key)
        if name not in stored["rates"]:
            stored["rates"][name] = seconds_per_step(cfg, backbone_path, train, str(dev))
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(stored, indent=1))
        rates[key] = stored["rates"][name]
    return rates


# --- what the committed run recorded: estimates on a fresh clone of the same hardware -------------------------


def run_signature(run) -> str:
    """What a plan run's cost depends on, as a digest: its config (or SBERT variant and epochs), folds, dataset and
    the training code. Equal signatures on equal hardware: the recorded seconds estimate this run's cost."""
    what = {
        "cfg": asdict(run.cfg) if run.cfg else None,
        "variant": run.variant,
        "epochs": run.epochs,
        "dataset": run.dataset,
        "code": cache.code_digest(*T.TRAINING_CODE),
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def recorded_seconds(profile_name: str, runs: list) -> dict:
    """{run name: seconds per fold} for those of `runs` whose signature the profile's results.json `run` record
    (the committed run, for the cpu profile) holds, when that run was made on this hardware."""
    f = RunPaths(profile_name).figures / "results.json"
    record = json.loads(f.read_text()).get("run", {}) if f.is_file() else {}
    if record.get("hardware") != T.hardware():
        return {}
    seen = record.get("runs", {})
    return {
        r.name: seen[r.name]["seconds"] / seen[r.name]["folds"]
        for r in runs
        if seen.get(r.name, {}).get("folds") and seen[r.name].get("signature") == run_signature(r)
    }
