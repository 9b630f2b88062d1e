"""Entity-swap counterfactuals: does the prediction follow the context or the entity's name?

The paper (arXiv 2308.15793, §3.4) argues that masking the entity makes the model read sentiment
from the context rather than from prior knowledge of the entity. We test it directly: keep the
sentence, put another train entity of the same type in the target's place, keep the label, and
measure how often and how far the prediction moves. A context-driven model should barely move.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..config import LABEL_NAMES, LABELS
from ..metrics import draw_resamples, f1pn, f1pn_resampled, sentence_groups, softmax, to_labels
from .plots import legend_below

MEASURES = ("flip_rate", "dp_pos", "dp_neg", "f1pn_original", "f1pn_swapped", "f1pn_delta")
_POS, _NEG = LABELS.index(1), LABELS.index(-1)
_VOWEL_CLASS = {**dict.fromkeys("ая", "a"), **dict.fromkeys("оеёэ", "o"), **dict.fromkeys("ую", "u")}
_VOWEL_CLASS.update(dict.fromkeys("ыи", "i"))
_CYR_WORD = re.compile(r"[а-яёА-ЯЁ]+")


def replacement_pool(train: pd.DataFrame) -> dict[str, list[str]]:
    """Distinct train entity strings per entity_tag, sorted so draws are reproducible; 1-character
    strings (initials, stray letters) are left out because they are not names a model could know."""
    ok = train[train["entity"].str.len() > 1]
    return {tag: sorted(set(g)) for tag, g in ok.groupby("entity_tag")["entity"]}


def _ending(entity: str) -> str | None:
    """Case-ending class of an entity string, read off its last Cyrillic word that is not all-uppercase;
    None when there is none (indeclinable: acronyms like США, Latin names like Chelsea). Vowels are
    paired hard/soft (а/я -> a, о/е/ё/э -> o, у/ю -> u, ы/и -> i). The class is the final vowel
    (Путина, Медведева -> a), or that vowel plus a final м/х/й (Путиным -> iм, Ивановой -> oй), or C
    for any other final letter: the zero ending of nominative stems (Путин, Сбербанк -> C)."""
    words = [w for w in _CYR_WORD.findall(entity) if not (len(w) > 1 and w.isupper())]
    if not words:
        return None
    w = words[-1].lower()
    if w[-1] in _VOWEL_CLASS:
        return _VOWEL_CLASS[w[-1]]
    if w[-1] in "мхй" and len(w) > 1 and w[-2] in _VOWEL_CLASS:
        return _VOWEL_CLASS[w[-2]] + w[-1]
    return "C"


def fits(original: str, replacement: str) -> bool:
    """Does the replacement plausibly take the original's grammatical case? A surface heuristic:
    yes when the replacement is indeclinable (fits any slot) or both share `_ending`'s class.

    Limitations: no morphology, so agreement is ignored (Путин -> США fits, though a verb then
    disagrees in number), different cases can share a class (genitive Путина and nominative Москва
    are both a; nominative Алексей and instrumental Россией both oй), and the last word of a phrase
    is read, which is not the inflected head in phrases with a genitive complement (главы отдела по
    делам миграции: i, from миграции).
    """
    e = _ending(replacement)
    return e is None or e == _ending(original)


def counterfactual_copies(df: pd.DataFrame, train: pd.DataFrame, n: int = 5, seed: int = 13) -> pd.DataFrame:
    """Up to `n` copies per row of `df`, the entity span replaced by distinct same-tag train strings.

    Only the labelled span changes (other mentions of the entity stay), so the context is the same
    and the label is kept: a context-driven model should keep its prediction. Columns: every column
    of df as in the source row (flags such as entity_seen_in_train describe the original; df's own
    `row`, if any, becomes `file_row`), `row` = position of the source row in df, `original_entity`,
    `entity` = the replacement, `end` moved to start + len(replacement), and `fits` (see `fits`).
    Rows whose tag has no pool are skipped. Draws use one numpy Generator, so a seed fixes them.
    """
    pool = {
        tag: (np.array(s, dtype=object), pd.Series(s).str.lower().to_numpy())
        for tag, s in replacement_pool(train).items()
    }
    rng = np.random.default_rng(seed)
    src = df.reset_index(drop=True).rename(columns={"row": "file_row"})
    starts, ends = src["start"].to_numpy(int), src["end"].to_numpy(int)
    take, repl = [], []
    for i, (sent, ent, tag) in enumerate(zip(src["sentence"], src["entity"], src["entity_tag"])):
        if sent[starts[i] : ends[i]] != ent:
            raise ValueError(f"row {i}: sentence[start:end] {sent[starts[i] : ends[i]]!r} != entity {ent!r}")
        if tag not in pool:
            continue
        names, lower = pool[tag]
        cand = np.flatnonzero(lower != ent.lower())
        picked = names[cand[rng.choice(len(cand), size=min(n, len(cand)), replace=False)]]
        take += [i] * len(picked)
        repl += list(picked)
    out = src.iloc[take].reset_index(drop=True)
    a, b = starts[take], ends[take]
    out["sentence"] = [s[:x] + r + s[y:] for s, x, y, r in zip(out["sentence"], a, b, repl)]
    out["end"] = a + np.array([len(r) for r in repl], dtype=int)
    out.insert(0, "row", np.array(take, dtype=int))
    out["original_entity"] = out["entity"]
    out["entity"] = repl
    out["fits"] = np.array([fits(o, r) for o, r in zip(out["original_entity"], repl)], dtype=bool)
    return out


def null_copies(df: pd.DataFrame, copies: pd.DataFrame) -> pd.DataFrame:
    """The null control: each copy with its entity replaced by itself (the source row's own text), so only how
    the row is batched and rounded differs from the original. Predicted in the same call as the real copies
    (never beside their originals), its flip rate is the floor that batching and precision alone produce."""
    src = df.reset_index(drop=True)
    out = copies.copy()
    rows = out["row"].to_numpy(int)
    out["sentence"] = src["sentence"].to_numpy()[rows]
    out["end"] = src["end"].to_numpy(int)[rows]
    out["entity"] = out["original_entity"]
    return out


def _resampled_measures(orig_logits, swap_logits, copies, df, counts, inverse, subset=None, rows=None):
    """Point value and per-resample values of every measure (the machinery shared by the public calls).

    Copies inherit the cluster (sentence) of their source row; ratios are cluster sums over drawn
    clusters, so one (n_boot, n_clusters) matmul per measure. Originals are weighted by their
    number of used copies, so f1pn_original and f1pn_swapped are scored on the same units.
    """
    orig_logits, swap_logits = np.asarray(orig_logits), np.asarray(swap_logits)
    if len(orig_logits) != len(df) or len(swap_logits) != len(copies):
        raise ValueError(f"logits rows {len(orig_logits)}/{len(swap_logits)} != df/copies {len(df)}/{len(copies)}")
    src = copies["row"].to_numpy(int)
    use = np.ones(len(copies), bool) if subset is None else np.asarray(subset, bool).copy()
    if rows is not None:
        use &= np.asarray(rows, bool)[src]
    src, k = src[use], counts.shape[1]
    p0, p1 = softmax(orig_logits)[src], softmax(swap_logits)[use]
    y0, y1 = to_labels(orig_logits)[src], to_labels(swap_logits)[use]
    y = df["label"].to_numpy()[src]
    clus = inverse[src]
    per_copy = {
        "flip_rate": y0 != y1,
        "dp_pos": abs(p1[:, _POS] - p0[:, _POS]),
        "dp_neg": abs(p1[:, _NEG] - p0[:, _NEG]),
    }
    denom = counts @ np.bincount(clus, minlength=k)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, v in per_copy.items():
            v = v.astype(float)
            out[name] = (float(v.mean()) if len(v) else np.nan, counts @ np.bincount(clus, v, minlength=k) / denom)
    for name, pred in (("f1pn_original", y0), ("f1pn_swapped", y1)):  # empty: nan, like the ratios
        out[name] = (
            f1pn(y, pred) if len(y) else np.nan,
            np.where(denom > 0, f1pn_resampled(y, pred, counts, clus), np.nan),
        )
    out["f1pn_delta"] = (
        out["f1pn_swapped"][0] - out["f1pn_original"][0],
        out["f1pn_swapped"][1] - out["f1pn_original"][1],
    )
    return out, int(use.sum()), len(np.unique(src))


def _ci(point, boot, alpha=0.05) -> list[float]:
    lo, hi = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2]) if np.isfinite(boot).any() else (np.nan, np.nan)
    return [float(point), float(lo), float(hi)]


def swap_effects(orig_logits, swap_logits, copies, df, n_boot=1000, seed=0, subset=None, rows=None) -> dict:
    """{measure: [value, lo, hi]} for MEASURES, plus n_copies and n_rows, with a 95% bootstrap CI
    over the source sentences (copies of one sentence are never independent evidence).

    flip_rate: share of copies whose argmax label differs from the source row's; dp_pos / dp_neg:
    mean |change| of p(positive) / p(negative); f1pn_original / f1pn_swapped: F1pn of the source
    rows (each counted once per used copy) / of the copies against the kept labels; f1pn_delta:
    swapped - original, paired. `subset` masks copies (e.g. copies["fits"]), `rows` masks df rows.
    """
    counts, inverse = draw_resamples(sentence_groups(df), len(df), n_boot, seed)
    res, n_copies, n_rows = _resampled_measures(orig_logits, swap_logits, copies, df, counts, inverse, subset, rows)
    return {**{m: _ci(*res[m]) for m in MEASURES}, "n_copies": n_copies, "n_rows": n_rows}


def paired_effect_diff(
    orig_a, swap_a, orig_b, swap_b, copies, df, measure="flip_rate", n_boot=1000, seed=0, subset=None, rows=None
) -> list[float]:
    """[a - b, lo, hi] of one measure for two models on the same copies, each resample shared by both,
    so the noise from which sentences were drawn cancels (as in metrics.paired_bootstrap_diff)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES}")
    counts, inverse = draw_resamples(sentence_groups(df), len(df), n_boot, seed)
    a = _resampled_measures(orig_a, swap_a, copies, df, counts, inverse, subset, rows)[0][measure]
    b = _resampled_measures(orig_b, swap_b, copies, df, counts, inverse, subset, rows)[0][measure]
    return _ci(a[0] - b[0], a[1] - b[1])


