"""Chapter 05's bookkeeping over the SBERT runs of `lib.sbert`: predictions per model (`collect`), scores and the
OOF choice of the best bi-encoder, paired comparisons, retrieval metrics, the cost table, figures and the answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve

from ...config import LABEL2ID, LABELS
from ...folds import subset_mask
from ...metrics import count, draw_resamples, fmt, score, score_subsets, sentence_groups, softmax, to_labels
from ...sbert import POLAR, VARIANTS, best_f1_threshold, polar_predict

FINE_TUNED, FROZEN, CROSS = "bi-encoder, fine-tuned", "bi-encoder, frozen", "cross-encoder"
E5_FROZEN = "pretrained e5 + LR"
NAMES = {  # model key -> (display name, family); a run's display name is its plan label (`labels`)
    "HAMAM": ("HAMAM", CROSS),
    "CLS cross-encoder": ("CLS cross-encoder", CROSS),
    "softmax-entity": ("SBERT softmax-entity", FINE_TUNED),
    "softmax-plain": ("SBERT softmax-plain", FINE_TUNED),
    "softmax-dummy": ("SBERT softmax-dummy", FINE_TUNED),
    "cosine-anchors": ("SBERT cosine-anchors", FINE_TUNED),
    E5_FROZEN: ("e5 frozen + LR", FROZEN),
}
RUNS = {"HAMAM": "02/hamam", "CLS cross-encoder": "05/cls", **{v: f"05/sbert-{v}" for v in VARIANTS}}


# what each SBERT variant feeds the model (the Method lists only the variants that ran)
VARIANT_TEXT = {
    "softmax-entity": "`SoftmaxLoss` (a linear classifier over (u, v, |u − v|)) with u = the marked sentence and "
    "v = the entity string: the standard SBERT set-up",
    "softmax-plain": "`SoftmaxLoss` with u = the plain sentence (no markers) and v = the entity: the cacheable "
    "input that bi-encoders are for",
    "softmax-dummy": "`SoftmaxLoss` with u = the marked sentence and v = a fixed dummy text: the trick reported "
    "for reviews",
    "cosine-anchors": "`CosineSimilarityLoss` in a retrieval framing: each marked sentence pulled towards a "
    '"positive" or "negative" anchor text; a class fires above a cosine threshold chosen on OOF rows (for the '
    "OOF labels cross-fitted over two halves of the OOF sentences, so the OOF score is not tuned on itself)",
}


def sbert_method(variants, epochs: int, recipe_epochs: int) -> str:
    """The fine-tuned SBERT part of the Method, for the variants that ran (none: says so)."""
    if not variants:
        return "*Fine-tuned SBERT*: no variant is fine-tuned in this profile; the bi-encoder side is e5 frozen + LR."
    items = "\n".join(f"- {NAMES[v][0]}: {VARIANT_TEXT[v]}." for v in variants)
    return (
        f"*Fine-tuned SBERT* ({count(len(variants), 'variant')} in this profile, {'each ' * (len(variants) > 1)}for "
        f"{count(epochs, 'epoch')} against the cross-encoders' {recipe_epochs} with early stopping), the entity "
        "made visible by marker tokens `<e>…</e>` around its span, placed by character offsets:\n" + items
    )


def labels(prof=None) -> dict:
    """Model key -> its one display name: the plan label of its run (`lib.plan`) where `prof` has that run
    ("HAMAM e5-small", "CLS cross-encoder", "SBERT softmax-entity"), else NAMES' name."""
    out = {k: name for k, (name, _) in NAMES.items()}
    if prof is not None:
        from ... import plan

        have = {r.name: r.label for r in plan.runs(prof)}
        out.update({k: have[run] for k, run in RUNS.items() if run in have})
    return out


def _labels(given) -> dict:
    return {**labels(), **(given or {})}


SLUGS = {"HAMAM": "hamam", "CLS cross-encoder": "cls", E5_FROZEN: "pretrained_e5_frozen_lr"}


