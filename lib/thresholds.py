"""Decision rules on top of the 3-class probabilities, swept on OOF and applied once to validation.

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
from .folds import subset_mask
from .metrics import draw_resamples, f1pn, f1pn_resampled, fmt, softmax

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
    """F1pn, per-class precision/recall (and bootstrap band) at every grid value.

    The band resamples clusters (`groups`, e.g. sentences; None: rows), one draw shared by every
    grid value, so neighbouring values are compared on the same resamples.
    """
    grid = GRIDS[rule] if grid is None else grid
    y = np.asarray(y)
    draws = draw_resamples(groups, len(y), n_boot, seed) if n_boot else None
    rows = []
    for v in grid:
        p = RULES[rule](logits, v)
        prec, rec, _, _ = precision_recall_fscore_support(y, p, labels=list(LABELS), zero_division=0)
        row = {"param": float(v), "f1pn": f1pn(y, p)}
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


# --- chapter 03 drivers -------------------------------------------------------------------------


def apply_rules(val: pd.DataFrame, y_oof, logits_oof, logits_val, n_boot: int) -> pd.DataFrame:
    """Each rule: parameter chosen on OOF, applied once to validation; paired clustered gain over argmax."""
    from .metrics import to_labels
    from .study import paired

    before, rows = to_labels(logits_val), []
    y_val = val["label"].to_numpy()
    for rule in RULES:
        t, after = tune_then_apply(rule, y_oof, logits_oof, logits_val)
        for _, r in paired(val, after, before, n_boot, f"{rule} - argmax").iterrows():
            m = subset_mask(val, r["subset"])
            rows.append(
                {
                    "rule": rule,
                    "param": t,
                    "subset": r["subset"],
                    "f1pn_argmax": f1pn(y_val[m], before[m]),
                    "f1pn_rule": f1pn(y_val[m], after[m]),
                    "gain": r["diff"],
                    "gain_lo": r["lo"],
                    "gain_hi": r["hi"],
                    "oracle_param_on_validation": choose(y_val[m], logits_val[m], rule),
                }
            )
    return pd.DataFrame(rows)


def weight_study(study, weights) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chapter 03's runs `03/weight-<w>` (the plan's); per weight: argmax vs OOF-chosen threshold on validation
    (paired clustered CI), and the validation sweep for the figure."""
    from .metrics import to_labels
    from .study import paired

    prof, train, val = study.prof, study.train, study.val
    y_oof, y_val = train["label"].to_numpy(), val["label"].to_numpy()
    rows, sweeps = [], []
    for w in weights:
        res = study.run(f"03/weight-{w:g}")
        held = res.oof_rows(train)
        z_val = res.ensemble("validation")
        t, after = tune_then_apply("threshold", y_oof[held], res.oof[held], z_val)
        base = to_labels(z_val)
        for _, r in paired(val, after, base, prof.bootstrap, "threshold - argmax").iterrows():
            m = subset_mask(val, r["subset"])
            rows.append(
                {
                    "neutral_weight": w,
                    "subset": r["subset"],
                    "t_chosen_on_oof": t,
                    "f1pn_argmax": f1pn(y_val[m], base[m]),
                    "f1pn_threshold": f1pn(y_val[m], after[m]),
                    "gain": r["diff"],
                    "gain_lo": r["lo"],
                    "gain_hi": r["hi"],
                    "pred_neutral_share_argmax": float((base[m] == 0).mean()),
                }
            )
        sweeps.append(sweep(y_val, z_val, "threshold", groups=None).assign(neutral_weight=w, t_chosen=t))
    return pd.DataFrame(rows), pd.concat(sweeps, ignore_index=True)


