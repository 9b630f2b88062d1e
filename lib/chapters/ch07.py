"""Chapter 07, the neutral majority: the plan's runs `07/<name>` (one loss of `lib.losses` each, same backbone,
recipe, folds and seeds) scored on validation under argmax and under a decision rule chosen on clean OOF rows.

The rule is `threshold` (`lib.rules`: neutral unless max(p(pos), p(neg)) >= t) for the three-class losses and
`polar` (`lib.losses.polar_rule`: polar when p(polar) = 1 - p(neutral) > t, then the sign) for the two-head model,
whose saved logits are log-probabilities. t comes from the run's out-of-fold train rows only, never validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import rules
from ..config import LABEL2ID, LABELS
from ..folds import SUBSETS, subset_mask
from ..losses import polar_rule
from ..metrics import count, f1pn, fmt, fmt_diff, score_subsets, softmax, to_labels
from .ch02.errors import by_group
from .plots import legend_below
from .study import fold_models, paired

NEU = LABEL2ID[0]
REF_FALLBACK = "07/ce-weight-0.1"
DECISIONS = ("argmax", "OOF rule")
MARKERS = {"argmax": "o", "OOF rule": "s"}


def rule_of(cfg) -> str:
    return "polar" if cfg.loss == "two_head" else "threshold"


def apply(rule: str, logits, t: float) -> np.ndarray:
    return polar_rule(logits, t) if rule == "polar" else rules.RULES[rule](logits, t)


def choose(y, logits, rule: str, grid=None) -> float:
    """t with the best F1pn on (y, logits), the middle of a tied plateau, as `lib.rules.choose`."""
    if rule in rules.RULES:
        return rules.choose(y, logits, rule, grid)
    grid = np.asarray(rules.GRIDS["threshold"] if grid is None else grid)
    f = np.array([f1pn(y, apply(rule, logits, t)) for t in grid])
    best = np.flatnonzero(np.isclose(f, f.max()))
    return float(grid[best[len(best) // 2]])


def p_polar(logits) -> np.ndarray:
    """1 - p(neutral) from the softmax of (averaged) logits or log-probabilities."""
    return 1.0 - softmax(logits)[:, NEU]


def reference(runs, headline_weight: float) -> str:
    """The cross-entropy run with the headline recipe's neutral weight, else `07/ce-weight-0.1`."""
    for r in runs:
        if r.name.startswith("07/") and r.cfg.loss == "ce" and np.isclose(r.cfg.neutral_weight, headline_weight):
            return r.name
    return REF_FALLBACK


def decide(res, train: pd.DataFrame) -> dict:
    """Validation predictions of the fold ensemble: argmax, and the rule with t chosen on the clean OOF rows."""
    held, rule = res.oof_rows(train), rule_of(res.cfg)
    t = choose(train["label"].to_numpy()[held], res.oof[held], rule)
    z = res.ensemble("validation")
    return {"rule": rule, "param": t, "argmax": to_labels(z), "OOF rule": apply(rule, z, t), "p_polar": p_polar(z)}


def fold_table(runs: dict, train: pd.DataFrame, val: pd.DataFrame) -> pd.DataFrame:
    """Each fold model alone on validation, under argmax and under its own rule chosen on its own fold's OOF rows."""
    rows = []
    for name, res in runs.items():
        rule = rule_of(res.cfg)
        pick, use = (lambda y, z, r=rule: choose(y, z, r)), (lambda z, t, r=rule: apply(r, z, t))
        one = fold_models(res, train, val, rule, pick, use)
        for r in one.itertuples():
            base = {"variant": name, "fold": r.fold}
            rows.append({**base, "decision": "argmax", "param": np.nan, "f1pn": r.f1pn_argmax})
            rows.append({**base, "decision": "OOF rule", "param": r.param, "f1pn": r.f1pn_rule})
    return pd.DataFrame(rows)


