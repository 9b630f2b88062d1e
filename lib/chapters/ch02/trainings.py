"""Chapter 02's answers over trainings: every (seed, fold) model, paired across modes; the seed-to-seed spread
of the k-fold ensemble; the headline over every HAMAM model of every seed, under a decision rule whose transfer
from out-of-fold (OOF) rows to an averaged ensemble is measured on OOF rows, never on validation.

A bootstrap over validation sentences sees the sampling of rows, not the noise of training (the seed and the
data order): only more trainings measure that. Both are reported; a difference "holds" only where both
intervals exclude 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...folds import subset_mask
from ...metrics import count, f1pn, fmt, listed, over_trainings, paired
from ...training import KFoldResult
from ..study import fold_models, shown
from ..study import verdict as row_verdict  # one paired row; this module's verdict weighs two intervals

# --- single models, paired over trainings ---------------------------------------------------------------------


def single_models(sets: dict[str, dict[int, object]], train: pd.DataFrame, val: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, seed, fold) model: validation F1pn under argmax and under a threshold chosen on that
    model's own held-out fold rows (its clean OOF rows)."""
    parts = [
        fold_models(res, train, val).assign(mode=mode, seed=seed)
        for mode, by_seed in sets.items()
        for seed, res in by_seed.items()
    ]
    out = pd.concat(parts, ignore_index=True).rename(columns={"param": "threshold"})
    return out[["mode", "seed", "fold", "f1pn_argmax", "f1pn_rule", "threshold"]]


def paired_trainings(models: pd.DataFrame, a: str, b: str, column: str = "f1pn_rule") -> tuple[dict, pd.DataFrame]:
    """Model (seed, fold) of mode a minus the same (seed, fold) of mode b: same training rows, same seed. The two
    seeds of one fold train on the same rows, so they are not independent trainings: the interval is taken over
    folds, each fold's differences averaged over its seeds first (df = folds - 1); `n` counts the trainings."""
    wide = models.pivot_table(index=["seed", "fold"], columns="mode", values=column)
    pairs = wide[[a, b]].dropna()
    diff = (pairs[a] - pairs[b]).rename("diff").reset_index()
    by_fold = diff.groupby("fold")["diff"].mean()
    summary = over_trainings(by_fold)
    summary.update(n=len(diff), folds=len(by_fold), sd=float(diff["diff"].std(ddof=1)) if len(diff) > 1 else np.nan)
    summary.update(
        min=float(diff["diff"].min()) if len(diff) else np.nan, max=float(diff["diff"].max()) if len(diff) else np.nan
    )
    return summary, diff


def seed_spread(models_by_seed: dict[int, np.ndarray], y: np.ndarray, decide) -> pd.DataFrame:
    """Validation F1pn of each seed's k-fold ensemble under `decide` (logits -> labels)."""
    return pd.DataFrame([{"seed": s, "f1pn": f1pn(y, decide(z))} for s, z in models_by_seed.items()])


# --- words computed from what ran ------------------------------------------------------------------------------


def describe(sets: dict) -> str:
    """What was trained, from the runs themselves: seeds, folds and models per mode."""
    parts = []
    for mode, by_seed in sets.items():
        folds = next(iter(by_seed.values())).folds
        n = sum(len(r.folds) for r in by_seed.values())
        seeds = ", ".join(map(str, by_seed))
        sizes = f"{count(len(by_seed), 'seed')} ({seeds}) × {count(len(folds), 'fold')}"
        parts.append(f"{mode}: {sizes} = {count(n, 'model')}")
    return "Trained with the same recipe: " + "; ".join(parts) + "."


def rule_sentence(table: pd.DataFrame, decide) -> str:
    """Which decision rule the headline uses and why, from the OOF transfer table."""
    rows = "; ".join(f"{r.rule} {r.oof_f1pn:.3f} (folds {r.fold_min:.3f}–{r.fold_max:.3f})" for r in table.itertuples())
    param = "" if decide.param is None else f" (parameter {decide.param:.3g}, refitted on every OOF row)"
    return (
        f"Leave-one-fold-out OOF F1pn of each candidate rule, fitted on the other folds' OOF rows and applied to "
        f"the held-out fold's seed-averaged logits: {rows}. The headline uses **{decide.rule}**{param}; "
        "validation did not enter the choice. Two limits: the OOF stand-in averages one model per seed of the same "
        "fold, milder than the headline's average over every fold and seed; and 'matched polar rate' sets its "
        "threshold from the rows it labels (it assumes they have the OOF polar share). Differences between "
        "candidates smaller than their per-fold spread are not evidence."
    )


