"""The headline's ensemble: every fold model of every seed of one recipe as one result, and the decision rule
it is scored under, chosen by how each candidate transfers from out-of-fold (OOF) rows to an averaged ensemble
(validation never enters). Chapter 02 reports it; `python -m lib.predict --run headline` applies it to new text.

An averaged ensemble is less sharp than any one model: a neutral threshold chosen on single-model OOF logits calls
fewer rows polar once logits are averaged. Each candidate is fitted on the OOF rows of all folds but one and applied
to the held-out fold's seed-averaged logits; the best one is refitted on every OOF row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import rules
from .metrics import f1pn, softmax, to_labels
from .training import KFoldResult

CANDIDATES = ("single-model threshold", "seed-average threshold", "neutral bias", "matched polar rate", "argmax")


@dataclass
class Pooled(KFoldResult):
    """Several runs' fold models as one result: a fold index names several models here, so one fold's ensemble
    and one fold's checkpoint are refused (ask the run itself)."""

    def ensemble(self, split: str, folds=None) -> np.ndarray:
        if folds is not None:
            raise ValueError("a pooled result holds several models per fold: take one fold from one of its runs")
        return super().ensemble(split)

    def checkpoint(self, fold: int):
        raise ValueError("a pooled result holds several models per fold: take the checkpoint from one of its runs")


def pooled(results: list) -> Pooled:
    """One result standing for every fold model of every run in `results` (seeds of one mode, or the two halves
    of a late fusion): validation/final logits of all models (their `ensemble` is the all-model mean), OOF logits
    averaged over the runs (each OOF row: one model per run) on the folds every run covers."""
    with np.errstate(invalid="ignore"):
        oof = np.stack([r.oof for r in results]).mean(0)
    logits = {s: np.concatenate([r.logits[s] for r in results]) for s in results[0].logits}
    runs = [x for r in results for x in r.runs]
    folds = sorted(set.intersection(*(set(r.folds) for r in results)))
    return Pooled(results[0].cfg, folds, oof, logits, runs, results[0].root)


def average(results: list, split: str) -> np.ndarray:
    """Mean logits of every fold model of every run in `results` (equal weight per model)."""
    return np.concatenate([r.logits[split] for r in results]).mean(0)


def oof_by_seed(results: list, train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, n_rows, 3) OOF logits, one model per seed for each row, and the rows every seed covers."""
    z = np.stack([r.oof for r in results])
    return z, ~np.isnan(z).any(axis=(0, 2))


def _polar_share(labels) -> float:
    return float(np.isin(labels, (-1, 1)).mean())


def _matched_threshold(logits: np.ndarray, share: float) -> float:
    """The threshold at which `share` of these rows are called polar (no labels used)."""
    p = softmax(logits)
    polar = np.maximum(p[:, rules.POS], p[:, rules.NEG])
    return float(np.quantile(polar, 1 - share)) if 0 < share < 1 else (0.0 if share >= 1 else 1.0 + 1e-9)


def fit_rule(candidate: str, y: np.ndarray, single: np.ndarray, averaged: np.ndarray):
    """Fit `candidate` on OOF rows: `single` (seeds, rows, 3) single-model logits, `averaged` their mean.
    Returns a function (logits of an averaged ensemble) -> labels, with `.param`."""
    pooled_y, pooled = np.tile(y, len(single)), single.reshape(-1, single.shape[-1])
    if candidate == "argmax":
        decide, param = to_labels, None
    elif candidate == "single-model threshold":
        param = rules.choose(pooled_y, pooled, "threshold")
        decide = lambda z: rules.threshold_rule(z, param)  # noqa: E731
    elif candidate == "seed-average threshold":
        param = rules.choose(y, averaged, "threshold")
        decide = lambda z: rules.threshold_rule(z, param)  # noqa: E731
    elif candidate == "neutral bias":  # adds to the neutral logit: commutes with averaging logits
        param = rules.choose(pooled_y, pooled, "neutral_bias")
        decide = lambda z: rules.bias_rule(z, param)  # noqa: E731
    elif candidate == "matched polar rate":  # the share of rows the single-model rule calls polar on OOF
        t = rules.choose(pooled_y, pooled, "threshold")
        param = _polar_share(rules.threshold_rule(pooled, t))
        decide = lambda z: rules.threshold_rule(z, _matched_threshold(z, param))  # noqa: E731
    else:
        raise ValueError(f"unknown rule candidate {candidate!r}; one of {CANDIDATES}")
    decide.param = param
    return decide


def transfer_table(results: list, train: pd.DataFrame) -> pd.DataFrame:
    """Each candidate rule, fitted on the OOF rows of all folds but one and applied to the held-out fold's
    seed-averaged logits (the nearest thing to an averaged ensemble that OOF rows offer): pooled F1pn over the
    held-out folds, and the per-fold spread. Validation never enters."""
    single, covered = oof_by_seed(results, train)
    y, fold = train["label"].to_numpy(), train["fold"].to_numpy()
    rows = []
    for cand in CANDIDATES:
        pred = np.zeros(len(y), dtype=int)
        per_fold = []
        for k in sorted(set(fold[covered])):
            fit, out = covered & (fold != k), covered & (fold == k)
            decide = fit_rule(cand, y[fit], single[:, fit], single[:, fit].mean(0))
            pred[out] = decide(single[:, out].mean(0))
            per_fold.append(f1pn(y[out], pred[out]))
        rows.append(
            {
                "rule": cand,
                "oof_f1pn": f1pn(y[covered], pred[covered]),
                "fold_min": min(per_fold),
                "fold_max": max(per_fold),
            }
        )
    return pd.DataFrame(rows)


def headline_rule(results: list, train: pd.DataFrame, table: pd.DataFrame | None = None):
    """The candidate with the best leave-one-fold-out OOF F1pn (ties: the first in CANDIDATES order), refitted
    on every OOF row. Returns (decide, table); decide has `.rule` and `.param`."""
    table = transfer_table(results, train) if table is None else table
    best = table.loc[table["oof_f1pn"].idxmax(), "rule"]
    single, covered = oof_by_seed(results, train)
    y = train["label"].to_numpy()[covered]
    decide = fit_rule(best, y, single[:, covered], single[:, covered].mean(0))
    decide.rule = best
    return decide, table
