"""Decision rules on top of the 3-class probabilities, chosen on out-of-fold rows and applied once to validation.

Rule (a) `threshold`: neutral unless max(P(pos), P(neg)) >= t, else the larger of the two.
Rule (b) `neutral_bias`: add b to the neutral logit before argmax (multiplies the neutral odds by e^b).
A rule's parameter is chosen on out-of-fold train predictions only, then applied unchanged to
validation: choosing it on validation would report a tuned, optimistic number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from .config import LABEL2ID, LABELS
from .metrics import draw_resamples, f1pn, f1pn_resampled, softmax, to_labels

NEG, NEU, POS = LABEL2ID[-1], LABEL2ID[0], LABEL2ID[1]


def threshold_rule(logits: np.ndarray, t: float) -> np.ndarray:
    p = softmax(logits)
    sentiment = np.where(p[:, POS] > p[:, NEG], 1, -1)
    return np.where(np.maximum(p[:, POS], p[:, NEG]) >= t, sentiment, 0)


def bias_rule(logits: np.ndarray, b: float) -> np.ndarray:
    z = np.array(logits, dtype=np.float64, copy=True)
    z[:, NEU] += b
    return np.asarray(LABELS)[z.argmax(1)]


RULES = {"threshold": threshold_rule, "neutral_bias": bias_rule}
GRIDS = {"threshold": np.round(np.linspace(0.0, 1.0, 101), 3), "neutral_bias": np.round(np.linspace(-6.0, 6.0, 121), 3)}
NO_OP = {"neutral_bias": 0.0}  # b=0 is plain argmax; rule (a) has no no-op value


def sweep(y, logits, rule: str, grid=None, n_boot: int = 0, seed: int = 0, *, groups) -> pd.DataFrame:
    """F1pn, per-class precision/recall, predicted counts per label and in all polar (and bootstrap band) at
    every grid value. A precision with no row predicted in its class (or a recall with none true) is undefined:
    NaN, never 0.

    The band resamples clusters (`groups`, e.g. sentences; None: rows), one draw shared by every
    grid value, so neighbouring values are compared on the same resamples.
    """
    grid = GRIDS[rule] if grid is None else grid
    y = np.asarray(y)
    draws = draw_resamples(groups, len(y), n_boot, seed) if n_boot else None
    rows = []
    for v in grid:
        p = RULES[rule](logits, v)
        prec, rec, _, _ = precision_recall_fscore_support(y, p, labels=list(LABELS), zero_division=np.nan)
        row = {"param": float(v), "f1pn": f1pn(y, p), "n_polar": int(np.isin(p, (-1, 1)).sum())}
        row.update({f"n_pred_{lab}": int((p == lab).sum()) for lab in LABELS})
        row.update({f"precision_{lab}": pr for lab, pr in zip(LABELS, prec)})
        row.update({f"recall_{lab}": r for lab, r in zip(LABELS, rec)})
        if draws is not None:
            boot = f1pn_resampled(y, p, *draws)
            row["f1pn_lo"], row["f1pn_hi"] = np.quantile(boot, [0.025, 0.975])
        rows.append(row)
    return pd.DataFrame(rows)


def choose(y_oof, logits_oof, rule: str, grid=None) -> float:
    """The grid value with the best OOF F1pn (the middle of a tied plateau, so it is not an edge)."""
    s = sweep(y_oof, logits_oof, rule, grid, groups=None)  # no bands needed, so no clusters
    best = s.index[np.isclose(s["f1pn"], s["f1pn"].max())]
    return float(s.loc[best[len(best) // 2], "param"])


def tune_then_apply(rule: str, y_oof, logits_oof, logits_eval, grid=None) -> tuple[float, np.ndarray]:
    """Choose the parameter on OOF, then predict `logits_eval` with it. Evaluation labels never enter."""
    param = choose(y_oof, logits_oof, rule, grid)
    return param, RULES[rule](logits_eval, param)


# --- the study's decision rule for one run (chapter 02's headline, lib.predict) ---------------------------


def decision_rule(result, train: pd.DataFrame, rule: str = "threshold"):
    """(rule name, parameter) chosen on the run's out-of-fold rows."""
    if rule == "argmax":
        return "argmax", None
    held = result.oof_rows(train)
    return rule, choose(train["label"].to_numpy()[held], result.oof[held], rule)


def apply_rule(logits: np.ndarray, rule: str, param) -> np.ndarray:
    return to_labels(logits) if rule == "argmax" else RULES[rule](logits, param)
