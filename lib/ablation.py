"""Chapter 04: the multi-sample dropout ablation (K dropout masks over one representation).

Runs are ordinary fold runs of the plan (`04/k<K>-seed<s>`) that differ in `msd_k` / `msd_rate` / `seed`,
evaluated densely on the inner split and never stopped early, so the learning curve is what is read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import f1pn, to_labels


def run_all(study) -> dict:
    """Read every (K, rate, seed) run of the plan (`04/...`); tables for the chapter."""
    from . import plan

    prof, val = study.prof, study.val
    y_val = val["label"].to_numpy()
    seeds = plan.msd_seeds(prof)
    folds = list(range(prof.msd_folds))
    records, curves, hist, logits = [], [], [], {}
    for k, rate in plan.msd_settings(prof):
        for seed in seeds:
            name = f"04/k{k}-seed{seed}" if rate == prof.train.msd_rate else f"04/k{k}-rate{rate:g}-seed{seed}"
            res = study.run(name)
            logits[(k, rate, seed)] = res.ensemble("validation")
            for r in res.runs:
                records.append(
                    {
                        "K": k,
                        "rate": rate,
                        "seed": seed,
                        "fold": r["fold"],
                        "steps": r["steps"],
                        "best_step": r["best_step"],
                        "seconds_per_step": (r["seconds"] - r["eval_seconds"]) / r["steps"],
                        "val_f1pn": f1pn(y_val, to_labels(logits[(k, rate, seed)])),
                    }
                )
                curves += [
                    {"K": k, "rate": rate, "seed": seed, "step": i + 1, "loss": v} for i, v in enumerate(r["step_loss"])
                ]
                hist += [{"K": k, "rate": rate, "seed": seed, **h} for h in r["history"]]
    return {
        "runs": pd.DataFrame(records),
        "curves": pd.DataFrame(curves),
        "hist": pd.DataFrame(hist),
        "logits": logits,
        "seeds": seeds,
        "folds": folds,
    }


def summary(study, out: dict) -> pd.DataFrame:
    """Per setting: seed mean ± sd of validation F1pn, the seed ensemble with its clustered CI, cost per step."""
    from .metrics import bootstrap_ci, sentence_groups

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
    return {
        "per_seed": per_seed,
        "per_seed_mean_sd": [
            float(np.mean(per_seed)),
            float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
        ],
        "paired": d,
    }


def curves_figure(out: dict, rate: float):
    import matplotlib.pyplot as plt
    import seaborn as sns

    c = out["curves"][out["curves"]["rate"] == rate].sort_values("step").copy()
    c["loss"] = c.groupby(["K", "seed"])["loss"].transform(lambda s: s.rolling(20, min_periods=1).mean())
    c["K"] = c["K"].astype(int).astype(str)
    h = out["hist"][out["hist"]["rate"] == rate].copy()
    h["K"] = h["K"].astype(int).astype(str)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    sns.lineplot(c, x="step", y="loss", hue="K", errorbar="sd", ax=axes[0])
    axes[0].set_title(f"Training loss, 20-step mean (rate {rate:g}; band: ±1 sd over seeds)")
    sns.lineplot(h, x="step", y="held_f1pn", hue="K", errorbar="sd", marker="o", ax=axes[1])
    axes[1].set(title="Early-stopping (inner split) F1pn", ylabel="F1pn")
    return fig


def summary_figure(out: dict, summ: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    label = lambda r: f"K={int(r.K)}" + (f", rate {r.rate:g}" if summ["rate"].nunique() > 1 else "")  # noqa: E731
    names = [label(r) for r in summ.itertuples()]
    runs = out["runs"].assign(setting=[label(r) for r in out["runs"].itertuples()])
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    sns.stripplot(runs, x="setting", y="val_f1pn", order=names, color="black", size=6, ax=axes[0], label="one seed")
    x = np.arange(len(summ))
    axes[0].errorbar(
        x + 0.15,
        summ["seed_ensemble_f1pn"],
        yerr=[summ["seed_ensemble_f1pn"] - summ["f1pn_lo"], summ["f1pn_hi"] - summ["seed_ensemble_f1pn"]],
        fmt="*",
        color="tab:red",
        ms=12,
        capsize=3,
        label="seed ensemble (95% CI)",
    )
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].legend(handles[-2:], labels[-2:], fontsize=8)
    axes[0].set(title="Validation F1pn", xlabel="", ylabel="F1pn")
    axes[1].errorbar(x, summ["seconds_per_step"], yerr=summ["seconds_per_step_sd"], fmt="o", capsize=4)
    axes[1].set_xticks(x, names)
    axes[1].set(title="Seconds per training step (mean ± sd over seeds)", ylabel="s / step", ylim=(0, None))
    return fig


def answer(summ: pd.DataFrame, diff: dict, rate: float, n_seeds: int) -> str:
    from .study import verdict

    s = summ[summ["rate"] == rate].set_index("K")
    ps = diff["per_seed"]
    lines = [
        f"**Better generalisation?** Validation F1pn, mean ± sd over {n_seeds} seeds: "
        + ", ".join(f"K = {k}: {r.val_f1pn_mean:.3f} ± {r.val_f1pn_sd:.3f}" for k, r in s.iterrows())
        + "."
    ]
    lines += [f"- {verdict(r)}" for _, r in diff["paired"].iterrows()]
    lines.append(
        "- per seed, K = 5 − K = 1: "
        + ", ".join(f"{d:+.3f}" for d in ps)
        + f" (mean {np.mean(ps):+.3f}, sd {np.std(ps, ddof=1):.3f}): the spread between trainings "
        + (
            "is as large as the difference, so seeds decide more than K"
            if abs(np.mean(ps)) < np.std(ps, ddof=1)
            else "is smaller than the difference"
        )
    )
    if 1 in s.index and 5 in s.index:
        lines.append(
            f"\n**Cost.** A K = 5 step takes {s.loc[5, 'seconds_per_step'] / s.loc[1, 'seconds_per_step']:.2f}× a K = 1 step (only the small head repeats)."
        )
    lines.append(
        "\n**Fewer iterations?** Not measured: the early-stopping F1pn is evaluated twice per epoch, too coarse to resolve a difference in steps;"
        " the training-loss curves above show how fast each setting descends."
    )
    return "\n".join(lines)