def goal_note(goal: float, got: tuple, seed_f1: dict, fold_runs: list) -> str:
    """Why the headline misses `goal` on all validation rows, from what ran ("" when it meets it): the gap against
    the seed-to-seed spread of the k-fold ensemble and against the CI, and where early stopping put the
    checkpoints (mid-run: the recipe does not lack epochs; at the end: it may)."""
    value, lo, hi = got
    gap = goal - value
    if gap <= 0:
        return ""
    spread = max(seed_f1.values()) - min(seed_f1.values()) if len(seed_f1) > 1 else float("nan")
    at = float(np.mean([r["best_step"] / r["steps"] for r in fold_runs]))
    seeds = ", ".join(f"{v:.3f} (seed {s})" for s, v in seed_f1.items())
    retrain = (
        f"each seed's ensemble scores {seeds}: a spread of {spread:.3f}, "
        + ("smaller than the gap, so another seed alone would not close it" if spread < gap else "as large as the gap")
        if len(seed_f1) > 1
        else "one seed only: how far a retraining moves it is not measured"
    )
    ci = (
        f"the goal lies inside the 95% CI (upper end {hi:.3f}): these rows cannot exclude that the recipe meets it"
        if hi >= goal
        else f"the goal lies above the 95% CI (upper end {hi:.3f})"
    )
    stop = (
        f"early stopping kept checkpoints at {at:.0%} of each run on average: the inner held-out F1pn peaked "
        "well before the end of training, so more epochs of this recipe are not what it lacks"
        if at < 0.9
        else f"early stopping kept checkpoints at {at:.0%} of each run on average: the curves had not flattened, "
        "so more epochs may help"
    )
    return f"**Why it falls short, from what ran:** the gap to {goal:.2f} is {gap:.3f}; {retrain}; {ci}; {stop}."


def trainings_table(over: dict) -> pd.DataFrame:
    return pd.DataFrame([{"comparison": c, **s} for c, (s, _) in over.items()])


def verdict(comparison: str, ens: tuple, trn: dict) -> str:
    """A difference is stated as holding only where the ensemble-level CI (validation sentences) and the CI over
    trainings (folds, seeds averaged within a fold) both exclude 0 on the same side; otherwise say which one
    does, that they disagree, or that neither can tell."""
    e_out = ens[1] > 0 or ens[2] < 0
    t_out = bool(np.isfinite(trn["lo"]) and (trn["lo"] > 0 or trn["hi"] < 0))
    e = f"ensembles {fmt(*ens, signed=True)}"
    t = (
        f"single models, mean over {trn['n']} paired trainings {fmt(trn['mean'], trn['lo'], trn['hi'], signed=True)}"
        f" (95% t-interval over {trn.get('folds', trn['n'])} folds; sd {trn['sd']:.3f}, range {trn['min']:+.3f} to "
        f"{trn['max']:+.3f})"
    )
    if e_out and t_out and np.sign(ens[0]) == np.sign(trn["mean"]):
        sign = "better" if ens[0] > 0 else "worse"
        head = f"**{shown(comparison)}: {sign}**: both CIs exclude 0 on the same side"
    elif e_out and t_out:
        head = f"**{shown(comparison)}: not settled**: the two CIs exclude 0 on opposite sides"
    elif e_out or t_out:
        which = "the ensemble-level CI" if e_out else "the CI over trainings"
        head = f"**{shown(comparison)}: not settled**: only {which} excludes 0"
    else:
        head = f"**{shown(comparison)}: cannot be told apart** here (both CIs include 0)"
    return f"{head}: {e}; {t}."


# --- the figure ---------------------------------------------------------------------------------------------