def slug(name: str) -> str:
    """Model name -> key for results.json: 'softmax-entity' -> 'sbert_softmax_entity'."""
    return SLUGS.get(name) or "sbert_" + name.replace("-", "_")


@dataclass
class Pred:
    """One model's labels on validation and on the OOF rows (train rows of the folds run), and its
    (n, 2) validation scores for the POLAR classes (probabilities or cosines)."""

    name: str
    val: np.ndarray
    oof: np.ndarray
    val_scores: np.ndarray

    @property
    def family(self) -> str:
        return NAMES[self.name][1]


def oof_rows(train: pd.DataFrame, folds) -> np.ndarray:
    return np.isin(train["fold"].to_numpy(), list(folds))


def best_f1_threshold_or_never(scores, y_binary) -> float:
    """`best_f1_threshold`'s threshold, or +inf (never fire) when there is no positive row to fit on."""
    return best_f1_threshold(scores, y_binary)[1] if np.any(y_binary) else np.inf


def crossfit_polar(scores: np.ndarray, y: np.ndarray, groups, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels for rows whose thresholds were chosen without them: sentences are split in two halves,
    each half is labelled with the best-F1 thresholds of the other. Also returns the thresholds of
    all rows (what validation is labelled with)."""
    codes = pd.factorize(pd.Series(list(groups)))[0]
    half = np.random.default_rng(seed).permutation(codes.max() + 1)[codes] % 2 == 0
    fit = lambda m: [best_f1_threshold_or_never(scores[m, j], y[m] == c) for j, c in enumerate(POLAR)]  # noqa: E731
    out = np.zeros(len(y), dtype=int)
    for h in (half, ~half):
        out[h] = polar_predict(scores[h], fit(~h))
    return out, np.asarray(fit(np.ones(len(y), bool)))


def collect(
    cross: dict, bi: dict, frozen: dict | None, train: pd.DataFrame, folds, seed: int = 0
) -> tuple[dict[str, Pred], dict]:
    """Pred per model, from the cross-encoders' KFoldResults (ensembles of `folds` only), the SBERT
    `run_folds` outputs and `frozen_lr_folds`'s. Classifiers predict the argmax; the retrieval
    variant thresholds its cosines (chosen on OOF rows only, cross-fitted for the OOF labels).
    Returns (preds in NAMES order, the retrieval thresholds per POLAR class, or {})."""
    rows = oof_rows(train, folds)
    polar_cols = [LABEL2ID[c] for c in POLAR]
    out, thresholds = {}, {}
    for name, res in cross.items():
        z = res.ensemble("validation", folds)
        out[name] = Pred(name, to_labels(z), to_labels(res.oof[rows]), softmax(z)[:, polar_cols])
    for v, r in bi.items():
        z = r["validation"].mean(0)
        if VARIANTS[v][0] == "softmax":
            out[v] = Pred(v, to_labels(z), to_labels(r["oof"][rows]), softmax(z)[:, polar_cols])
        else:
            oof_labels, t = crossfit_polar(
                r["oof"][rows], train["label"].to_numpy()[rows], train["sentence"].to_numpy()[rows], seed
            )
            out[v], thresholds = Pred(v, polar_predict(z, t), oof_labels, z), dict(zip(POLAR, t))
    if frozen is not None:
        out[E5_FROZEN] = Pred(
            E5_FROZEN,
            to_labels(frozen["validation"]),
            to_labels(frozen["oof"][rows]),
            frozen["validation"][:, polar_cols],
        )
    return {n: out[n] for n in NAMES if n in out}, thresholds


# --- scores -------------------------------------------------------------------------------------


def f1_resampled(y, p, counts: np.ndarray, inverse, labels) -> np.ndarray:
    """Mean per-class F1 over `labels` for every bootstrap resample at once (`counts`, `inverse` as
    from metrics.draw_resamples); labels (-1, 0, 1) give macro F1, (1, -1) F1pn."""
    y, p, counts, inverse = np.asarray(y), np.asarray(p), np.atleast_2d(counts), np.asarray(inverse)
    k, f1 = counts.shape[1], []
    for c in labels:
        tp = counts @ np.bincount(inverse, weights=(y == c) & (p == c), minlength=k)
        denom = counts @ np.bincount(inverse, weights=(y == c).astype(float) + (p == c), minlength=k)
        f1.append(np.divide(2 * tp, denom, out=np.zeros(len(counts)), where=denom > 0))
    return np.mean(f1, axis=0)


def macro_f1_ci(y, p, *, groups, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """`metrics.bootstrap_ci(..., metric=macro_f1)` with the same draws, vectorised."""
    counts, inverse = draw_resamples(groups, len(y), n, seed)
    stats = f1_resampled(y, p, counts, inverse, LABELS)
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def score_table(val: pd.DataFrame, train: pd.DataFrame, preds: dict[str, Pred], folds, n_boot: int) -> pd.DataFrame:
    """Per model: validation all / seen / unseen and train OOF (rows of `folds`), F1pn and macro F1
    with sentence-clustered 95% CIs."""
    rows = oof_rows(train, folds)
    y_oof, g_oof = train["label"].to_numpy()[rows], sentence_groups(train)[rows]
    y_val, g_val = val["label"].to_numpy(), sentence_groups(val)
    out = []
    for name, p in preds.items():
        t = score_subsets(val, p.val, n_boot, model=name, family=p.family, split="validation")
        ci = [
            macro_f1_ci(y_val[m], p.val[m], groups=g_val[m], n=n_boot)
            for m in (subset_mask(val, s) for s in t["subset"])
        ]
        t["macro_f1_lo"], t["macro_f1_hi"] = [c[0] for c in ci], [c[1] for c in ci]
        oof = {
            "model": name,
            "family": p.family,
            "split": "train OOF",
            "subset": "all",
            **score(y_oof, p.oof, n_boot, groups=g_oof),
        }
        oof["macro_f1_lo"], oof["macro_f1_hi"] = macro_f1_ci(y_oof, p.oof, groups=g_oof, n=n_boot)
        out += t.to_dict("records") + [oof]
    return pd.DataFrame(out)


def best_on_oof(scores: pd.DataFrame, families=(FINE_TUNED, FROZEN)) -> str:
    """The bi-encoder with the best F1pn on the OOF rows: chosen without looking at validation."""
    oof = scores[(scores["split"] == "train OOF") & scores["family"].isin(families)]
    return str(oof.loc[oof["f1pn"].idxmax(), "model"])


def get(scores: pd.DataFrame, model: str, subset="all", split="validation", col="f1pn") -> list[float]:
    """[value, lo, hi] of `col` (f1pn or macro_f1) for one model, split and subset."""
    r = scores[(scores["model"] == model) & (scores["subset"] == subset) & (scores["split"] == split)].iloc[0]
    return [float(r[col]), float(r[f"{col}_lo"]), float(r[f"{col}_hi"])]


def comparisons(preds: dict[str, Pred], best: str) -> list[tuple[str, str, str]]:
    """(a, b, key) pairs to compare, a - b: the cross-encoders against the chosen bi-encoder, HAMAM
    against the CLS cross-encoder, fine-tuning against the frozen pretrained encoder, and what
    the cacheable input and the dummy trick cost against the standard set-up (when they ran)."""
    out = [
        ("HAMAM", best, "hamam_minus_best_sbert"),
        ("CLS cross-encoder", best, "cls_minus_best_sbert"),
        ("HAMAM", "CLS cross-encoder", "hamam_minus_cls"),
    ]
    tuned = [n for n, p in preds.items() if p.family == FINE_TUNED]
    best_tuned = best if best in tuned else None
    if tuned and E5_FROZEN in preds:
        best_tuned = best_tuned or tuned[0]
        out.append((best_tuned, E5_FROZEN, "fine_tuned_minus_frozen_e5"))
    for v, key in (("softmax-plain", "plain_minus_marked"), ("softmax-dummy", "dummy_minus_entity")):
        if v in preds and "softmax-entity" in preds:
            out.append((v, "softmax-entity", key))
    return [(a, b, k) for a, b, k in out if a in preds and b in preds and a != b]


def retrieval_table(val: pd.DataFrame, preds: dict[str, Pred]) -> pd.DataFrame:
    """Per model, class and subset: average precision of its class scores (no threshold) and F1 of
    its three-class labels for that class, beside the class's base rate."""
    y = val["label"].to_numpy()
    return pd.DataFrame(
        [
            {
                "model": name,
                "class": {-1: "negative", 1: "positive"}[c],
                "subset": sub,
                "ap": average_precision_score(y[m] == c, p.val_scores[m, j]),
                "f1": f1_score(y[m] == c, p.val[m] == c, zero_division=0),
                "base_rate": float(np.mean(y[m] == c)),
            }
            for name, p in preds.items()
            for j, c in enumerate(POLAR)
            for sub in ("all", "unseen")
            for m in [subset_mask(val, sub)]
        ]
    )


# --- the time budget: which SBERT variants to fine-tune -------------------------------------------


def plot_scores(axes, scores: pd.DataFrame, best: str, names: dict | None = None):
    """Validation F1pn and macro F1 (all / unseen-sentence rows) per model with CIs, bars in the subsets' colours;
    the OOF-chosen bi-encoder marked ★ after its unchanged name. `names`: model key -> display name."""
    from .. import plots

    names = _labels(names)
    shown = scores[(scores["split"] == "validation") & scores["subset"].isin(["all", "unseen"])].copy()
    shown["name"] = shown["model"].map(
        lambda n: names[n].replace(" ", "\n", 1) + (plots.BEST_MARK if n == best else "")
    )
    for ax, col in zip(axes, ("f1pn", "macro_f1")):
        plots.ci_bars(ax, shown, x="name", hue="subset", y=col, lo=f"{col}_lo", hi=f"{col}_hi")
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelsize=9)
    axes[0].set(title="Validation F1pn (official metric)", ylabel="F1pn (validation, 95% CI)")
    axes[1].set(title="Validation macro F1 (3 classes)", ylabel="macro F1 (validation, 95% CI)")


