"""Chapter 04: the multi-sample dropout ablation (K dropout masks over one representation).

Runs are ordinary fold runs of the plan (`04/k<K>-seed<s>`) that differ in `msd_k` / `msd_rate` / `seed`,
evaluated densely on the inner split (`msd_evals_per_epoch` times per epoch) for the whole schedule, so the
learning curve is what is read: the steps each run needs to reach 95% of its own best held-out F1pn. A run that
stopped early anyway (patience) is counted and named in the answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import count, f1pn, over_trainings, to_labels
from .plots import legend_below

FRACTION = 0.95  # "reached": the first evaluation at >= this share of the run's own best held-out F1pn


def steps_to_fraction(history, fraction: float = FRACTION) -> float:
    """Optimisation steps until the held-out (inner split) F1pn first reaches `fraction` of the run's own best,
    from a run's `history` (one dict per evaluation with `step` and `held_f1pn`). NaN when there is no
    evaluation or the best is 0 (a run that never predicts a polar class right has no curve to climb)."""
    h = pd.DataFrame(list(history))
    if h.empty or not h["held_f1pn"].max() > 0:
        return float("nan")
    return float(h.loc[h["held_f1pn"] >= fraction * h["held_f1pn"].max(), "step"].min())


def run_name(prof, k: int, rate: float, seed: int) -> str:
    return f"04/k{k}-seed{seed}" if rate == prof.train.msd_rate else f"04/k{k}-rate{rate:g}-seed{seed}"


def run_all(study) -> dict:
    """Read every (K, rate, seed) run of the plan (`04/...`); tables for the chapter."""
    from .. import plan

    prof, val = study.prof, study.val
    y_val = val["label"].to_numpy()
    seeds = plan.msd_seeds(prof)
    folds = list(range(prof.msd_folds))
    records, curves, hist, logits = [], [], [], {}
    for k, rate in plan.msd_settings(prof):
        for seed in seeds:
            name = run_name(prof, k, rate, seed)
            res, cfg = study.run(name), plan.get(prof, name).cfg
            logits[(k, rate, seed)] = res.ensemble("validation")
            for r in res.runs:
                h = r["history"]
                per_epoch = round(h[-1]["step"] / h[-1]["epoch"]) if h else np.nan
                records.append(
                    {
                        "K": k,
                        "rate": rate,
                        "seed": seed,
                        "fold": r["fold"],
                        "label": study.label(name),
                        "steps": r["steps"],
                        "planned_steps": per_epoch * cfg.epochs,
                        "stopped_early": bool(r["steps"] < per_epoch * cfg.epochs),
                        "evaluations": len(h),
                        "best_step": r["best_step"],
                        "best_held_f1pn": max((e["held_f1pn"] for e in h), default=np.nan),
                        "steps_to_95": steps_to_fraction(h),
                        "seconds_per_step": (r["seconds"] - r["eval_seconds"]) / r["steps"],
                        "val_f1pn": f1pn(y_val, to_labels(logits[(k, rate, seed)])),
                    }
                )
                curves += [
                    {"K": k, "rate": rate, "seed": seed, "fold": r["fold"], "step": i + 1, "loss": v}
                    for i, v in enumerate(r["step_loss"])
                ]
                hist += [
                    {"K": k, "rate": rate, "seed": seed, "fold": r["fold"], "eval": i, **e} for i, e in enumerate(h)
                ]
    return {
        "runs": pd.DataFrame(records),
        "curves": pd.DataFrame(curves),
        "hist": pd.DataFrame(hist),
        "logits": logits,
        "seeds": seeds,
        "folds": folds,
    }


def iterations_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (K, rate): steps to 95% of the run's own best held-out F1pn over seeds (and folds): mean, min, max;
    the same in seconds of training (steps x the run's seconds per step); runs that stopped early."""
    r = runs.assign(seconds_to_95=runs["steps_to_95"] * runs["seconds_per_step"])
    g = r.groupby(["K", "rate"])
    return pd.DataFrame(
        {
            "runs": g.size(),
            "steps_to_95_mean": g["steps_to_95"].mean(),
            "steps_to_95_min": g["steps_to_95"].min(),
            "steps_to_95_max": g["steps_to_95"].max(),
            "seconds_to_95_mean": g["seconds_to_95"].mean(),
            "best_held_f1pn_mean": g["best_held_f1pn"].mean(),
            "steps": g["steps"].max(),
            "stopped_early": g["stopped_early"].sum(),
        }
    ).reset_index()