def answer(applied: pd.DataFrame, weights: pd.DataFrame, chosen: dict, n_folds: int) -> str:
    """The chapter's answer as Markdown, from the two tables."""
    a = applied.set_index(["rule", "subset"])
    w = weights[weights["subset"] == "all"].set_index("neutral_weight")

    def gain(r):
        return fmt(r["gain"], r["gain_lo"], r["gain_hi"], signed=True)

    span_arg, span_thr = (
        w["f1pn_argmax"].max() - w["f1pn_argmax"].min(),
        w["f1pn_threshold"].max() - w["f1pn_threshold"].min(),
    )
    substitute = (
        "the threshold largely evens out the choice of weight: a post-hoc substitute for it"
        if span_thr < 0.5 * span_arg
        else "the threshold does not even out the choice of weight, so it is no substitute for it"
    )
    return (
        f"**How large is the gain?** Rule (a), t = {a.loc[('threshold', 'all'), 'param']:g} chosen on OOF, moves validation F1pn from "
        f"{a.loc[('threshold', 'all'), 'f1pn_argmax']:.3f} to {a.loc[('threshold', 'all'), 'f1pn_rule']:.3f}: {gain(a.loc[('threshold', 'all')])} on all rows and "
        f"{gain(a.loc[('threshold', 'unseen')])} on unseen-sentence rows (paired, sentence-clustered 95% CI). Rule (b), b = {a.loc[('neutral_bias', 'all'), 'param']:g}: "
        f"{gain(a.loc[('neutral_bias', 'all')])} on all rows, {gain(a.loc[('neutral_bias', 'unseen')])} unseen.\n\n"
        f"**Is it stable?** Chosen on OOF: t = {chosen['threshold']:g}; best on validation would have been t = "
        f"{a.loc[('threshold', 'all'), 'oracle_param_on_validation']:g} (unseen rows: {a.loc[('threshold', 'unseen'), 'oracle_param_on_validation']:g}).\n\n"
        f"**Is it a substitute for the class weight?** Retrained on {n_folds} fold(s): argmax F1pn "
        + ", ".join(f"{r.f1pn_argmax:.3f} at weight {k:g}" for k, r in w.iterrows())
        + "; the OOF-chosen threshold moves it by "
        + ", ".join(f"{gain(r)} (t = {r.t_chosen_on_oof:g})" for _, r in w.iterrows())
        + ". Neutral share of argmax predictions: "
        + ", ".join(f"{r.pred_neutral_share_argmax:.0%}" for _, r in w.iterrows())
        + f". Across weights, argmax F1pn spans {span_arg:.3f} and thresholded F1pn {span_thr:.3f}: {substitute}."
    )


# --- chapter 03 figures -------------------------------------------------------------------------


def sweep_figure(sweeps: pd.DataFrame, chosen: dict):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    names = list(dict.fromkeys(sweeps["on"]))
    for ax, rule in zip(axes, RULES):
        for name, color in zip(names, sns.color_palette(n_colors=len(names))):
            s = sweeps[(sweeps["rule"] == rule) & (sweeps["on"] == name)]
            ax.plot(s["param"], s["f1pn"], color=color, label=name)
            ax.fill_between(s["param"], s["f1pn_lo"], s["f1pn_hi"], color=color, alpha=0.15)
        ax.axvline(chosen[rule], color="black", ls="--", lw=1, label=f"chosen on OOF: {chosen[rule]:g}")
        if rule in NO_OP:
            ax.axvline(NO_OP[rule], color="grey", ls=":", lw=1, label="plain argmax")
        ax.set(
            xlabel="t" if rule == "threshold" else "b (added to the neutral logit)",
            ylabel="F1pn",
            title=f"rule: {rule}",
        )
        ax.legend(fontsize=8)
    return fig


def precision_recall_figure(sweeps: pd.DataFrame, t: float, names=("train OOF", "validation")):
    import matplotlib.pyplot as plt

    from .plots import LABEL_COLORS, LABEL_NAMES

    fig, axes = plt.subplots(1, len(names), figsize=(13, 3.8), sharey=True)
    for ax, name in zip(axes, names):
        s = sweeps[sweeps["on"] == name]
        for lab in LABELS:
            ax.plot(s["param"], s[f"precision_{lab}"], color=LABEL_COLORS[lab], label=f"precision {LABEL_NAMES[lab]}")
            ax.plot(
                s["param"], s[f"recall_{lab}"], color=LABEL_COLORS[lab], ls="--", label=f"recall {LABEL_NAMES[lab]}"
            )
        ax.axvline(t, color="black", ls="--", lw=1)
        ax.set(title=f"{name}: rule (a) threshold t", xlabel="t")
    axes[0].legend(fontsize=7, ncol=2)
    return fig


def weight_figure(weights: pd.DataFrame, wsweeps: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    groups = list(wsweeps.groupby("neutral_weight"))
    for (w, s), color in zip(groups, sns.color_palette(n_colors=len(groups))):
        axes[0].plot(s["param"], s["f1pn"], color=color, label=f"neutral weight {w:g}")
        axes[0].axvline(s["t_chosen"].iloc[0], color=color, ls="--", lw=1)
    axes[0].set(xlabel="t", ylabel="validation F1pn", title="Validation F1pn vs threshold (dashed: t chosen on OOF)")
    axes[0].legend(fontsize=8)
    wa = weights[weights["subset"] == "all"].reset_index(drop=True)
    x = np.arange(len(wa))
    axes[1].bar(x - 0.2, wa["f1pn_argmax"], 0.4, label="argmax")
    axes[1].bar(
        x + 0.2,
        wa["f1pn_threshold"],
        0.4,
        yerr=[wa["gain"] - wa["gain_lo"], wa["gain_hi"] - wa["gain"]],
        capsize=3,
        label="OOF-chosen threshold (CI of the gain)",
    )
    axes[1].set_xticks(x, [f"{w:g}" for w in wa["neutral_weight"]])
    axes[1].set(xlabel="neutral class weight", ylabel="validation F1pn", title="Argmax vs OOF-chosen threshold")
    axes[1].legend(fontsize=8, loc="lower right")
    return fig
