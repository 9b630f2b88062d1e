"""The recipe search table: every cached HAMAM fold run of a profile scored on its clean out-of-fold rows.

    python scripts/recipe_table.py [--profile cpu] [--runs-dir DIR] [--mode hamam] [--out figures/recipe_search.md]

Reads fold directories (done.json, logits_oof.npy) under DIR/<profile>/models (default: the study's runs
directory, HAMAM_RUNS_DIR), whatever code version trained them, so exploratory runs count; each row says which
settings differ from the profile's recipe. Scores: OOF F1pn under argmax and under the neutral threshold chosen
on those same OOF rows (optimistic by the choice; it is how each neutral weight is given its own rule), with
sentence-clustered 95% CIs, and the cost (seconds, steps, hardware). Validation is never read: the recipe is
chosen on these numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import thresholds as th  # noqa: E402
from lib.config import RunPaths, TrainConfig, get_profile  # noqa: E402
from lib.folds import load_prepared  # noqa: E402
from lib.metrics import bootstrap_ci, f1pn, fmt, sentence_groups, to_labels  # noqa: E402

KEY_FIELDS = ("freeze_layers", "epochs", "lr", "neutral_weight", "inner_val", "loss", "mode", "batch_size", "seed")


def table(profile: str, runs_dir: str | None, mode: str, n_boot: int = 1000) -> pd.DataFrame:
    prof = get_profile(profile)
    train = load_prepared(prof)["train"]
    y, groups = train["label"].to_numpy(), sentence_groups(train)
    models = Path(runs_dir) / profile / "models" if runs_dir else RunPaths(profile).models
    base = prof.config_for(prof.backbones[0], mode=mode)
    rows = []
    for done in sorted(models.glob("*/fold*/done.json")):
        meta = json.loads(done.read_text())
        cfg = meta.get("config", {})
        if cfg.get("mode") != mode or cfg.get("backbone") != base.backbone or cfg.get("pooling") != "entity":
            continue
        k = meta["fold"]
        held = train["fold"].to_numpy() == k
        z = np.load(done.parent / "logits_oof.npy")
        if len(z) != held.sum():
            continue  # another data version
        p_arg = to_labels(z)
        t = th.choose(y[held], z, "threshold")
        p_t = th.threshold_rule(z, t)
        g = groups[held]
        value = {f: cfg.get(f, TrainConfig.__dataclass_fields__[f].default) for f in KEY_FIELDS}  # older configs
        diff = {f: v for f, v in value.items() if v != getattr(base, f)}
        rows.append(
            {
                "candidate": ", ".join(f"{f}={v}" for f, v in diff.items()) or "(the profile's recipe)",
                "fold": k,
                "oof_f1pn_argmax": f1pn(y[held], p_arg),
                "argmax_ci": bootstrap_ci(y[held], p_arg, groups=g, n=n_boot),
                "threshold": t,
                "oof_f1pn_threshold": f1pn(y[held], p_t),
                "threshold_ci": bootstrap_ci(y[held], p_t, groups=g, n=n_boot),
                "best_step": meta.get("best_step"),
                "steps": meta.get("steps"),
                "minutes": meta.get("seconds", 0) / 60,
                "hardware": meta.get("hardware", "not recorded"),
                "dir": done.parent.parent.name,
            }
        )
    return pd.DataFrame(rows).sort_values("oof_f1pn_threshold", ascending=False) if rows else pd.DataFrame()


def markdown(df: pd.DataFrame) -> str:
    lines = [
        "| candidate (differs from the profile's recipe) | fold | OOF F1pn, argmax | OOF F1pn, OOF threshold (t) "
        "| best step / steps | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        lines.append(
            f"| {r.candidate} | {r.fold} | {fmt(r.oof_f1pn_argmax, *r.argmax_ci)} | "
            f"{fmt(r.oof_f1pn_threshold, *r.threshold_ci)} ({r.threshold:g}) | {r.best_step} / {r.steps} | "
            f"{r.minutes:.0f} |"
        )
    hw = sorted(set(df["hardware"])) if len(df) else []
    return "\n".join(lines) + "\n\nHardware: " + "; ".join(hw) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--runs-dir", default=None, help="a runs directory other than the study's (e.g. exploratory runs)")
    ap.add_argument("--mode", default="hamam")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    df = table(args.profile, args.runs_dir, args.mode, args.bootstrap)
    if df.empty:
        print("no cached fold runs found")
        return 1
    text = markdown(df)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