def effects_by(copies, df, orig_logits, swap_logits, by: str, n_boot=1000, seed=0, subset=None) -> pd.DataFrame:
    """One row per value of df[by] (e.g. entity_tag, sentence_seen_in_train): n_rows, n_copies and
    every measure with its CI (columns m, m_lo, m_hi), to see where the entity name matters most."""
    key, out = df[by].to_numpy(), []
    for value in pd.unique(key):
        r = swap_effects(orig_logits, swap_logits, copies, df, n_boot, seed, subset, rows=key == value)
        flat = {f"{m}{s}": v for m in MEASURES for s, v in zip(("", "_lo", "_hi"), r[m])}
        out.append({by: value, "n_rows": r["n_rows"], "n_copies": r["n_copies"], **flat})
    return pd.DataFrame(out).sort_values(by, ignore_index=True)


# --- predicting the copies with a run's saved fold models ---------------------------------------------------


# --- tables and the figure ------------------------------------------------------------------------------------


def effects_table(logits: dict, copies: pd.DataFrame, df: pd.DataFrame, n_boot=1000, seed=0) -> pd.DataFrame:
    """One row per model and copy set ("all" copies, and the `fits` subset): n_rows, n_copies and every
    measure with its CI (columns m, m_lo, m_hi). `logits`: {model: (original rows' logits, copies' logits)}."""
    out = []
    for name, (orig, swap) in logits.items():
        for which, subset in (("all", None), ("fits", copies["fits"].to_numpy(bool))):
            r = swap_effects(orig, swap, copies, df, n_boot, seed, subset)
            flat = {f"{m}{s}": v for m in MEASURES for s, v in zip(("", "_lo", "_hi"), r[m])}
            out.append({"model": name, "copies": which, "n_rows": r["n_rows"], "n_copies": r["n_copies"], **flat})
    return pd.DataFrame(out)