def figure(models: pd.DataFrame, ensembles: pd.DataFrame, diffs: pd.DataFrame, points: dict, names: dict):
    """Left: validation F1pn of every single model (small points, one per seed and fold) and of each k-fold
    ensemble (large points with CIs), per mode. Right: paired differences, each comparison over trainings
    (per-training points, mean with its t-interval) and at ensemble level (sentence-clustered CI).
    `names`: mode -> display name (colour); `points`: comparison -> per-training differences."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..plots import legend_below, model_color

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.1, 1]}, layout="constrained")
    rng = np.random.default_rng(0)
    modes = list(dict.fromkeys(models["mode"]))
    for i, m in enumerate(modes):
        v = models.loc[models["mode"] == m, "f1pn_rule"]
        ax.scatter(i - 0.15 + rng.uniform(-0.06, 0.06, len(v)), v, s=14, alpha=0.6, color=model_color(names[m]))
        e = ensembles[ensembles["mode"] == m].reset_index(drop=True)
        for j, r in e.iterrows():
            x = i + 0.12 + 0.12 * j
            ax.errorbar(
                x,
                r.f1pn,
                yerr=[[r.f1pn - r.lo], [r.hi - r.f1pn]],
                fmt=r.get("marker", "D"),
                ms=7,
                capsize=3,
                color=model_color(names[m]),
                mec="black",
            )
    ax.set_xticks(range(len(modes)), [names[m].split(" ")[0] for m in modes])  # the mode; the backbone is in the title
    ax.set_xlim(-0.5, len(modes) - 0.3)
    backbone = names[modes[0]].split(" ", 1)[-1]
    ax.set(ylabel="validation F1pn (own OOF rule)", title=f"{backbone}: single models (dots), ensembles (95% CI)")
    comps = list(dict.fromkeys(diffs["comparison"]))
    for i, c in enumerate(comps):
        pts = np.asarray(points.get(c, []), dtype=float)
        bx.scatter(pts, i + 0.2 + rng.uniform(-0.05, 0.05, len(pts)), s=14, alpha=0.6, color="#4d4d4d")
        for off, kind, mk in ((0.2, "over trainings", "s"), (-0.2, "ensemble", "D")):
            r = diffs[(diffs["comparison"] == c) & (diffs["kind"] == kind)]
            if len(r) and np.isfinite(r["lo"].iloc[0]):
                d, lo, hi = r[["diff", "lo", "hi"]].iloc[0]
                bx.errorbar(d, i + off, xerr=[[d - lo], [hi - d]], fmt=mk, capsize=3, color="black", ms=6)
    bx.axvline(0, color="grey", lw=1, ls=":")
    bx.set_yticks(range(len(comps)), [shown(c) for c in comps])
    bx.set_ylim(-0.6, len(comps) - 0.4)
    bx.set(xlabel="paired difference in validation F1pn", title="squares: over trainings; diamonds: ensemble")
    kinds = [
        ("o", "single model (left), single training's difference (right)"),
        ("D", "one seed's k-fold ensemble / ensemble difference"),
        ("*", "every model of every seed"),
        ("s", "mean over trainings (t-interval over folds)"),
    ]
    marks = [Line2D([], [], marker=m, ls="", color="#4d4d4d", mec="black", ms=7) for m, _ in kinds]
    legend_below(fig, marks, [t for _, t in kinds], fontsize=8)
    return fig


def learning_curves(runs: dict[str, KFoldResult]):
    """Early-stopping F1pn (inner split; points where it was measured) and the mean training loss since the
    previous evaluation, one line per fold, one column per mode. Folds that coincide (a tiny model) stay
    visible: fold 0 is drawn widest and each later fold narrower on top of it."""
    import matplotlib.pyplot as plt

    from ..plots import MODE_NAMES, legend_below

    rows = [{**h, "mode": m, "fold": r["fold"]} for m, res in runs.items() for r in res.runs for h in r["history"]]
    hist = pd.DataFrame(rows)
    gap = hist.groupby(["mode", "fold"])["step"].diff()
    hist = hist[~(gap < 0.5 * gap.median())]  # drop the tail check a few steps after the last regular one
    folds = sorted(hist["fold"].unique())
    width = dict(zip(folds, np.linspace(3.0, 1.0, len(folds)) if len(folds) > 1 else [1.6]))
    colour = dict(zip(folds, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(
        2, len(runs), figsize=(4.6 * len(runs), 6), sharex=True, sharey="row", squeeze=False, layout="constrained"
    )
    for j, m in enumerate(runs):
        for f in folds:
            h = hist[(hist["mode"] == m) & (hist["fold"] == f)]
            kw = {"color": colour[f], "lw": width[f], "label": f"fold {f}"}
            axes[0, j].plot(h["step"], h["held_f1pn"], marker="o", ms=3 + width[f], **kw)
            axes[1, j].plot(h["step"], h["train_loss"], **kw)
        axes[0, j].set_title(MODE_NAMES.get(m, m))  # the mode's display name, as in every chapter
        axes[1, j].set_xlabel("step")
    axes[0, 0].set_ylabel("inner-split F1pn")
    axes[1, 0].set_ylabel("training loss")
    legend_below(fig, *axes[0, 0].get_legend_handles_labels())  # below the panels: never over a curve
    return fig


# --- masking every mention ------------------------------------------------------------------------------------------


def every_mention(val, every, span, bootstrap, folds) -> tuple[pd.DataFrame, list[str]]:
    """Masking every mention of the entity against the labelled span alone (labels of one model per fold, one seed):
    the paired F1pn on all and on repeated-entity rows, and how many labels the option changed at all (where
    the two models agree on every repeated row, the difference there is exactly 0)."""
    table = paired(val, every, span, bootstrap, "every mention - labelled span", subsets=("all", "repeated"))
    where = f"{count(len(folds), 'fold model')} ({listed('fold', folds)}) of one seed: "
    where += "the spread over trainings is not measured"
    lines = [f"- {row_verdict(r)} ({where})" for _, r in table.iterrows()]
    moved, rep = np.asarray(every) != np.asarray(span), subset_mask(val, "repeated")
    lines.append(
        f"- the two models' labels differ on {moved.sum()} of {len(moved)} validation rows, "
        f"{moved[rep].sum()} of the {rep.sum()} repeated-entity rows"
    )
    return table, lines
