"""Chapter 03: how large and stable is the gain of a neutral threshold, and is it a substitute for the class
weight? The rules themselves live in `lib.rules`; this module drives, tabulates and draws the chapter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import LABELS
from ..folds import subset_mask
from ..metrics import count, f1pn, fmt, fmt_diff
from ..rules import GRIDS, NEG, NO_OP, POS, RULES, choose, sweep, tune_then_apply  # noqa: F401
from .plots import legend_below
from .study import shown


def apply_rules(val: pd.DataFrame, y_oof, logits_oof, logits_val, n_boot: int) -> pd.DataFrame:
    """Each rule: parameter chosen on OOF, applied once to validation; paired clustered gain over argmax."""
    from ..metrics import paired, to_labels

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
    from .. import plan
    from ..metrics import bootstrap_ci, paired, sentence_groups, to_labels

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
    """What the weight runs are, read from their config: names, backbone, mode, epochs, folds (the legend names
    each run's objective)."""
    w = weights.drop_duplicates("run")
    one = lambda col: ", ".join(map(str, dict.fromkeys(w[col])))  # noqa: E731
    n_folds = len(str(w["folds"].iloc[0]).split(","))
    epochs = one("epochs")
    return (
        f"runs {', '.join(w['run'])}: {one('backbone')}, "
        f"mode {one('mode')}, {epochs} epoch{'' if epochs == '1' else 's'}, "
        f"{'fold' if n_folds == 1 else 'folds'} {one('folds')}"
    )


def per_fold(study, names) -> pd.DataFrame:
    """Each fold model of each run alone: the threshold chosen on its own fold's OOF rows, its validation F1pn
    under argmax and under that threshold, and the gain: how far t and its gain move from one training to the
    next (the question "is it stable?")."""
    from .study import fold_models

    parts = [fold_models(study.run(name), study.train, study.val).assign(run=name) for name in names]
    out = pd.concat(parts, ignore_index=True).rename(columns={"param": "t", "f1pn_rule": "f1pn_threshold"})
    out["gain"] = out["f1pn_threshold"] - out["f1pn_argmax"]
    return out[["run", "fold", "t", "f1pn_argmax", "f1pn_threshold", "gain"]]


def weight_difference(study, weights) -> pd.DataFrame:
    """Weight 1 minus weight 0.1 (the extremes of the grid), paired and sentence-clustered, under argmax and
    each after its own OOF-chosen threshold: does the threshold close the gap the weight opens?"""
    from ..metrics import paired, to_labels

    train, val, n = study.train, study.val, study.prof.bootstrap
    ws = sorted(weights)
    lo, hi = ws[0], ws[-1]
    pred = {}
    for w in (lo, hi):
        res = study.run(f"03/weight-{w:g}")
        held = res.oof_rows(train)
        z = res.ensemble("validation")
        t, after = tune_then_apply("threshold", train["label"].to_numpy()[held], res.oof[held], z)
        pred[w] = {"argmax": to_labels(z), "threshold": after}
    name = f"weight {hi:g} - weight {lo:g}"
    return pd.concat(
        [paired(val, pred[hi][d], pred[lo][d], n, f"{name} ({d})").assign(decision=d) for d in pred[hi]],
        ignore_index=True,
    )


def answer(applied: pd.DataFrame, weights: pd.DataFrame, chosen: dict, folds: pd.DataFrame, wdiff: pd.DataFrame) -> str:
    """The chapter's answer as Markdown, from the tables: each claim at the strength its CI allows."""
    a = applied.set_index(["rule", "subset"])
    w = weights[weights["subset"] == "all"].set_index("neutral_weight")

    def gain(r):
        return fmt_diff(r["gain"], r["gain_lo"], r["gain_hi"])

    def ci(r):
        return fmt(r["diff"], r["lo"], r["hi"], signed=True)

    t_all, t_unseen = a.loc[("threshold", "all")], a.loc[("threshold", "unseen")]
    b_all, b_unseen = a.loc[("neutral_bias", "all")], a.loc[("neutral_bias", "unseen")]
    head = folds[folds["run"] == "02/hamam"]
    kind = weights.iloc[0]  # the weight runs share backbone, mode, epochs and folds
    d = wdiff[wdiff["subset"] == "all"].set_index("decision")
    closes = d.loc["threshold"]
    if closes["lo"] > 0 or closes["hi"] < 0:
        sub = "the weights still differ after their thresholds: the threshold is no full substitute for the weight"
    elif d.loc["argmax", "lo"] > 0 or d.loc["argmax", "hi"] < 0:
        sub = (
            "the weights differ under argmax, and after their thresholds the difference is no longer distinguishable "
            "from 0: consistent with the threshold standing in for the weight"
        )
    else:
        sub = "the weights cannot be told apart either way, so this data cannot say whether one substitutes"
    return (
        f"**How large is the gain?** Rule (a), t = {t_all['param']:g} chosen on OOF, moves validation F1pn from "
        f"{t_all['f1pn_argmax']:.3f} to {t_all['f1pn_rule']:.3f}: {gain(t_all)} on all rows and "
        f"{gain(t_unseen)} on unseen-sentence rows (paired, sentence-clustered 95% CI). "
        f"Rule (b), b = {b_all['param']:g}: {gain(b_all)} on all rows, {gain(b_unseen)} unseen.\n\n"
        f"**Is it stable?** Each of the {len(head)} fold models of run 02/hamam alone (chapter 02's recipe seed, the "
        "model every rule above is applied to; chapter 02's headline pools every seed under its own rule), its t "
        "chosen on its own fold's "
        f"OOF rows: t from {head['t'].min():g} to {head['t'].max():g}, gains from {head['gain'].min():+.3f} to "
        f"{head['gain'].max():+.3f} (mean {head['gain'].mean():+.3f}). Chosen on all OOF rows: t = "
        f"{chosen['threshold']:g}; the best t on validation would have been {t_all['oracle_param_on_validation']:g}"
        f" (unseen rows: {t_unseen['oracle_param_on_validation']:g}).\n\n"
        f"**Is it a substitute for the class weight?** (retrained {kind['mode']} {kind['backbone']} models, "
        f"{count(len(str(kind['folds']).split(',')), 'fold')}, {count(int(kind['epochs']), 'epoch')}: the answer "
        "holds for that model) Argmax F1pn "
        + ", ".join(f"{r.f1pn_argmax:.3f} at weight {k:g}" for k, r in w.iterrows())
        + "; after each run's OOF-chosen threshold "
        + ", ".join(f"{r.f1pn_threshold:.3f} (t = {r.t_chosen_on_oof:g})" for k, r in w.iterrows())
        + f". Paired, {shown(wdiff['comparison'].iloc[0].split(' (')[0])} under argmax {ci(d.loc['argmax'])}, "
        f"after the thresholds {ci(closes)}: {sub}."
    )


# --- chapter 03 figures -------------------------------------------------------------------------

MIN_POLAR = 20  # precision/recall curves stop where fewer rows than this are predicted polar


def sweep_figure(sweeps: pd.DataFrame, chosen: dict):
    """F1pn along each rule's parameter on train OOF, validation and unseen-sentence validation rows, with the
    sentence-clustered 95% band; the OOF-chosen value dashed over the wide no-op line (b = 0). One legend, below
    the panels."""
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
        if rule in NO_OP:  # wide and beneath: a chosen value equal to it still shows both lines
            ax.axvline(NO_OP[rule], color="grey", lw=4, alpha=0.35)
        ax.axvline(chosen[rule], color="black", ls="--", lw=1)
        title = "rule (a): threshold t" if rule == "threshold" else "rule (b): neutral bias b"
        ax.set(xlabel=xlabels[rule], ylabel="F1pn", title=f"{title}; chosen on OOF: {chosen[rule]:g}")
    handles = [Line2D([], [], color=split_color(n), label=n) for n in names]
    handles += [
        Patch(color="grey", alpha=0.3, label="95% CI (sentence-cluster bootstrap)"),
        Line2D([], [], color="black", ls="--", lw=1, label="value chosen on train OOF"),
        Line2D([], [], color="grey", lw=4, alpha=0.35, label="b = 0: plain argmax"),
    ]
    legend_below(fig, handles)
    return fig


def polar_cut(s: pd.DataFrame, min_polar: int = MIN_POLAR) -> float:
    """The smallest grid value from which fewer than `min_polar` rows are predicted polar (inf: never)."""
    few = s.loc[s["n_polar"] < min_polar, "param"]
    return float(few.min()) if len(few) else float("inf")


def precision_recall_figure(sweeps: pd.DataFrame, t: float, names=("train OOF", "validation"), min_polar=MIN_POLAR):
    """Per class precision (thin, solid) and recall (wide, dashed) along rule (a)'s threshold t, one panel per
    split. Where fewer than `min_polar` rows are predicted polar, a precision is a ratio of a handful of rows: the
    curves stop there and the cut is shaded. A class's precision is not drawn where no row is predicted in it
    (undefined)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .plots import LABEL_COLORS, LABEL_NAMES

    fig, axes = plt.subplots(1, len(names), figsize=(13, 4.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        s = sweeps[sweeps["on"] == name].sort_values("param")
        cut = polar_cut(s, min_polar)
        kept = s[s["param"] < cut]
        for lab in LABELS:  # recall wide and below, precision thin on top: equal values still show both
            ax.plot(kept["param"], kept[f"recall_{lab}"], color=LABEL_COLORS[lab], ls="--", lw=3, alpha=0.6)
            ax.plot(kept["param"], kept[f"precision_{lab}"], color=LABEL_COLORS[lab], lw=1.3)
        if np.isfinite(cut):
            ax.axvspan(cut, s["param"].max(), color="grey", alpha=0.2, lw=0)
            ax.annotate(f"t ≥ {cut:g}: cut", (cut, 0.5), xytext=(4, 0), textcoords="offset points", fontsize=9)
        ax.axvline(t, color="black", ls="--", lw=1)
        ax.set(title=f"{name} rows: rule (a)", xlabel="threshold t on max(P(positive), P(negative))")
        ax.set_xlim(s["param"].min(), s["param"].max())
    np.atleast_1d(axes)[0].set_ylabel("precision or recall of the class")
    handles = [Line2D([], [], color=LABEL_COLORS[lab], label=LABEL_NAMES[lab]) for lab in LABELS]
    handles += [
        Line2D([], [], color="black", lw=1.3, label="precision (solid; none where no row is predicted in the class)"),
        Line2D([], [], color="black", ls="--", lw=3, alpha=0.6, label="recall (wide, dashed)"),
        Line2D([], [], color="black", ls="--", lw=1, label=f"t = {t:g}, chosen on train OOF"),
        Patch(color="grey", alpha=0.4, label=f"fewer than {min_polar} rows predicted polar: not drawn"),
    ]
    legend_below(fig, handles)
    return fig


def weight_figure(weights: pd.DataFrame, wsweeps: pd.DataFrame):
    """Left: validation F1pn along t for each neutral weight (t chosen on OOF: a diamond on its curve); middle:
    argmax and thresholded F1pn with their 95% CIs; right: the threshold's paired gain with its 95% CI."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .plots import RULE_COLORS
    from .style import objective_color, objective_name

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    groups = list(wsweeps.groupby("neutral_weight"))
    colors = {w: objective_color("ce", w) for w, _ in groups}  # as chapter 07 colours these runs
    for w, s in groups:
        axes[0].plot(s["param"], s["f1pn"], color=colors[w])
        # the OOF-chosen t as a point on its own curve: two weights may choose the same t (lines would coincide)
        at = s.iloc[[int(np.argmin(np.abs(s["param"].to_numpy() - s["t_chosen"].iloc[0])))]]
        axes[0].plot(at["param"], at["f1pn"], ls="", marker="D", ms=8, mec="black", color=colors[w])
    axes[0].set(xlabel="threshold t", ylabel="F1pn (validation)", title="F1pn along t (◆: t chosen on OOF)")
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
    handles = [Line2D([], [], color=colors[w], label=objective_name("ce", w)) for w, _ in groups]
    handles += axes[1].get_legend_handles_labels()[0]
    legend_below(fig, handles)
    fig.suptitle(f"Neutral class weight, validation rows; {runs_note(weights)}", fontsize=11)
    return fig
