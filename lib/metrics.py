"""Scores exactly as the RuSentNE-23 scorer computes them, plus CIs and per-subset tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from .folds import SUBSETS, subset_mask
from .model import LABELS


def f1pn(y, p) -> float:
    """Official metric: macro F1 over the positive and negative classes, computed on all rows."""
    return float(f1_score(y, p, labels=[1, -1], average="macro", zero_division=0))


def macro_f1(y, p) -> float:
    return float(f1_score(y, p, labels=list(LABELS), average="macro", zero_division=0))


def accuracy(y, p) -> float:
    return float(accuracy_score(y, p))


METRICS = {"f1pn": f1pn, "macro_f1": macro_f1, "accuracy": accuracy}


def confusion(y, p) -> pd.DataFrame:
    cm = confusion_matrix(y, p, labels=list(LABELS))
    return pd.DataFrame(cm, index=pd.Index(LABELS, name="true"), columns=pd.Index(LABELS, name="pred"))


def to_labels(logits: np.ndarray) -> np.ndarray:
    return np.asarray(LABELS)[np.asarray(logits).argmax(-1)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def f1pn_resampled(y, p, idx: np.ndarray) -> np.ndarray:
    """F1pn of every resample `idx[r]` at once (vectorised confusion counts; equals `f1pn`)."""
    y, p = np.asarray(y)[idx], np.asarray(p)[idx]
    f1 = []
    for c in (1, -1):
        tp = ((y == c) & (p == c)).sum(-1)
        denom = (y == c).sum(-1) + (p == c).sum(-1)  # 2TP + FP + FN
        f1.append(np.divide(2 * tp, denom, out=np.zeros(len(idx)), where=denom > 0))
    return (f1[0] + f1[1]) / 2


def bootstrap_ci(y, p, metric=f1pn, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile CI from resampling rows with replacement."""
    y, p = np.asarray(y), np.asarray(p)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    stats = f1pn_resampled(y, p, idx) if metric is f1pn else np.array([metric(y[i], p[i]) for i in idx])
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def score(y, p, n_boot: int = 1000, seed: int = 0) -> dict:
    out = {name: fn(y, p) for name, fn in METRICS.items()}
    out["f1pn_lo"], out["f1pn_hi"] = bootstrap_ci(y, p, f1pn, n_boot, seed) if n_boot else (np.nan, np.nan)
    out["n"] = len(y)
    return out


def score_subsets(df: pd.DataFrame, pred, n_boot: int = 1000, **tags) -> pd.DataFrame:
    """One row per subset (all / seen-sentence / unseen-sentence) with CIs; `tags` become columns."""
    rows = []
    y, pred = df["label"].to_numpy(), np.asarray(pred)
    for sub in SUBSETS:
        m = subset_mask(df, sub)
        if m.any():
            rows.append({**tags, "subset": sub, **score(y[m], pred[m], n_boot)})
    return pd.DataFrame(rows)


def paired_bootstrap_diff(y, p_a, p_b, metric=f1pn, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """metric(a) - metric(b) on the same rows, with a CI from resampling rows jointly.

    Pairing removes the row-sampling noise both systems share, so it separates them more
    sharply than comparing two independent CIs.
    """
    y, p_a, p_b = np.asarray(y), np.asarray(p_a), np.asarray(p_b)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    if metric is f1pn:
        d = f1pn_resampled(y, p_a, idx) - f1pn_resampled(y, p_b, idx)
    else:
        d = np.array([metric(y[i], p_a[i]) - metric(y[i], p_b[i]) for i in idx])
    return metric(y, p_a) - metric(y, p_b), float(np.quantile(d, alpha / 2)), float(np.quantile(d, 1 - alpha / 2))