def iterations_difference(runs: pd.DataFrame, rate: float, k_a: int = 5, k_b: int = 1) -> dict:
    """Steps to 95%, K=a minus K=b, paired by seed (and fold): the per-seed differences, their mean, min, max."""
    r = runs[runs["rate"] == rate].set_index(["seed", "fold", "K"])["steps_to_95"].unstack("K")
    d = (r[k_a] - r[k_b]).dropna()
    over = over_trainings(d) if len(d) else {"lo": float("nan"), "hi": float("nan")}
    return {
        "lo": over["lo"],  # a 95% t-interval over seeds
        "hi": over["hi"],
        "per_seed": {
            f"seed {s}" + (f", fold {f}" if r.index.get_level_values("fold").nunique() > 1 else ""): v
            for (s, f), v in d.items()
        },
        "mean": float(d.mean()) if len(d) else float("nan"),
        "min": float(d.min()) if len(d) else float("nan"),
        "max": float(d.max()) if len(d) else float("nan"),
        "n": len(d),
        "mean_b": float(r[k_b].mean()),
        "mean_a": float(r[k_a].mean()),
        "k_a": k_a,
        "k_b": k_b,
    }


def summary(study, out: dict) -> pd.DataFrame:
    """Per setting: seed mean ± sd of validation F1pn, the seed ensemble with its clustered CI, cost per step."""
    from ..metrics import bootstrap_ci, sentence_groups

    val, n = study.val, study.prof.bootstrap
    y, groups = val["label"].to_numpy(), sentence_groups(val)
    rows = []
    for (k, rate), g in out["runs"].groupby(["K", "rate"]):
        p = to_labels(np.mean([out["logits"][(k, rate, s)] for s in out["seeds"]], axis=0))
        lo, hi = bootstrap_ci(y, p, groups=groups, n=n)
        rows.append(
            {
                "K": int(k),
                "rate": rate,
                "val_f1pn_mean": g["val_f1pn"].mean(),
                "val_f1pn_sd": g["val_f1pn"].std(),
                "seed_ensemble_f1pn": f1pn(y, p),
                "f1pn_lo": lo,
                "f1pn_hi": hi,
                "seconds_per_step": g["seconds_per_step"].mean(),
                "seconds_per_step_sd": g["seconds_per_step"].std(),
            }
        )
    return pd.DataFrame(rows)


def k_difference(study, out: dict, k_a: int = 5, k_b: int = 1) -> dict:
    """K=a minus K=b: per seed (training spread) and for the seed ensembles (paired clustered CI)."""
    from .study import paired

    rate = study.prof.train.msd_rate
    y = study.val["label"].to_numpy()
    per_seed = [
        f1pn(y, to_labels(out["logits"][(k_a, rate, s)])) - f1pn(y, to_labels(out["logits"][(k_b, rate, s)]))
        for s in out["seeds"]
    ]
    ens = {k: to_labels(np.mean([out["logits"][(k, rate, s)] for s in out["seeds"]], axis=0)) for k in (k_a, k_b)}
    d = paired(study.val, ens[k_a], ens[k_b], study.prof.bootstrap, f"K={k_a} - K={k_b}")
    over = over_trainings(per_seed)
    return {
        "per_seed": per_seed,
        "over_seeds": [over["mean"], over["lo"], over["hi"]],  # mean with a 95% t-interval over seeds
        "per_seed_mean_sd": [
            float(np.mean(per_seed)),
            float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
        ],
        "paired": d,
    }


def entity_split(study, out: dict, k_a: int = 5, k_b: int = 1) -> pd.DataFrame:
    """The paper's open question on unseen entities: validation F1pn on rows whose entity string occurs in train
    and on rows whose does not, per K: each seed's model, and K=a minus K=b paired by seed with a 95% t-interval
    over seeds."""
    rate, val = study.prof.train.msd_rate, study.val
    y, seen = val["label"].to_numpy(), val["entity_seen_in_train"].to_numpy(bool)
    rows = []
    for name, m in (("seen entity", seen), ("unseen entity", ~seen)):
        f = {(k, s): f1pn(y[m], to_labels(out["logits"][(k, rate, s)])[m]) for k in (k_a, k_b) for s in out["seeds"]}
        for k in (k_a, k_b):
            v = [f[k, s] for s in out["seeds"]]
            rows.append(
                {
                    "rows": name,
                    "n": int(m.sum()),
                    "K": f"K={k}",
                    "mean": float(np.mean(v)),
                    "min": min(v),
                    "max": max(v),
                    "lo": np.nan,
                    "hi": np.nan,
                }
            )
        d = over_trainings([f[k_a, s] - f[k_b, s] for s in out["seeds"]])
        rows.append(
            {
                "rows": name,
                "n": int(m.sum()),
                "K": f"K={k_a} - K={k_b}",
                "mean": d["mean"],
                "min": d["min"],
                "max": d["max"],
                "lo": d["lo"],
                "hi": d["hi"],
            }
        )
    return pd.DataFrame(rows)


