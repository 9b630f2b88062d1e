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
from .metrics import draw_resamples, f1pn, f1pn_resampled, fmt, softmax, to_labels

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
    every grid value.

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


# --- chapter 03 drivers -------------------------------------------------------------------------


def apply_rules(val: pd.DataFrame, y_oof, logits_oof, logits_val, n_boot: int) -> pd.DataFrame:
    """Each rule: parameter chosen on OOF, applied once to validation; paired clustered gain over argmax."""
    from .metrics import paired, to_labels

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
    (each score with its sentence-clustered CI, and their paired clustered difference), the run's label and config
    (mode, epochs, folds), and the validation sweep for the figure."""
    from . import plan
    from .metrics import bootstrap_ci, paired, sentence_groups, to_labels

    prof, train, val = study.prof, study.train, study.val
    y_oof, y_val, groups = train["label"].to_numpy(), val["label"].to_numpy(), sentence_groups(val)
    rows, sweeps = [], []
    for w in weights:
        name = f"03/weight-{w:g}"
        run = plan.get(prof, name)
        res = study.run(name)
        held = res.oof_rows(train)
        z_val = res.ensemble("validation")
        t, after = tune_then_apply("threshold", y_oof[held], res.oof[held], z_val)
        base = to_labels(z_val)
        for _, r in paired(val, after, base, prof.bootstrap, "threshold - argmax").iterrows():
            m = subset_mask(val, r["subset"])
            ci = {
                k: bootstrap_ci(y_val[m], p[m], groups=groups[m], n=prof.bootstrap)
                for k, p in (("a", base), ("t", after))
            }
            rows.append(
                {
                    "neutral_weight": w,
                    "run": name,
                    "label": run.label,
                    "backbone": run.cfg.backbone,
                    "mode": run.cfg.mode,
                    "epochs": run.cfg.epochs,
                    "folds": ",".join(map(str, run.folds)),
                    "subset": r["subset"],
                    "t_chosen_on_oof": t,
                    "f1pn_argmax": f1pn(y_val[m], base[m]),
                    "f1pn_argmax_lo": ci["a"][0],
                    "f1pn_argmax_hi": ci["a"][1],
                    "f1pn_threshold": f1pn(y_val[m], after[m]),
                    "f1pn_threshold_lo": ci["t"][0],
                    "f1pn_threshold_hi": ci["t"][1],
                    "gain": r["diff"],
                    "gain_lo": r["lo"],
                    "gain_hi": r["hi"],
                    "pred_neutral_share_argmax": float((base[m] == 0).mean()),
                }
            )
        sweeps.append(sweep(y_val, z_val, "threshold", groups=None).assign(neutral_weight=w, t_chosen=t))
    return pd.DataFrame(rows), pd.concat(sweeps, ignore_index=True)


def runs_note(weights: pd.DataFrame) -> str:
    """What the weight runs are, read from their config: names, labels, backbone, mode, epochs, folds."""
    w = weights.drop_duplicates("run")
    one = lambda col: ", ".join(map(str, dict.fromkeys(w[col])))  # noqa: E731
    return (
        f"runs {', '.join(w['run'])} ({', '.join(repr(x) for x in w['label'])}): {one('backbone')}, "
        f"mode {one('mode')}, {one('epochs')} epoch(s), fold(s) {one('folds')}"
    )


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
    t_all, t_unseen = a.loc[("threshold", "all")], a.loc[("threshold", "unseen")]
    b_all, b_unseen = a.loc[("neutral_bias", "all")], a.loc[("neutral_bias", "unseen")]
    return (
        f"**How large is the gain?** Rule (a), t = {t_all['param']:g} chosen on OOF, moves validation F1pn from "
        f"{t_all['f1pn_argmax']:.3f} to {t_all['f1pn_rule']:.3f}: {gain(t_all)} on all rows and "
        f"{gain(t_unseen)} on unseen-sentence rows (paired, sentence-clustered 95% CI). "
        f"Rule (b), b = {b_all['param']:g}: {gain(b_all)} on all rows, {gain(b_unseen)} unseen.\n\n"
        f"**Is it stable?** Chosen on OOF: t = {chosen['threshold']:g}; best on validation would have been t = "
        f"{t_all['oracle_param_on_validation']:g} (unseen rows: {t_unseen['oracle_param_on_validation']:g}).\n\n"
        f"**Is it a substitute for the class weight?** Retrained on {n_folds} fold(s): argmax F1pn "
        + ", ".join(f"{r.f1pn_argmax:.3f} at weight {k:g}" for k, r in w.iterrows())
        + "; the OOF-chosen threshold moves it by "
        + ", ".join(f"{gain(r)} (t = {r.t_chosen_on_oof:g})" for _, r in w.iterrows())
        + ". Neutral share of argmax predictions: "
        + ", ".join(f"{r.pred_neutral_share_argmax:.0%}" for _, r in w.iterrows())
        + f". Across weights, argmax F1pn spans {span_arg:.3f} and thresholded F1pn {span_thr:.3f}: {substitute}."
    )


# --- chapter 03 figures -------------------------------------------------------------------------

MIN_POLAR = 20  # precision/recall curves stop where fewer rows than this are predicted polar


def sweep_figure(sweeps: pd.DataFrame, chosen: dict):
    """F1pn along each rule's parameter on train OOF, validation and unseen-sentence validation rows, with the
    sentence-clustered 95% band; the OOF-chosen value dashed. One legend, below the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .plots import split_color

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    names = list(dict.fromkeys(sweeps["on"]))
    xlabels = {
        "threshold": "threshold t on max(P(positive), P(negative))",
        "neutral_bias": "neutral bias b (added to the neutral logit)",
    }
    for ax, rule in zip(axes, RULES):
        for name in names:
            s = sweeps[(sweeps["rule"] == rule) & (sweeps["on"] == name)]
            ax.plot(s["param"], s["f1pn"], color=split_color(name))
            if "f1pn_lo" in s:
                ax.fill_between(s["param"], s["f1pn_lo"], s["f1pn_hi"], color=split_color(name), alpha=0.15, lw=0)
        ax.axvline(chosen[rule], color="black", ls="--", lw=1)
        if rule in NO_OP:
            ax.axvline(NO_OP[rule], color="grey", ls=":", lw=1)
        title = "rule (a): threshold t" if rule == "threshold" else "rule (b): neutral bias b"
        ax.set(xlabel=xlabels[rule], ylabel="F1pn", title=f"{title}; chosen on OOF: {chosen[rule]:g}")
    handles = [Line2D([], [], color=split_color(n), label=n) for n in names]
    handles += [
        Patch(color="grey", alpha=0.3, label="95% CI (sentence-cluster bootstrap)"),
        Line2D([], [], color="black", ls="--", lw=1, label="value chosen on train OOF"),
        Line2D([], [], color="grey", ls=":", lw=1, label="b = 0: plain argmax"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return fig


def polar_cut(s: pd.DataFrame, min_polar: int = MIN_POLAR) -> float:
    """The smallest grid value from which fewer than `min_polar` rows are predicted polar (inf: never)."""
    few = s.loc[s["n_polar"] < min_polar, "param"]
    return float(few.min()) if len(few) else float("inf")


def precision_recall_figure(sweeps: pd.DataFrame, t: float, names=("train OOF", "validation"), min_polar=MIN_POLAR):
    """Per class precision (solid) and recall (dashed) along rule (a)'s threshold t, one panel per split. Where
    fewer than `min_polar` rows are predicted polar, a precision is a ratio of a handful of rows: the curves stop
    there and the cut is shaded."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .plots import LABEL_COLORS, LABEL_NAMES

    fig, axes = plt.subplots(1, len(names), figsize=(13, 4.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        s = sweeps[sweeps["on"] == name].sort_values("param")
        cut = polar_cut(s, min_polar)
        kept = s[s["param"] < cut]
        for lab in LABELS:
            ax.plot(kept["param"], kept[f"precision_{lab}"], color=LABEL_COLORS[lab])
            ax.plot(kept["param"], kept[f"recall_{lab}"], color=LABEL_COLORS[lab], ls="--")
        if np.isfinite(cut):
            ax.axvspan(cut, s["param"].max(), color="grey", alpha=0.2, lw=0)
            ax.annotate(f"t ≥ {cut:g}: cut", (cut, 0.5), xytext=(4, 0), textcoords="offset points", fontsize=9)
        ax.axvline(t, color="black", ls="--", lw=1)
        ax.set(title=f"{name} rows: rule (a)", xlabel="threshold t on max(P(positive), P(negative))")
        ax.set_xlim(s["param"].min(), s["param"].max())
    np.atleast_1d(axes)[0].set_ylabel("precision or recall of the class")
    handles = [Line2D([], [], color=LABEL_COLORS[lab], label=LABEL_NAMES[lab]) for lab in LABELS]
    handles += [
        Line2D([], [], color="black", label="precision (solid)"),
        Line2D([], [], color="black", ls="--", label="recall (dashed)"),
        Line2D([], [], color="black", ls="--", lw=1, label=f"t = {t:g}, chosen on train OOF"),
        Patch(color="grey", alpha=0.4, label=f"fewer than {min_polar} rows predicted polar: not drawn"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4)
    return fig


def weight_figure(weights: pd.DataFrame, wsweeps: pd.DataFrame):
    """Left: validation F1pn along t for each neutral weight (t chosen on OOF dashed); middle: argmax and
    thresholded F1pn with their 95% CIs; right: the threshold's paired gain with its 95% CI."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    from .plots import RULE_COLORS

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    groups = list(wsweeps.groupby("neutral_weight"))
    colors = dict(zip([w for w, _ in groups], sns.color_palette("crest", n_colors=len(groups))))
    for w, s in groups:
        axes[0].plot(s["param"], s["f1pn"], color=colors[w])
        axes[0].axvline(s["t_chosen"].iloc[0], color=colors[w], ls="--", lw=1)
    axes[0].set(xlabel="threshold t", ylabel="F1pn (validation)", title="F1pn along t (dashed: t chosen on OOF)")
    wa = weights[weights["subset"] == "all"].reset_index(drop=True)
    x = np.arange(len(wa))
    for dx, (col, rule, text) in zip(
        (-0.12, 0.12), (("f1pn_argmax", "argmax", "argmax"), ("f1pn_threshold", "threshold", "OOF-chosen threshold"))
    ):
        err = [wa[col] - wa[f"{col}_lo"], wa[f"{col}_hi"] - wa[col]]
        axes[1].errorbar(x + dx, wa[col], yerr=err, fmt="o", color=RULE_COLORS[rule], capsize=3, label=text)
    axes[1].set(ylabel="F1pn (validation, 95% CI)", title="Scores: argmax and after the threshold")
    axes[2].errorbar(
        x,
        wa["gain"],
        yerr=[wa["gain"] - wa["gain_lo"], wa["gain_hi"] - wa["gain"]],
        fmt="D",
        color=RULE_COLORS["threshold"],
        capsize=3,
    )
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set(ylabel="F1pn gain (threshold − argmax)", title="Gain of the threshold (paired 95% CI)")
    for ax in axes[1:]:
        ax.set_xticks(x, [f"{w:g}" for w in wa["neutral_weight"]])
        ax.set_xlim(-0.5, len(wa) - 0.5)
        ax.set_xlabel("neutral class weight")
    handles = [Line2D([], [], color=colors[w], label=f"neutral weight {w:g}") for w, _ in groups]
    handles += axes[1].get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    fig.suptitle(f"Neutral class weight, validation rows; {runs_note(weights)}", fontsize=11)
    return fig


# --- the study's decision rule for one run (chapter 02's headline, lib.predict) ---------------------------


def decision_rule(result, train: pd.DataFrame, rule: str = "threshold"):
    """(rule name, parameter) chosen on the run's out-of-fold rows."""
    if rule == "argmax":
        return "argmax", None
    held = result.oof_rows(train)
    return rule, choose(train["label"].to_numpy()[held], result.oof[held], rule)


def apply_rule(logits: np.ndarray, rule: str, param) -> np.ndarray:
    return to_labels(logits) if rule == "argmax" else RULES[rule](logits, param)