FIGURE_MEASURES = {
    "flip_rate": "share of copies whose label flips",
    "dp_pos": f"mean |Δ p({LABEL_NAMES[1]})|",
    "dp_neg": f"mean |Δ p({LABEL_NAMES[-1]})|",
}


def effects_figure(table: pd.DataFrame, title: str = ""):
    """Points with 95% CI bars, one panel per measure in FIGURE_MEASURES, models as rows (top to bottom in
    table order), the copy sets ("all", "fits") side by side; the legend below the panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models, sets = list(dict.fromkeys(table["model"])), list(dict.fromkeys(table["copies"]))
    colors = sns.color_palette(n_colors=len(sets))
    fig, axes = plt.subplots(
        1,
        len(FIGURE_MEASURES),
        figsize=(3.3 * len(FIGURE_MEASURES) + 1.6, 0.45 * len(models) + 1.6),
        sharey=True,
        layout="constrained",
    )
    for ax, (m, label) in zip(np.atleast_1d(axes), FIGURE_MEASURES.items()):
        for j, (which, color) in enumerate(zip(sets, colors)):
            sub = table[table["copies"] == which].set_index("model").reindex(models)
            y = np.arange(len(models)) + 0.3 * (j - (len(sets) - 1) / 2)
            err = [sub[m] - sub[f"{m}_lo"], sub[f"{m}_hi"] - sub[m]]
            n = int(sub["n_copies"].max())
            ax.errorbar(sub[m], y, xerr=err, fmt="o", ms=4, capsize=2, lw=1, color=color, label=f"{which} ({n} copies)")
        ax.set_yticks(range(len(models)), models, fontsize=9)
        ax.set_ylim(len(models) - 0.5, -0.5)
        ax.set_xlim(-0.03 * ax.get_xlim()[1], ax.get_xlim()[1])  # points at 0 stay visible
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(label, fontsize=9)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    legend_below(fig, handles, labels, fontsize=8, title="copies", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def reliance_verdict(output: tuple[float, float], own_pass: tuple[float, float]) -> str:
    """Does the masked pass reduce reliance on the entity? From two paired flip-rate CIs (lo, hi) against the
    unmasked model: HAMAM's output, and HAMAM's unmasked pass alone. The output moves about half as far by
    construction (it averages in a pass that cannot see the name), so "yes" is qualified by the pass that can."""
    if output[0] > 0:
        return "No: HAMAM's output flips more than the unmasked model"
    if not output[1] < 0:
        return "Not measurably"
    if own_pass[1] < 0:
        return "Yes, also in the pass that sees the name (it flips less than the unmasked model)"
    if own_pass[0] > 0:
        return (
            "Only through averaging: HAMAM's output flips less, but its pass that sees the name flips more than the "
            "unmasked model"
        )
    return (
        "Only through averaging: HAMAM's output flips less; its pass that sees the name cannot be told apart "
        "from the unmasked model"
    )