def score_table(val: pd.DataFrame, dec: dict, n_boot: int) -> pd.DataFrame:
    """Validation F1pn (sentence-clustered CI) per variant x decision x subset, with the share predicted neutral."""
    parts = []
    for name, d in dec.items():
        for dn in DECISIONS:
            rule, param = (dn, None) if dn == "argmax" else (d["rule"], d["param"])
            t = score_subsets(val, d[dn], n_boot, variant=name, decision=dn, rule=rule, param=param)
            t["pred_neutral_share"] = [float((d[dn][subset_mask(val, s)] == 0).mean()) for s in t["subset"]]
            parts.append(t)
    return pd.concat(parts, ignore_index=True)


def compare(val: pd.DataFrame, dec: dict, ref: str, n_boot: int) -> pd.DataFrame:
    """Paired, sentence-clustered: each variant minus the reference (same decision), and each rule minus argmax."""
    parts = []
    for name, d in dec.items():
        gain = paired(val, d["OOF rule"], d["argmax"], n_boot, f"{name}: OOF rule - argmax", SUBSETS)
        parts.append(gain.assign(variant=name, kind="threshold gain", decision="OOF rule"))
        for dn in DECISIONS if name != ref else ():
            diff = paired(val, d[dn], dec[ref][dn], n_boot, f"{name} - {ref} ({dn})", SUBSETS)
            parts.append(diff.assign(variant=name, kind="minus reference", decision=dn))
    return pd.concat(parts, ignore_index=True)


def by_type(val: pd.DataFrame, dec: dict, n_boot: int, min_rows: int = 30) -> pd.DataFrame:
    """F1pn per entity type (`ch02.errors.by_group`, types with >= min_rows rows) per variant x decision."""
    parts = []
    for name, d in dec.items():
        for dn in DECISIONS:
            onehot = np.eye(len(LABELS))[[LABEL2ID[p] for p in d[dn]]]  # predictions as logits by_group can read
            t = by_group(val, onehot, n_boot, min_rows)
            parts.append(t[t["by"] == "entity type"].drop(columns="by").assign(variant=name, decision=dn))
    return pd.concat(parts, ignore_index=True)


