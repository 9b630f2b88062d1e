"""The recipe search (chapter 02's appendix, scripts/recipe_table.py): every cached HAMAM fold run of the main
backbone scored on its clean out-of-fold rows, whatever code version trained it, with what it changes from the
profile's recipe. Validation is never read here: the recipe is chosen on these numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ... import rules
from ...config import RunPaths, TrainConfig
from ...metrics import bootstrap_ci, f1pn, fmt, sentence_groups, to_labels

SKIP = ("backbone", "precision")  # precision: auto resolves per machine; the same model up to rounding


def table(prof, train: pd.DataFrame, runs_dir=None, mode: str = "hamam", n_boot: int = 1000) -> pd.DataFrame:
    """One row per fold run: OOF F1pn under argmax and under the neutral threshold chosen on the same OOF rows
    (optimistic by that choice; it gives each neutral weight its own rule), sentence-clustered CIs, the cost."""
    y, groups = train["label"].to_numpy(), sentence_groups(train)
    models = Path(runs_dir) / prof.name / "models" if runs_dir else RunPaths(prof.name).models
    base = prof.config_for(prof.backbones[0], mode=mode)
    rows = []
    for done in sorted(models.glob("*/fold*/done.json"), key=lambda f: f.stat().st_mtime):
        meta = json.loads(done.read_text())
        cfg = meta.get("config", {})
        if cfg.get("mode") != mode or cfg.get("backbone") != base.backbone or cfg.get("pooling") != "entity":
            continue
        held = train["fold"].to_numpy() == meta["fold"]
        z = np.load(done.parent / "logits_oof.npy")
        if len(z) != held.sum():
            continue  # another version of the data
        t = rules.choose(y[held], z, "threshold")
        p_arg, p_t = to_labels(z), rules.threshold_rule(z, t)
        fields = [f for f in TrainConfig.__dataclass_fields__ if f not in SKIP]
        value = {f: cfg.get(f, TrainConfig.__dataclass_fields__[f].default) for f in fields}  # older configs
        diff = {f: v for f, v in value.items() if v != getattr(base, f)}
        rows.append(
            {
                "candidate": ", ".join(f"{f}={v}" for f, v in diff.items()) or "(the profile's recipe)",
                "fold": meta["fold"],
                "oof_f1pn_argmax": f1pn(y[held], p_arg),
                "argmax_ci": bootstrap_ci(y[held], p_arg, groups=groups[held], n=n_boot),
                "threshold": t,
                "oof_f1pn_threshold": f1pn(y[held], p_t),
                "threshold_ci": bootstrap_ci(y[held], p_t, groups=groups[held], n=n_boot),
                "best_step": meta.get("best_step"),
                "steps": meta.get("steps"),
                "minutes": meta.get("seconds", 0) / 60,
                "hardware": meta.get("hardware", "not recorded"),
            }
        )
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).drop_duplicates(["candidate", "fold"], keep="last")  # the newest of equal runs
    return df.sort_values("oof_f1pn_threshold", ascending=False)


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
    return "\n".join(lines) + "\n\nHardware: " + "; ".join(sorted(set(df["hardware"]))) + "\n"
