"""Scores exactly as the RuSentNE-23 scorer computes them, plus CIs and per-subset tables.

Every CI is a sentence-cluster bootstrap: several rows (entities) share one sentence and their
errors are correlated, so resampling rows as if independent gives intervals that are too narrow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from .config import LABELS
from .folds import SUBSETS, subset_mask

CI_METHOD = "sentence-cluster bootstrap"


def decimals(x: float, digits: int = 3) -> int:
    """`digits`, or one more where x would print as 0 but is not 0: its side of 0 can decide a verdict."""
    return digits + 1 if x != 0 and round(x, digits) == 0 else digits


def fmt(v, lo=None, hi=None, signed: bool = False) -> str:
    """The study's one way to print a number with its CI: 0.483 [0.456, 0.509] (signed: +0.021 [...])."""
    sign = "+" if signed else ""

    def one(x) -> str:
        x = float(x)
        text = f"{x:{sign}.{decimals(x)}f}"
        return text if float(text) else text.replace("-", "+" if signed else "")  # no "-0.000"

    return one(v) if lo is None else f"{one(v)} [{one(lo)}, {one(hi)}]"


def fmt_diff(v, lo, hi) -> str:
    """A paired difference with its CI and whether the CI excludes 0: "+0.021 [+0.004, +0.038] (CI excludes 0)"."""
    return f"{fmt(v, lo, hi, signed=True)} ({'CI excludes 0' if lo > 0 or hi < 0 else 'CI includes 0'})"


def _noun(n: int, word: str, plural: str | None) -> str:
    return word if n == 1 else plural or word + "s"


def count(n: int, word: str, plural: str | None = None) -> str:
    """'1 fold', '2 folds': a number with its noun, never "fold(s)" (`plural` where adding an s is wrong)."""
    return f"{n} {_noun(n, word, plural)}"


def listed(word: str, items, plural: str | None = None) -> str:
    """'fold 0', 'folds 0, 1': a noun with its items, never "folds 0" for one."""
    items = list(items)
    return f"{_noun(len(items), word, plural)} {', '.join(map(str, items))}"


def ci_note(n: int) -> str:
    """How a CI was computed, for table captions and figure notes."""
    return f"{CI_METHOD}, {n} resamples"


def f1pn(y, p, sample_weight=None) -> float:
    """Official metric: macro F1 over the positive and negative classes, computed on all rows."""
    return float(f1_score(y, p, labels=[1, -1], average="macro", zero_division=0, sample_weight=sample_weight))


def macro_f1(y, p, sample_weight=None) -> float:
    return float(f1_score(y, p, labels=list(LABELS), average="macro", zero_division=0, sample_weight=sample_weight))


def accuracy(y, p, sample_weight=None) -> float:
    return float(accuracy_score(y, p, sample_weight=sample_weight))


METRICS = {"f1pn": f1pn, "macro_f1": macro_f1, "accuracy": accuracy}


def confusion(y, p) -> pd.DataFrame:
    cm = confusion_matrix(y, p, labels=list(LABELS))
    return pd.DataFrame(cm, index=pd.Index(LABELS, name="true"), columns=pd.Index(LABELS, name="pred"))


def _checked_logits(logits) -> np.ndarray:
    """Fail loudly on missing predictions: argmax of a NaN row silently returns label 0 (negative)."""
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[1] != len(LABELS):
        raise ValueError(f"logits must be 2-D with {len(LABELS)} columns (labels {LABELS}); got shape {z.shape}")
    bad = np.isnan(z).any(1) if np.issubdtype(z.dtype, np.floating) else np.zeros(len(z), bool)
    if bad.any():
        raise ValueError(
            f"logits have NaN in {int(bad.sum())} of {len(z)} rows (first: row {int(bad.argmax())}): "
            "predictions missing for those rows (a fold that was not run?)"
        )
    return z