def reliability(y, p, bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of predicted p(polar): rows, mean prediction and observed polar share (empty bins dropped)."""
    p, edges = np.asarray(p, float), np.linspace(0.0, 1.0, bins + 1)
    b = np.digitize(p, edges[1:-1])  # 0 .. bins-1; p = 1 falls in the last bin
    df = pd.DataFrame({"bin": b, "p": p, "polar": np.asarray(y) != 0})
    out = df.groupby("bin").agg(n=("p", "size"), mean_pred=("p", "mean"), observed=("polar", "mean")).reset_index()
    return out.assign(lo=edges[out["bin"]], hi=edges[out["bin"] + 1])


def reliability_table(val: pd.DataFrame, dec: dict, bins: int = 10) -> pd.DataFrame:
    y = val["label"].to_numpy()
    return pd.concat([reliability(y, d["p_polar"], bins).assign(variant=n) for n, d in dec.items()], ignore_index=True)


def ece(rel: pd.DataFrame) -> pd.Series:
    """Expected calibration error per variant: mean |observed - predicted| over bins, weighted by rows."""
    gap = (rel["observed"] - rel["mean_pred"]).abs() * rel["n"]
    return gap.groupby(rel["variant"], sort=False).sum() / rel.groupby("variant", sort=False)["n"].sum()


def result_name(name: str) -> str:
    """'07/ce-weight-0.1' -> 'ce_weight_01' (the results.json key part: no dots inside a name)."""
    return name.split("/", 1)[-1].replace("-", "_").replace(".", "")


def numbers(scores: pd.DataFrame, comp: pd.DataFrame) -> dict:
    """results.json entries {key: [value, lo, hi]}: plain keys under the OOF-chosen rule, `.argmax` beside."""
    num, tag = {}, {"argmax": ".argmax", "OOF rule": ""}  # plain key: the OOF-chosen rule
    for r in scores[scores["subset"] != "seen"].itertuples():  # seen-sentence rows are few: tables only
        num[f"07.{result_name(r.variant)}{tag[r.decision]}.validation.{r.subset}"] = [r.f1pn, r.f1pn_lo, r.f1pn_hi]
        if r.subset == "all":
            num[f"07.{result_name(r.variant)}{tag[r.decision]}.neutral_share"] = [r.pred_neutral_share]
    for r in comp[comp["subset"] != "seen"].itertuples():
        kind = ".threshold_gain" if r.kind == "threshold gain" else "_minus_ref" + tag[r.decision]
        num[f"07.{result_name(r.variant)}{kind}.validation.{r.subset}"] = [r.diff, r.lo, r.hi]
    return num


# --- answer ------------------------------------------------------------------------------------------


def _ci(r) -> str:
    return fmt_diff(r["diff"], r["lo"], r["hi"])


def convergence(runs: dict) -> pd.DataFrame:
    """Per variant and fold: the step early stopping kept against the run's last step, and whether the curve
    had turned (the best evaluation is not the last one) and whether patience ended the run before its epochs."""
    rows = []
    for name, res in runs.items():
        for r in res.runs:
            last_epoch = r["history"][-1]["epoch"] if r["history"] else 0.0
            rows.append(
                {
                    "variant": name,
                    "fold": r["fold"],
                    "best_step": r["best_step"],
                    "last_step": r["steps"],
                    "epochs_run": round(last_epoch, 2),
                    "turned": r["best_step"] < r["steps"],
                    "stopped_early": last_epoch < res.cfg.epochs - 1e-6,
                }
            )
    return pd.DataFrame(rows)


def describe(runs: dict, ref: str) -> str:
    """The Method's facts, from the runs' configs: mode, epochs, folds, seed, and each variant's objective."""
    look = looks(runs)
    cfg = runs[ref].cfg
    folds = ", ".join(map(str, runs[ref].folds))
    parts = [f"{look[n][0]} (run `{n}`)" for n in runs]
    return (
        f"{len(runs)} runs, all {cfg.mode}, {count(cfg.epochs, 'epoch')} with early stopping on the inner split, folds "
        f"{folds}, seed {cfg.seed}; reference **{look[ref][0]}**. Variants: " + "; ".join(parts) + "."
    )


def answer(scores, comp, folds, rel, ref: str, mode: str, n_folds: int, look: dict) -> str:
    """The chapter's answer as Markdown, from the tables (validation, all rows); variants by display name."""

    def nm(n):
        return look[n][0]

    s = scores[scores["subset"] == "all"].set_index(["variant", "decision"])
    c = comp[comp["subset"] == "all"].set_index(["variant", "kind", "decision"])
    names = list(dict.fromkeys(scores["variant"]))
    best = max(((n, dn) for n in names for dn in DECISIONS), key=lambda k: s.loc[k, "f1pn"])
    which = ", ".join(map(str, sorted(set(folds["fold"]))))
    out = [
        f"Mode **{mode}**, fold models {which} of {n_folds} (ensembled by averaging logits), "
        f"one seed; reference **{nm(ref)}** (the headline recipe's neutral weight). Validation F1pn, "
        "all rows, sentence-clustered 95% CIs, differences paired; each rule's t chosen on clean OOF train rows only.\n"
    ]
    for n in names:
        a, o, g = s.loc[(n, "argmax")], s.loc[(n, "OOF rule")], c.loc[(n, "threshold gain", "OOF rule")]
        vs = (
            ""
            if n == ref
            else "; minus reference: " + ", ".join(f"{dn} {_ci(c.loc[(n, 'minus reference', dn)])}" for dn in DECISIONS)
        )
        need = "still helps" if g["lo"] > 0 else "hurts" if g["hi"] < 0 else "changes nothing distinguishable from 0"
        out.append(
            f"- **{nm(n)}**: argmax {fmt(a.f1pn, a.f1pn_lo, a.f1pn_hi)}, OOF {o.rule} rule "
            f"(t = {o.param:g}) {fmt(o.f1pn, o.f1pn_lo, o.f1pn_hi)}; rule minus argmax {_ci(g)}: the threshold {need}"
            f"{vs}; predicted neutral {a.pred_neutral_share:.0%} (argmax) / {o.pred_neutral_share:.0%} (rule)."
        )
    better = [f"{nm(n)} ({dn})" for (n, k, dn), r in c.iterrows() if k == "minus reference" and r["lo"] > 0]
    worse = [f"{nm(n)} ({dn})" for (n, k, dn), r in c.iterrows() if k == "minus reference" and r["hi"] < 0]
    u = comp[(comp["subset"] == "unseen") & (comp["kind"] == "minus reference")]
    u_better = [f"{nm(r.variant)} ({r.decision})" for r in u.itertuples() if r.lo > 0]
    u_worse = [f"{nm(r.variant)} ({r.decision})" for r in u.itertuples() if r.hi < 0]
    spread = folds.groupby(["variant", "decision"])["f1pn"].agg(lambda v: v.max() - v.min())
    widest, top = spread.idxmax(), fmt(*s.loc[best, ["f1pn", "f1pn_lo", "f1pn_hi"]])
    return "\n".join(out) + (
        f"\n\n**Which helps?** Highest point estimate: {nm(best[0])} with {best[1]}, {top}. "
        f"Better than the reference with the same decision (paired CI above 0): {'; '.join(better) or 'none'}. "
        f"Worse (CI below 0): {'; '.join(worse) or 'none'}. On unseen-sentence rows, better: "
        f"{'; '.join(u_better) or 'none'}; worse: {'; '.join(u_worse) or 'none'}; every other variant cannot be told "
        f"apart from the reference there. For scale: single fold models of one variant differ by up "
        f"to {spread.max():.3f} F1pn from one training to the next ({nm(widest[0])} with {widest[1]}).\n\n"
        "**Calibration of p(polar)** (expected calibration error, lower is better): "
        + "; ".join(f"{nm(n)} {e:.3f}" for n, e in ece(rel).items())  # "; ": the names hold commas
        + "."
    )


# --- figures -----------------------------------------------------------------------------------------


def looks(runs: dict) -> dict:
    """{run name: (display name, colour)}: each variant's training objective as chapter 03 and every other
    figure name and colour it (`lib.chapters.style.objective`)."""
    from .style import objective

    return {n: objective(r.cfg) for n, r in runs.items()}


def named(t, look: dict):
    """The table (or series) for display: each run id (a `variant` column, else the index) by its display name."""
    names = {n: v[0] for n, v in look.items()}
    has_column = isinstance(t, pd.DataFrame) and "variant" in t.columns
    return t.assign(variant=t["variant"].map(names)) if has_column else t.rename(index=names)


def _points(ax, t: pd.DataFrame, names, look: dict, v: str, lo: str | None = None, hi: str | None = None):
    """One row per variant (its colour, its display name), one marker per decision: t[v] with a [lo, hi] whisker."""
    col = {n: look[n][1] for n in names}
    for i, n in enumerate(names):
        for j, dn in enumerate(DECISIONS):
            for _, r in t[(t["variant"] == n) & (t["decision"] == dn)].iterrows():
                err = None if lo is None else [[r[v] - r[lo]], [r[hi] - r[v]]]
                ax.errorbar(r[v], -i + (j - 0.5) * 0.3, xerr=err, fmt=MARKERS[dn], ms=7, color=col[n], capsize=3)
    ax.set_yticks(-np.arange(len(names)), [look[n][0] for n in names], fontsize=9)


def _legend(fig, extra=()):
    """Markers explain the decision (colours are named on the axis): one legend below the panels."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker=m, color="black", label=dn) for dn, m in MARKERS.items()]
    legend_below(fig, [*handles, *extra], fontsize=9)


def f1pn_figure(scores: pd.DataFrame, folds: pd.DataFrame, look: dict):
    """Validation F1pn with 95% CI per variant, argmax vs OOF rule, one panel per subset; single fold models."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names, subsets = list(dict.fromkeys(scores["variant"])), list(dict.fromkeys(scores["subset"]))
    size = (4.2 * len(subsets), 0.45 * len(names) + 2.2)
    fig, axes = plt.subplots(
        1, len(subsets), figsize=size, sharey=True, sharex=True, squeeze=False, layout="constrained"
    )
    for ax, sub in zip(axes[0], subsets):
        t = scores[scores["subset"] == sub]
        _points(ax, t, names, look, "f1pn", "f1pn_lo", "f1pn_hi")
        ax.set(title=f"{sub} validation rows (n={int(t['n'].iloc[0])})", xlabel="validation F1pn (95% CI)")
    for i, n in enumerate(names):  # single fold models, all rows
        for j, dn in enumerate(DECISIONS):
            f = folds[(folds["variant"] == n) & (folds["decision"] == dn)]["f1pn"]
            axes[0, 0].plot(f, [-i + (j - 0.5) * 0.3] * len(f), ls="", marker="x", ms=6, color=look[n][1])
    _legend(fig, [Line2D([], [], ls="", marker="x", ms=6, color="black", label="one fold model alone (all rows)")])
    return fig


def diff_figure(comp: pd.DataFrame, ref: str, look: dict, subset: str = "all"):
    """Paired differences with 95% CIs: each variant minus the reference, and the OOF rule minus argmax."""
    import matplotlib.pyplot as plt

    names, t = list(dict.fromkeys(comp["variant"])), comp[comp["subset"] == subset]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 2.2), sharey=True, layout="constrained")
    titles = {"minus reference": f"variant minus {look[ref][0]}", "threshold gain": "OOF rule minus argmax"}
    for ax, (kind, title) in zip(axes, titles.items()):
        _points(ax, t[t["kind"] == kind], names, look, "diff", "lo", "hi")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{title} ({subset} validation rows)", fontsize=10)
        ax.set_xlabel("difference in validation F1pn (paired 95% CI)")
        ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=5))  # two panels on one page: 0.01 steps touched
    _legend(fig)
    return fig