def k_colors(ks) -> dict:
    """One colour per number of dropout samples K (a sequential palette: more samples, darker)."""
    import seaborn as sns

    ks = sorted(set(int(k) for k in ks))
    palette = sns.color_palette("flare", n_colors=max(2, len(ks)))
    return dict(zip(ks, palette[-len(ks) :]))


def _seed_mean(h: pd.DataFrame, x: str, y: str, key: str) -> pd.DataFrame:
    """Mean over runs of `y` at each `key` (evaluation index or step) that every run reached: cut at the shortest
    run, so the mean never averages a different number of runs."""
    last = h.groupby(["seed", "fold"])[key].max().min()
    return h[h[key] <= last].groupby(key).agg(x=(x, "mean"), y=(y, "mean")).reset_index()


def curves_figure(out: dict, rate: float, fraction: float = FRACTION):
    """Left: held-out (inner split) F1pn against the optimisation step, one thin line per seed, the seed mean bold
    (cut at the shortest run), each run's first evaluation at >= 95% of its own best marked; middle: the training
    loss the same way (20-step moving mean); right: steps to 95% per seed, with the mean of the seeds."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    h = out["hist"][out["hist"]["rate"] == rate]
    c = out["curves"][out["curves"]["rate"] == rate].sort_values("step").copy()
    c["loss"] = c.groupby(["K", "seed", "fold"])["loss"].transform(lambda s: s.rolling(20, min_periods=1).mean())
    runs = out["runs"][out["runs"]["rate"] == rate]
    ks = sorted(runs["K"].unique())
    colors = k_colors(ks)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1.4, 1.4, 1]})
    handles = []
    # equal curves stay visible: means beneath (the first K widest), seed runs on top, each narrower than the last
    keys = [(k, key) for k in ks for key, _ in h[h["K"] == k].groupby(["seed", "fold"])]
    thin = dict(zip(keys, np.linspace(1.9, 0.8, len(keys))))
    for i, k in enumerate(ks):
        hk, ck, rk = h[h["K"] == k], c[c["K"] == k], runs[runs["K"] == k]
        n = len(rk)
        m = _seed_mean(hk, "step", "held_f1pn", "eval")
        axes[0].plot(m["x"], m["y"], color=colors[k], lw=2.6 + 0.6 * (len(ks) - 1 - i), zorder=2)
        m = _seed_mean(ck, "step", "loss", "step")
        axes[1].plot(m["x"], m["y"], color=colors[k], lw=2.6 + 0.6 * (len(ks) - 1 - i), zorder=2)
        for key, g in hk.groupby(["seed", "fold"]):
            axes[0].plot(g["step"], g["held_f1pn"], color=colors[k], lw=thin[(k, key)], alpha=0.45, zorder=3)
        for key, g in ck.groupby(["seed", "fold"]):
            axes[1].plot(g["step"], g["loss"], color=colors[k], lw=thin.get((k, key), 0.8), alpha=0.45, zorder=3)
        reach = hk.merge(rk[["seed", "fold", "steps_to_95"]], on=["seed", "fold"])
        reach = reach[reach["step"] == reach["steps_to_95"]]
        axes[0].scatter(reach["step"], reach["held_f1pn"], color=colors[k], edgecolor="black", s=28, zorder=3)
        x = ks.index(k) + np.linspace(-0.12, 0.12, n) if n > 1 else np.array([ks.index(k)])
        axes[2].scatter(x, rk["steps_to_95"], color=colors[k], edgecolor="black", s=30, zorder=3)
        axes[2].plot([ks.index(k) - 0.25, ks.index(k) + 0.25], [rk["steps_to_95"].mean()] * 2, color=colors[k], lw=2.6)
        handles.append(Line2D([], [], color=colors[k], lw=2.6, label=f"K = {k}: mean of {n} runs (seeds)"))
        handles.append(Line2D([], [], color=colors[k], lw=0.8, alpha=0.6, label=f"K = {k}: one seed"))
    handles.append(
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            mfc="white",
            mec="black",
            label=f"first evaluation at ≥ {fraction:.0%} of the run's best",
        )
    )
    axes[0].set(
        xlabel="optimisation step",
        ylabel="held-out (inner split) F1pn",
        title=f"Held-out F1pn, evaluated every {count(_eval_every(h), 'step').removeprefix('1 ')}",
    )
    axes[1].set(xlabel="optimisation step", ylabel="training loss (20-step moving mean)", title="Training loss")
    axes[2].set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
    axes[2].set_xlim(-0.6, len(ks) - 0.4)
    axes[2].set(
        xlabel="dropout samples", ylabel=f"steps to {fraction:.0%} of the run's best", title="Steps to 95% (bar: mean)"
    )
    legend_below(fig, handles)
    fig.suptitle(f"Multi-sample dropout, rate {rate:g}: learning curves and the iterations they need", fontsize=11)
    return fig


def _eval_every(h: pd.DataFrame) -> int | str:
    gaps = h.sort_values("step").groupby(["K", "seed", "fold"])["step"].diff().dropna()
    return "?" if gaps.empty else int(gaps.mode().iloc[0])


def summary_figure(out: dict, summ: pd.DataFrame):
    """Left: validation F1pn per seed and of the seed ensemble (95% CI); right: seconds per step per seed."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    many = summ["rate"].nunique() > 1
    label = lambda k, rate: f"K = {int(k)}" + (f", rate {rate:g}" if many else "")  # noqa: E731
    names = [label(r.K, r.rate) for r in summ.itertuples()]
    colors = k_colors(summ["K"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for i, r in enumerate(summ.itertuples()):
        runs = out["runs"][(out["runs"]["K"] == r.K) & (out["runs"]["rate"] == r.rate)]
        x = i + np.linspace(-0.15, 0.05, len(runs)) if len(runs) > 1 else np.array([i - 0.05])
        col = colors[int(r.K)]
        axes[0].scatter(x, runs["val_f1pn"], color=col, edgecolor="black", s=30, zorder=3)
        axes[0].plot([i - 0.25, i + 0.1], [runs["val_f1pn"].mean()] * 2, color=col, lw=2.6)
        err = [[r.seed_ensemble_f1pn - r.f1pn_lo], [r.f1pn_hi - r.seed_ensemble_f1pn]]
        axes[0].errorbar(i + 0.2, r.seed_ensemble_f1pn, yerr=err, fmt="*", color=col, mec="black", ms=13, capsize=3)
        axes[1].scatter(x, runs["seconds_per_step"], color=col, edgecolor="black", s=30, zorder=3)
        axes[1].plot([i - 0.25, i + 0.25], [runs["seconds_per_step"].mean()] * 2, color=col, lw=2.6)
    for ax in axes:
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel("")
    axes[0].set(title="Validation F1pn", ylabel="F1pn (validation)")
    axes[1].set(title="Training cost", ylabel="seconds per training step", ylim=(0, None))
    n = out["runs"].groupby(["K", "rate"]).size().max()
    handles = [
        Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="one seed's model"),
        Line2D([], [], ls="", marker="*", mfc="white", mec="black", ms=12, label="seed ensemble, 95% CI"),
        Line2D([], [], color="black", lw=2.6, label=f"mean of the {n} seeds"),
    ]
    legend_below(fig, handles)
    return fig


def answer(
    summ: pd.DataFrame,
    diff: dict,
    rate: float,
    n_seeds: int,
    iters: pd.DataFrame,
    idiff: dict,
    ents=None,
    mode: str | None = None,
) -> str:
    from .study import verdict

    s = summ[summ["rate"] == rate].set_index("K")
    ps = diff["per_seed"]
    sd = np.std(ps, ddof=1) if len(ps) > 1 else float("nan")
    lines = [
        f"**Better generalisation?** Validation F1pn{f' of the {mode} models' if mode else ''}, mean ± sd over "
        f"{n_seeds} seeds: "
        + ", ".join(f"K = {k}: {r.val_f1pn_mean:.3f} ± {r.val_f1pn_sd:.3f}" for k, r in s.iterrows())
        + "."
    ]
    lines += [f"- {verdict(r)}" for _, r in diff["paired"].iterrows()]
    m, lo, hi = diff["over_seeds"]
    lines.append(
        "- per seed, K = 5 − K = 1: "
        + ", ".join(f"{d:+.3f}" for d in ps)
        + f" (mean {np.mean(ps):+.3f}, sd {sd:.3f}; 95% t-interval over seeds [{lo:+.3f}, {hi:+.3f}]): the spread "
        + "between trainings "
        + (
            "is as large as the difference, so seeds decide more than K"
            if not abs(np.mean(ps)) > sd
            else "is smaller than the difference"
        )
        + f" (the t-interval over seeds {'excludes' if lo > 0 or hi < 0 else 'includes'} 0)"
    )
    if 1 in s.index and 5 in s.index:
        ratio = s.loc[5, "seconds_per_step"] / s.loc[1, "seconds_per_step"]
        sd = {k: s.loc[k, "seconds_per_step_sd"] for k in (1, 5)}  # NaN with one seed
        per = "; ".join(
            f"K = {k}: {s.loc[k, 'seconds_per_step']:.3f}" + (f" ± {sd[k]:.3f}" if sd[k] == sd[k] else "")
            for k in (1, 5)
        )
        lines.append(
            f"\n**Cost.** A K = 5 step takes {ratio:.2f}× a K = 1 step (only the small head repeats; seconds per "
            f"training step, mean ± sd over the seeds' runs: {per})."
        )
    if ents is not None:
        e = ents[ents["K"].str.contains(" - ")].set_index("rows")
        lines.append(
            "\n**Unseen entities** (the paper's open question): K = 5 − K = 1 per seed, mean with a 95% t-interval "
            "over seeds, on validation rows whose entity string "
            + "; ".join(
                f"{'occurs' if r == 'seen entity' else 'never occurs'} in train (n = {v.n}): {v['mean']:+.3f} "
                f"[{v.lo:+.3f}, {v.hi:+.3f}]"
                for r, v in e.iterrows()
            )
            + "."
        )
    lines.append(iterations_answer(iters[iters["rate"] == rate], idiff))
    return "\n".join(lines)


def iterations_answer(iters: pd.DataFrame, d: dict, fraction: float = FRACTION) -> str:
    """The paper's claim, answered: does K = a need fewer steps to reach `fraction` of its own best held-out F1pn
    than K = b, by how much, with the spread over seeds (and how few seeds that is)."""
    it = iters.set_index("K")
    ka, kb, n = d["k_a"], d["k_b"], d["n"]
    stats = "; ".join(
        f"K = {k}: mean {r.steps_to_95_mean:.1f} steps (min {r.steps_to_95_min:.0f}, max {r.steps_to_95_max:.0f}, "
        f"{int(r.runs)} runs)"
        for k, r in it.iterrows()
    )
    text = (
        f"\n**Fewer iterations?** Steps until the held-out (inner split) F1pn first reaches {fraction:.0%} of the "
        f"run's own best: {stats}."
    )
    early = int(it["stopped_early"].sum())
    stop = f" {count(early, 'run')} stopped early (patience): its best is from before the stop." if early else ""
    if n == 0 or not np.isfinite(d["mean"]):
        return text + " No seed has both settings with a measurable curve: not answerable from these runs." + stop
    mean, lo, hi = d["mean"], d["min"], d["max"]
    per = ", ".join(f"{v:+.0f}" for v in d["per_seed"].values())
    text += f" Paired by seed, K = {ka} − K = {kb}: {per} steps (mean {mean:+.1f}, min {lo:+.0f}, max {hi:+.0f}). "
    if mean == 0:
        text += f"On average K = {ka} needs as many steps as K = {kb}"
    else:
        share = f", {abs(mean) / d['mean_b']:.0%} of K = {kb}'s mean" if d["mean_b"] > 0 else ""
        text += f"On average K = {ka} needs {abs(mean):.1f} {'fewer' if mean < 0 else 'more'} steps{share}"
    if lo == hi == 0:
        text += "; the same for every seed"
    elif hi < 0:
        text += f"; fewer for every one of the {count(n, 'seed')}"
    elif lo > 0:
        text += f"; more for every one of the {count(n, 'seed')}"
    elif hi <= 0 or lo >= 0:  # one direction, with ties
        ties = "fewer or as many" if hi <= 0 else "more or as many"
        text += f"; {ties} for every one of the {count(n, 'seed')} (per seed {lo:+.0f} to {hi:+.0f})"
    else:
        text += f"; the per-seed differences run from {lo:+.0f} to {hi:+.0f}, so no consistent direction"
    if n > 1 and np.isfinite(d["lo"]):
        sure = "excludes 0" if d["lo"] > 0 or d["hi"] < 0 else "includes 0"
        text += f"; 95% t-interval over the {count(n, 'seed')} [{d['lo']:+.1f}, {d['hi']:+.1f}] ({sure})"
    else:
        text += f"; with only {count(n, 'seed')} there is no interval"
    return text + "." + stop
