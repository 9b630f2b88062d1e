"""Compute plan: measured seconds per fold and per epoch for the cpu profile's runs (read from the
fold directories chapter 02 wrote), and an ESTIMATE of GPU time for the paper profile.

    python scripts/compute_plan.py [--profile cpu] [--tflops 300] [--gpus 1 4 8]

The estimate is arithmetic, not a measurement: training FLOPs = 6 x non-embedding parameters x
tokens (forward 2, backward 4 per parameter and token), tokens = train rows per fold x measured
mean tokens per row (e5-small's tokenizer, a proxy for the others) x passes (2 for hamam) x
epochs, divided by a sustained rate (`--tflops`, default 50 TFLOP/s: about 5% of an H100's dense
bf16 peak, since batches of 16-32 rows of ~40 tokens leave a GPU mostly idle; measure your own with
one fold and rescale). For scale, the script also prints the rate the cpu profile's e5-small runs
reached on this machine by the same arithmetic. Prediction and evaluation add roughly a third (3 forward
passes' worth over held-out, validation and final rows per fold are small next to training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# Non-embedding parameters from the models' published configs (layers x (4 h^2 + 2 h ffn)).
PAPER_BACKBONES = {
    "DeepPavlov/rubert-base-cased": 12 * (4 * 768**2 + 2 * 768 * 3072),
    "xlm-roberta-large": 24 * (4 * 1024**2 + 2 * 1024 * 4096),
    "google/rembert": 32 * (4 * 1152**2 + 2 * 1152 * 4608),
}


def measured(profile: str, data: dict) -> list[dict]:
    """One row per trained fold of the profile that the current code and data would reuse (folds
    left by older code sit under other keys and are skipped): wall seconds, per epoch (as far as it
    ran), examples/s."""
    from lib.config import RunPaths, TrainConfig
    from lib.training import fold_key

    rows, paths = [], RunPaths(profile)
    for done in sorted(paths.models.glob("*/fold*/done.json")):
        d = json.loads(done.read_text())
        try:
            current = fold_key(TrainConfig(**d["config"]), data, d["backbone_path"]) == d["key"]
        except (TypeError, KeyError, ValueError):  # written by older code (other fields or rules)
            current = False
        if not current:
            continue
        cfg, epochs_run = d["config"], (d["history"][-1]["epoch"] if d["history"] else d["config"]["epochs"])
        rows.append(
            {
                "backbone": Path(cfg["backbone"]).name,
                "mode": cfg["mode"],
                "epochs": cfg["epochs"],
                "fold": d["fold"],
                "precision": d.get("precision", "fp32"),
                "seconds": d["seconds"],
                "seconds_per_epoch": d["seconds"] / epochs_run,
                "examples_per_s": d["train_examples"] / d["seconds"],
            }
        )
    return rows


def main() -> None:
    import pandas as pd
    from transformers import AutoTokenizer

    from lib.chapters import study
    from lib.metrics import count

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tflops", type=float, default=50.0)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()
    S = study.setup(args.profile)
    m = pd.DataFrame(measured(args.profile, S.data))
    if len(m):
        print(f"Measured ({study.hardware()}): seconds per fold run, and per epoch, mean over folds")
        print(
            m.groupby(["backbone", "mode", "epochs", "precision"])[["seconds", "seconds_per_epoch", "examples_per_s"]]
            .agg(["mean", "count"])
            .round(1)
            .to_string()
        )
    from lib.config import get_profile

    paper = get_profile("paper")
    tok = AutoTokenizer.from_pretrained(S.backbone_dir("e5-small"))
    mean_tokens = float(np.mean([len(x) for x in tok(list(S.train["sentence"]))["input_ids"]]))
    rows_per_fold = len(S.train) * (1 - 1 / paper.n_folds) * (1 - paper.train.inner_val)
    print(
        f"\nESTIMATE for the paper profile at {args.tflops:.0f} TFLOP/s sustained ({mean_tokens:.1f} tokens per row, "
        f"{rows_per_fold:.0f} training rows per fold):"
    )
    plan, total = [], 0.0
    for b, params in PAPER_BACKBONES.items():
        cfg = paper.config_for(b)
        modes = ("unmasked", "masked", "hamam") if b == paper.backbones[0] else ("hamam",)
        for mode in modes:
            passes = 2 if mode == "hamam" else 1
            flops = 6 * params * rows_per_fold * mean_tokens * passes * cfg.epochs
            minutes = flops / (args.tflops * 1e12) / 60 * 4 / 3  # + evaluation and prediction
            plan.append(
                {
                    "backbone": b,
                    "mode": mode,
                    "epochs": cfg.epochs,
                    "GPU-minutes per fold": round(minutes, 1),
                    "GPU-minutes, 5 folds": round(5 * minutes, 1),
                }
            )
            total += 5 * minutes
    print(pd.DataFrame(plan).to_string(index=False))
    print(
        "wall time of chapter 02's paper runs: "
        + ", ".join(f"{count(g, 'GPU')} ~{total / g:.0f} min" for g in args.gpus)
        + " (fold jobs are independent: one Ray task each with `--executor ray`, or python -m lib.train per job)"
    )
    e5 = m[(m["backbone"].str.startswith("e5-small"))] if len(m) else m
    if len(e5):
        e5_params = 12 * (4 * 384**2 + 2 * 384 * 1536)
        rate = [
            6 * e5_params * mean_tokens * (2 if r.mode == "hamam" else 1) * r.examples_per_s / 1e12
            for r in e5.itertuples()
        ]
        print(
            f"for scale: the cpu profile's e5-small runs reached {np.mean(rate):.2f} TFLOP/s by this arithmetic "
            "(all layers counted, frozen or not)"
        )


if __name__ == "__main__":
    main()