def reliability_figure(rel: pd.DataFrame, look: dict, ncols: int = 3):
    """Per variant: observed polar share vs mean predicted p(polar) per bin, and the rows per bin below it."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(rel["variant"]))
    col, err, nrows = {n: look[n][1] for n in names}, ece(rel), -(-len(names) // ncols)
    ratios = {"height_ratios": [3, 1] * nrows}
    fig, axes = plt.subplots(
        2 * nrows, ncols, figsize=(3.6 * ncols, 4.2 * nrows), squeeze=False, gridspec_kw=ratios, layout="constrained"
    )
    for k in range(nrows * ncols):
        top, bottom = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
        if k >= len(names):
            top.set_axis_off(), bottom.set_axis_off()
            continue
        n, t = names[k], rel[rel["variant"] == names[k]]
        top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        top.plot(t["mean_pred"], t["observed"], marker="o", color=col[n])
        top.set(xlim=(0, 1), ylim=(-0.03, 1.03), xticklabels=[], title=f"{look[n][0]}\n(ECE {err[n]:.3f})")
        bottom.bar((t["lo"] + t["hi"]) / 2, t["n"], width=t["hi"] - t["lo"], color=col[n], alpha=0.6)
        bottom.set(xlim=(0, 1), xlabel="predicted p(polar)", ylabel="rows" if k % ncols == 0 else "")
        top.set_ylabel("observed polar share" if k % ncols == 0 else "")
    fig.suptitle("Reliability of p(polar) on validation (dashed diagonal: perfectly calibrated)", fontsize=11)
    return fig


def neutral_figure(scores: pd.DataFrame, true_share: float, train_share: float, look: dict):
    """Share of validation rows predicted neutral per variant and decision, against the true shares."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    t, names = scores[scores["subset"] == "all"], list(dict.fromkeys(scores["variant"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 2.2), layout="constrained")
    _points(ax, t, names, look, "pred_neutral_share")
    ax.axvline(true_share, color="black", ls="--", lw=1)
    # train's share as a mark above the axes: a second line would hide under validation's when they are close
    ax.plot(train_share, 1.0, marker="v", ms=9, color="grey", transform=ax.get_xaxis_transform(), clip_on=False)
    ax.set(xlim=(-0.03, 1.03), xlabel="share of validation rows predicted neutral")
    true = Line2D([], [], color="black", ls="--", label=f"true share, validation ({true_share:.0%})")
    train = Line2D([], [], ls="", marker="v", ms=9, color="grey", label=f"true share, train ({train_share:.0%})")
    _legend(fig, [true, train])
    return fig