def to_labels(logits: np.ndarray) -> np.ndarray:
    return np.asarray(LABELS)[_checked_logits(logits).argmax(-1)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = _checked_logits(logits).astype(np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# --- bootstrap ----------------------------------------------------------------------------------


def sentence_groups(df: pd.DataFrame) -> np.ndarray:
    """Cluster id per row: rows with the same sentence text share one id."""
    return pd.factorize(df["sentence"])[0]


def draw_resamples(groups, n_rows: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`counts[r, g]`: how often cluster g is drawn in resample r; `inverse[i]`: the cluster of row i.

    Each resample draws as many clusters as there are, with replacement, and keeps all rows of a
    drawn cluster together. `groups=None` makes every row its own cluster (the plain row bootstrap,
    with the same draws as resampling row indices).
    """
    if groups is None:
        inverse = np.arange(n_rows)
    else:
        inverse = pd.factorize(pd.Series(list(groups), dtype=object))[0]
        if len(inverse) != n_rows:
            raise ValueError(f"groups has {len(inverse)} entries for {n_rows} rows")
        if (inverse < 0).any():
            raise ValueError(f"groups has {int((inverse < 0).sum())} missing values (NaN/None)")
    k = int(inverse.max()) + 1 if n_rows else 0
    idx = np.random.default_rng(seed).integers(0, k, size=(n, k))
    counts = np.bincount((idx + k * np.arange(n)[:, None]).ravel(), minlength=n * k).reshape(n, k)
    return counts, inverse


def f1pn_resampled(y, p, counts: np.ndarray, inverse=None) -> np.ndarray:
    """F1pn of every resample at once, from weighted confusion counts (equals weighted `f1pn`).

    `counts` is (n, n_clusters) (or one weight vector); `inverse` maps rows to clusters, None when
    `counts` already holds per-row weights. Per-cluster counts are summed first, so the cost is an
    (n, n_clusters) matmul however many rows a cluster has.
    """
    y, p, counts = np.asarray(y), np.asarray(p), np.atleast_2d(counts)
    inverse = np.arange(len(y)) if inverse is None else np.asarray(inverse)
    k = counts.shape[1]
    parts = []  # per cluster: TP and 2TP + FP + FN for each of positive and negative
    for c in (1, -1):
        parts.append(np.bincount(inverse, weights=(y == c) & (p == c), minlength=k))
        parts.append(np.bincount(inverse, weights=(y == c).astype(float) + (p == c), minlength=k))
    s = counts @ np.stack(parts, 1)
    f1 = [np.divide(2 * s[:, j], s[:, j + 1], out=np.zeros(len(s)), where=s[:, j + 1] > 0) for j in (0, 2)]
    return (f1[0] + f1[1]) / 2


def _resampled(metric, y, p, counts, inverse) -> np.ndarray:
    """`metric` on every resample: vectorised for F1pn, else a loop passing `sample_weight`."""
    if metric is f1pn:
        return f1pn_resampled(y, p, counts, inverse)
    return np.array([metric(y, p, sample_weight=w) for w in counts[:, inverse]])


def bootstrap_ci(
    y, p, *, groups, metric=f1pn, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile CI from resampling clusters (`groups`, e.g. sentences) with replacement.

    `groups` is required so that no caller gets the too-narrow row bootstrap by default;
    `groups=None` asks for it explicitly. A metric other than `f1pn` must accept `sample_weight`.
    """
    y, p = np.asarray(y), np.asarray(p)
    counts, inverse = draw_resamples(groups, len(y), n, seed)
    stats = _resampled(metric, y, p, counts, inverse)
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def paired_bootstrap_diff(
    y, p_a, p_b, *, groups, metric=f1pn, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """metric(a) - metric(b) on the same rows, with a CI from resampling clusters jointly.

    Both systems see the same draw in every resample: pairing removes the sampling noise they
    share, so it separates them more sharply than comparing two independent CIs.
    """
    y, p_a, p_b = np.asarray(y), np.asarray(p_a), np.asarray(p_b)
    counts, inverse = draw_resamples(groups, len(y), n, seed)
    d = _resampled(metric, y, p_a, counts, inverse) - _resampled(metric, y, p_b, counts, inverse)
    return metric(y, p_a) - metric(y, p_b), float(np.quantile(d, alpha / 2)), float(np.quantile(d, 1 - alpha / 2))


def score(y, p, n_boot: int = 1000, seed: int = 0, *, groups, ci=("f1pn",)) -> dict:
    """All metrics, a CI for each metric named in `ci` (clustered by `groups`; none when `n_boot` is 0) and the
    row count."""
    out = {name: fn(y, p) for name, fn in METRICS.items()}
    for name in ci:
        out[f"{name}_lo"], out[f"{name}_hi"] = (
            bootstrap_ci(y, p, groups=groups, metric=METRICS[name], n=n_boot, seed=seed) if n_boot else (np.nan, np.nan)
        )
    out["n"] = len(y)
    return out


def score_subsets(df: pd.DataFrame, pred, n_boot: int = 1000, **tags) -> pd.DataFrame:
    """One row per subset (all / seen-sentence / unseen-sentence) with sentence-clustered CIs; `tags` become columns."""
    rows = []
    y, pred, groups = df["label"].to_numpy(), np.asarray(pred), sentence_groups(df)
    for sub in SUBSETS:
        m = subset_mask(df, sub)
        if m.any():
            rows.append({**tags, "subset": sub, **score(y[m], pred[m], n_boot, groups=groups[m])})
    return pd.DataFrame(rows)


def paired(df: pd.DataFrame, pred_a, pred_b, n: int, name: str = "a - b", subsets=("all", "unseen")) -> pd.DataFrame:
    """F1pn(a) - F1pn(b) on the same rows, sentence-clustered paired bootstrap, per subset."""
    y, groups = df["label"].to_numpy(), sentence_groups(df)
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    rows = []
    for sub in subsets:
        m = subset_mask(df, sub)
        d, lo, hi = paired_bootstrap_diff(y[m], pred_a[m], pred_b[m], groups=groups[m], n=n)
        rows.append({"comparison": name, "subset": sub, "diff": d, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def over_trainings(values) -> dict:
    """Mean of paired per-training values with a 95% t-interval over trainings, their sd, min and max."""
    from scipy.stats import t as t_dist

    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"n": 0, "mean": np.nan, "lo": np.nan, "hi": np.nan, "sd": np.nan, "min": np.nan, "max": np.nan}
    n, mean = len(v), float(v.mean()) if len(v) else float("nan")
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(t_dist.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "sd": sd, "min": v.min(), "max": v.max()}