def plot_diffs(ax, diffs: pd.DataFrame, names: dict | None = None):
    """Paired differences a - b with their 95% CIs, one row per comparison and subset (colour: the subset's)."""
    from matplotlib.lines import Line2D

    from .. import plots

    names = _labels(names)
    d = diffs.iloc[::-1].reset_index(drop=True)
    for i, r in d.iterrows():
        ax.errorbar(
            r["diff"],
            i,
            xerr=[[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]],
            fmt="o",
            color=plots.split_color(r["subset"]),
            capsize=3,
        )
    ax.axvline(0, color="grey", lw=0.8)
    pair = lambda c: " − ".join(names.get(x, x) for x in c.split(" - "))  # noqa: E731
    ax.set_yticks(range(len(d)), [pair(r.comparison) for r in d.itertuples()], fontsize=9)
    ax.set_ylim(-0.6, len(d) - 0.4)
    ax.set_xlabel("F1pn difference a − b (validation; paired, sentence-clustered 95% CI)")
    subsets = list(dict.fromkeys(d["subset"]))
    handles = [
        Line2D([], [], ls="", marker="o", color=plots.split_color(s), label=plots.SUBSET_LABELS.get(s, s))
        for s in subsets
    ]
    ax.legend(handles=handles[::-1], title="validation rows", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_pr(axes, val: pd.DataFrame, preds: dict[str, Pred], models, thresholds: dict | None = None, names=None):
    """Per POLAR class: precision-recall curve of each model's class score over validation rows (in the model's
    colour), the class's base rate and, for the retrieval variant, its OOF-chosen operating point."""
    from .. import plots

    names = _labels(names)
    y = val["label"].to_numpy()
    for ax, (j, c) in zip(axes, enumerate(POLAR)):
        for name in models:
            s = preds[name].val_scores[:, j]
            prec, rec, _ = precision_recall_curve(y == c, s)
            ap = average_precision_score(y == c, s)
            ax.plot(rec, prec, color=plots.model_color(names[name]), label=f"{names[name]} (AP {ap:.2f})")
        if thresholds and "cosine-anchors" in preds:
            hit, pos = preds["cosine-anchors"].val_scores[:, j] >= thresholds[c], y == c
            ax.scatter(
                [(hit & pos).sum() / max(1, pos.sum())],
                [(hit & pos).sum() / max(1, hit.sum())],
                s=70,
                color="black",
                zorder=3,
                label=f"{names['cosine-anchors']} at the OOF threshold",
            )
        ax.axhline(np.mean(y == c), color="grey", lw=0.8, ls="--", label="base rate")
        ax.set(
            title=f"{plots.LABEL_NAMES[c]}: rank validation rows by score",
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=9)


# --- the answer ---------------------------------------------------------------------------------


def _fmt(v) -> str:
    return fmt(*v)


def _verdict(r, a: str, b: str) -> str:
    """Who is ahead, with the difference written leader minus other (so its sign is always +)."""
    if r["lo"] > 0:
        return f"{a} is ahead of {b}: {a} − {b} = {fmt(r['diff'], r['lo'], r['hi'], signed=True)} (paired 95% CI)"
    if r["hi"] < 0:
        return f"{b} is ahead of {a}: {b} − {a} = {fmt(-r['diff'], -r['hi'], -r['lo'], signed=True)} (paired 95% CI)"
    ci = fmt(r["diff"], r["lo"], r["hi"], signed=True)
    return f"{a} − {b} = {ci} (paired 95% CI): includes 0, no difference distinguishable here"


def answer(
    scores: pd.DataFrame,
    diffs: pd.DataFrame,
    best: str,
    throughput: pd.DataFrame,
    cost: pd.DataFrame,
    n_folds: int,
    profile: str,
    hardware: str,
    names: dict | None = None,
) -> str:
    """The chapter's answer in Markdown, every number from the tables passed in (`names`: display names)."""
    flat = _labels(names)
    d = {(r.key, r.subset): r for _, r in diffs.iterrows()}
    models = list(dict.fromkeys(scores["model"]))
    oof = scores[scores["split"] == "train OOF"].set_index("model")["f1pn"]
    bis = [m for m in models if NAMES[m][1] != CROSS]
    sides = f"ensembles of the same {count(n_folds, 'fold model')}" if n_folds > 1 else "one fold model"
    lines = [
        f"**Validation F1pn** ({profile} profile, {sides} on every side; all rows / unseen rows; "
        "sentence-clustered 95% CIs):",
        "",
    ]
    lines += [
        f"- {flat[m]}: {_fmt(get(scores, m))} / {_fmt(get(scores, m, 'unseen'))}; "
        f"macro F1 {get(scores, m, col='macro_f1')[0]:.3f}; train OOF {oof[m]:.3f}"
        + (" ← best bi-encoder on OOF" if m == best else "")
        for m in models
    ]
    lines += [
        "",
        f"**Choice of the bi-encoder.** Among {', '.join(flat[m] for m in bis)}, the best F1pn on the OOF rows "
        f"(train rows of the folds used, never validation) is **{flat[best]}** ({oof[best]:.3f}); "
        f"its validation F1pn is {_fmt(get(scores, best))}.",
        "",
    ]
    h, hu = d.get(("hamam_minus_best_sbert", "all")), d[("hamam_minus_best_sbert", "unseen")]
    ham = flat["HAMAM"]
    lines.append(
        f"**Does a bi-encoder compete?** On all validation rows {_verdict(h, ham, flat[best])}; "
        f"on unseen-sentence rows {_verdict(hu, ham, flat[best])}. One fold model of one seed on each side: these "
        "intervals resample sentences, not trainings (chapter 02 measures how far a retraining moves one model)."
    )
    what = {
        "cls_minus_best_sbert": "CLS cross-encoder vs the chosen bi-encoder",
        "hamam_minus_cls": "HAMAM vs the CLS cross-encoder",
        "fine_tuned_minus_frozen_e5": "Fine-tuning vs the frozen pretrained encoder",
        "plain_minus_marked": "What caching costs (plain u vs marked u)",
        "dummy_minus_entity": "The dummy trick (v = dummy vs v = entity)",
    }
    for key, text in what.items():  # the variants' questions are asked in every profile: say what was not measured
        r = d.get((key, "all"))
        if r is not None or key in ("plain_minus_marked", "dummy_minus_entity"):
            said = _verdict(r, *(flat[x] for x in r.comparison.split(" - "))) + " (all rows)" if r is not None else ""
            lines.append(f"- {text}: {said or 'not measured (this profile does not train that variant)'}.")
    tp = throughput.set_index("method")["per_second"]  # medians of the timing runs
    c = cost.set_index(["method", "N"])["ms_per_sentence"]
    runs, nmax, nmin = int(throughput.get("repeats", pd.Series([1])).max()), cost["N"].max(), cost["N"].min()
    hm, cls, marked, plain = "HAMAM (cross)", "CLS pair (cross)", "SBERT marked u", "SBERT plain u"
    cached = "SBERT plain u, cached"
    trained_plain = "softmax-plain" in models  # else its cost is timed on an untrained copy of the architecture
    flat["plain u"] = flat["softmax-plain"] if trained_plain else "timed untrained, not trained here"
    lines += [
        "",
        f"**Cost** (measured in one run on {hardware}, the median of {runs} timing runs; ratios are what carries "
        f"over): scoring validation rows, {ham} {tp[hm]:.0f} rows/s, {flat['CLS cross-encoder']} {tp[cls]:.0f} "
        f"rows/s, SBERT with marked sentences ({flat['softmax-entity']}) {tp[marked]:.0f} rows/s "
        f"({tp[marked] / tp[hm]:.1f}× {ham}), SBERT with plain sentences ({flat['plain u']}) "
        f"{tp[plain]:.0f} rows/s ({tp[plain] / tp[hm]:.1f}×). {nmax} new entities in a sentence whose embedding is "
        f"cached: {ham} {c[hm, nmax]:.1f} ms, marked SBERT {c[marked, nmax]:.1f} ms, cached plain SBERT "
        f"{c[cached, nmax]:.1f} ms per sentence ({c[hm, nmax] / c[cached, nmax]:.1f}× faster than HAMAM; "
        f"at N = {nmin}: {c[hm, nmin] / c[cached, nmin]:.1f}×). Marking the entity takes that advantage away: the "
        "marked sentence changes with every entity and is re-encoded N times, as in a cross-encoder. "
        f"The {flat[E5_FROZEN]} has the plain bi-encoder's cost profile (same encoder size, one embedding per "
        "sentence and per entity).",
    ]
    verdict = (
        f"on accuracy {ham} is ahead of the best bi-encoder ({flat[best]})"
        if h["lo"] > 0
        else f"on accuracy the best bi-encoder ({flat[best]}) is ahead of {ham}"
        if h["hi"] < 0
        else f"on accuracy {ham} and the best bi-encoder ({flat[best]}) are not distinguishable here"
    )
    if ("hamam_minus_cls", "all") in d:  # the two cross-encoders, at the strength of their CI
        r = d[("hamam_minus_cls", "all")]
        verdict += "; between the two cross-encoders, " + _verdict(r, ham, flat["CLS cross-encoder"])
    lines += [
        "",
        f"**When to use which.** {verdict[0].upper() + verdict[1:]}. A bi-encoder pays off only where sentence "
        "embeddings are computed once and reused for many entities (plain u), i.e. without entity markers, "
        + (
            "at the accuracy the plain variant and the frozen encoder show above."
            if trained_plain
            else f"whose accuracy this profile measures only frozen ({flat[E5_FROZEN]} above)."
        ),
    ]
    return "\n".join(lines)
