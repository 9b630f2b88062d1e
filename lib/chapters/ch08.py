"""Chapter 08: HAMAM beyond Russian news. NewsMTSC (English political news, Hamborg & Donnay, EACL 2021): the
three modes trained with the headline recipe and scored on the paper's test parts; cross-lingual transfer both
ways (zero-shot); entity swaps on English mentions with the null control of chapter 02.

NewsMTSC's parts play the roles of a fold run (`lib.newsmtsc.ROLES`): `validation` = test_rw (the real-world
distribution), `final` = test_mt (sentences with several targets). Model selection is on an inner split of train,
as everywhere in this study; the authors' dev parts are not used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import paired_bootstrap_diff, score, sentence_groups
from ..rules import apply_rule
from .study import shown
from .style import MODE_NAMES

TESTS = {"test_rw": "validation", "test_mt": "final"}  # NewsMTSC part -> its role in a fold run
# published on the test parts (the paper's Table 2, mean of its runs; x 100): (rw F1m, rw F1pn, mt F1m, mt F1pn)
PUBLISHED = {
    "SPC (CLS head), BERT-base": (80.1, 79.5, 73.7, 71.1),
    "SPC (CLS head), RoBERTa-base": (81.1, 80.5, 79.4, 77.0),
    "GRU-TSC, RoBERTa-base (the paper's model)": (83.1, 82.9, 82.5, 80.2),
}
PUBLISHED_MARKERS = ("v", "^", "D")  # one open marker per published model in 08_newsmtsc
PRONOUNS = {  # by case, so a swap keeps the sentence's grammar: he -> she, never he -> him
    "subject": {"he", "she", "they", "i", "we", "you", "it"},
    "object": {"him", "them", "me", "us"},
    "possessive": {"his", "their", "its", "my", "our", "your", "hers", "theirs"},
}


# --- scoring ---------------------------------------------------------------------------------------------------


def scored(df: pd.DataFrame, pred, n_boot: int, **tags) -> dict:
    """F1pn and 3-class macro F1 (F1m, as NewsMTSC reports it) with sentence-clustered 95% CIs."""
    s = score(df["label"].to_numpy(), pred, n_boot, groups=sentence_groups(df), ci=("f1pn", "macro_f1"))
    f1m = {k.replace("macro_f1", "f1m"): s[k] for k in ("macro_f1", "macro_f1_lo", "macro_f1_hi")}
    return {**tags, "f1pn": s["f1pn"], "f1pn_lo": s["f1pn_lo"], "f1pn_hi": s["f1pn_hi"], **f1m, "n": s["n"]}


def decide(logits, rule) -> np.ndarray:
    return apply_rule(logits, *rule)


def paired_diff(df: pd.DataFrame, pred_a, pred_b, n_boot: int, mask=None) -> list[float]:
    """[a - b, lo, hi] in F1pn, paired over the same resampled sentences (rows in `mask` only)."""
    m = np.ones(len(df), bool) if mask is None else np.asarray(mask, bool)
    y, g = df["label"].to_numpy()[m], sentence_groups(df)[m]
    return list(paired_bootstrap_diff(y, np.asarray(pred_a)[m], np.asarray(pred_b)[m], groups=g, n=n_boot))


def target_groups(df: pd.DataFrame) -> pd.Series:
    """Per row: one target in its sentence, several with one label, or several with different labels (neutral
    counts as a label: the masked pass hides only this target, the others stay visible)."""
    n = df.groupby("sentence")["label"].transform("size")
    kinds = df.groupby("sentence")["label"].transform("nunique")
    return pd.Series(
        np.where(n == 1, "one target", np.where(kinds == 1, "several, one label", "several, mixed labels")),
        index=df.index,
    )


# --- English entity swaps -----------------------------------------------------------------------------------------


def mention_kind(mention: str) -> str:
    """A rough type for English mentions, so a swap replaces like with like: a pronoun of one case (subject,
    object, possessive; "her" is left out: object or possessive), a possessive name ("Trump's"), a capitalised
    name of one word or of several, or another phrase; a capitalised first letter is kept apart ("He" vs "he")."""
    words = mention.strip("\"'“”‘’([ ").split()
    if not words:
        return "other"
    low, cap = words[0].lower(), words[0][:1].isupper()
    case = ":capitalised" if cap else ""
    if len(words) == 1:
        for name, forms in PRONOUNS.items():
            if low in forms:
                return f"pronoun, {name}{case}"
        if low == "her":
            return "pronoun, her"
    if mention.endswith(("'s", "’s")):
        return "possessive name" if cap else "possessive phrase"
    if all(w[:1].isupper() for w in words):
        return "name" if len(words) == 1 else "multi-word name"
    return "other" + case


def with_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """`entity_tag` set to `mention_kind` (NewsMTSC has no entity types): the swap pools are per kind."""
    return df.assign(entity_tag=[mention_kind(m) for m in df["entity"]])


# --- predictions a reader can re-score -------------------------------------------------------------------------


def predictions_file(df: pd.DataFrame, labels, path) -> pd.DataFrame:
    """`gid` (the target's Input.gid) and `label` (-1, 0, 1), tab-separated, in the part's row order."""
    out = pd.DataFrame({"gid": df["gid"].to_numpy(), "label": np.asarray(labels, dtype=int)})
    out.to_csv(path, sep="\t", index=False)
    return out


def rescore(path, part: str) -> dict:
    """Score a predictions file as a reader would: read it back, join it to the raw NewsMTSC part by `gid`."""
    from .. import newsmtsc

    got = pd.read_csv(path, sep="\t")
    if not got["gid"].is_unique:
        raise ValueError(f"{path}: a gid occurs twice")
    gold = newsmtsc.read_split(part)[["gid", "label", "sentence"]]
    both = gold.merge(got, on="gid", how="inner", suffixes=("", "_predicted"))
    if len(both) != len(got):
        raise ValueError(f"{path}: {len(got) - len(both)} gids not in NewsMTSC {part}")
    return scored(both, both["label_predicted"].to_numpy(), 0)


def published_table(ours: list[tuple[str, dict, dict]]) -> str:
    """Markdown: the published test-part results beside ours (x 100, as the paper prints them; ours with 95% CIs)."""
    head = (
        "Scores × 100, as NewsMTSC's paper prints them.\n\n"
        "| model | test-rw F1m | test-rw F1pn | test-mt F1m | test-mt F1pn |\n|---|---|---|---|---|\n"
    )
    rows = [f"| published: {m} | " + " | ".join(f"{v:.1f}" for v in vals) + " |" for m, vals in PUBLISHED.items()]

    def c(s, k):
        return f"{100 * s[k]:.1f} [{100 * s[k + '_lo']:.1f}, {100 * s[k + '_hi']:.1f}]"

    rows += [
        f"| this study: {name} | {c(rw, 'f1m')} | {c(rw, 'f1pn')} | {c(mt, 'f1m')} | {c(mt, 'f1pn')} |"
        for name, rw, mt in ours
    ]
    return head + "\n".join(rows)


# --- figure, answer, numbers ---------------------------------------------------------------------------------------


def scores_figure(scores: pd.DataFrame, diffs: pd.DataFrame):
    """Left: F1pn per model on each test part (OOF rule; 95% CIs), the published models as open marks.
    Right: HAMAM minus each half, paired, on all rows and by the targets of the sentence."""
    import matplotlib.pyplot as plt

    from .plots import legend_below, model_color

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1, 1.3]}, layout="constrained")
    s = scores[scores["decision"] == "OOF rule"]
    for i, part in enumerate(TESTS):
        for j, (m, label) in enumerate(MODE_NAMES.items()):
            r = s[(s["model"] == m) & (s["part"] == part)].iloc[0]
            x = i + (j - 1) * 0.18
            err = [[r.f1pn - r.f1pn_lo], [r.f1pn_hi - r.f1pn]]
            ax.errorbar(
                x, r.f1pn, yerr=err, fmt="o", capsize=3, color=model_color(label), label=label if i == 0 else None
            )
        for (name, vals), mk in zip(PUBLISHED.items(), PUBLISHED_MARKERS):
            short = name.replace(" (CLS head)", "").replace(" (the paper's model)", "")
            label = f"{short} (published)" if i == 0 else None
            ax.scatter(i + 0.4, vals[1 + 2 * i] / 100, marker=mk, s=40, facecolors="none", color="black", label=label)
    ax.set_xticks(range(len(TESTS)), list(TESTS))
    ax.set_xlim(-0.5, len(TESTS) - 0.3)
    ax.set(ylabel="F1pn (95% CI)", title="this study (filled, 95% CI) and published (open)")
    legend_below(fig, *ax.get_legend_handles_labels(), fontsize=9)  # below both panels: the axes keep their width
    d = diffs.reset_index(drop=True)
    labels = [f"{shown(r.comparison)}, {r.part}: {r.rows} (n={r.n})" for r in d.itertuples()]
    for i, r in d.iterrows():
        bx.errorbar(r["diff"], -i, xerr=[[r["diff"] - r.lo], [r.hi - r["diff"]]], fmt="s", capsize=3, color="black")
    bx.axvline(0, color="grey", ls=":", lw=1)
    bx.set_yticks(-np.arange(len(d)), labels, fontsize=8)
    bx.set(xlabel="paired difference in F1pn", title="HAMAM minus each half (95% CI)")
    bx.xaxis.set_major_locator(plt.MaxNLocator(nbins=5))  # the panel is narrow: fewer ticks, no overlaps
    return fig


def _sure(lo, hi) -> str:
    return "the 95% CI excludes 0" if lo > 0 or hi < 0 else "the 95% CI includes 0"


def answer(sc, diffs, transfer, xdiff, effects, nulls, flip) -> str:
    """The chapter's answer as Markdown, each claim at the strength of its CI."""
    from ..metrics import fmt

    def score(m, part):
        r = sc.loc[(m, part, "OOF rule")]
        return f"{fmt(r.f1pn, r.f1pn_lo, r.f1pn_hi)} (F1m {r.f1m:.3f})"

    def against(rows, other: str) -> str:  # where HAMAM stands against one model, over the parts compared
        above = [r.part for r in rows.itertuples() if r.lo > 0]
        below = [r.part for r in rows.itertuples() if r.hi < 0]
        if not above and not below:
            return f"indistinguishable from {other} on {', '.join(rows['part'])}"
        said = [f"ahead of {other} on {', '.join(above)}"] if above else []
        said += [f"behind {other} on {', '.join(below)}"] if below else []
        rest = [p for p in rows["part"] if p not in above + below]
        return " and ".join(said) + (f", not distinguishable on {', '.join(rest)}" if rest else "")

    alls = diffs[diffs["rows"] == "all"]
    arrow = {"ru_to_en": "Russian → English", "en_to_ru": "English → Russian"}
    xd = xdiff.assign(part=xdiff["direction"].map(arrow) + " " + xdiff["part"])
    fl, fl_lo, fl_hi = flip["unmasked"]
    depends = (
        "less often than"
        if fl_hi < 0
        else "more often than"
        if fl_lo > 0
        else "neither clearly more nor less often than"
    )
    lines = [
        f"**Answer.** On English news HAMAM is {against(alls[alls['comparison'] == 'hamam - unmasked'], 'unmasked')}"
        f" and {against(alls[alls['comparison'] == 'hamam - masked'], 'masked')}; zero-shot across languages it is "
        f"{against(xd[xd['comparison'] == 'hamam - unmasked'], 'unmasked')} (each pair of ensembles of one "
        f"seed, paired over the same rows; the spread over trainings is not in these intervals). Swapping the target "
        f"mention for another one changes HAMAM's label {depends} the unmasked model's "
        f"({fmt(fl, fl_lo, fl_hi, signed=True)} in flip rate).\n",
        f"**On NewsMTSC** (each under its OOF rule): HAMAM {score('hamam', 'test_rw')} on test_rw and "
        f"{score('hamam', 'test_mt')} on test_mt; unmasked {score('unmasked', 'test_rw')} / "
        f"{score('unmasked', 'test_mt')}; masked {score('masked', 'test_rw')} / {score('masked', 'test_mt')}.",
    ]
    for r in alls.itertuples():
        lines.append(
            f"- {shown(r.comparison)} on {r.part}: {fmt(r.diff, r.lo, r.hi, signed=True)} ({_sure(r.lo, r.hi)})"
        )
    mixed = diffs[(diffs["rows"] == "several, mixed labels") & (diffs["comparison"] == "hamam - masked")]
    for r in mixed.itertuples():
        lines.append(
            f"- Sentences whose targets have different labels ({r.part}, n={r.n}), HAMAM − masked: "
            f"{fmt(r.diff, r.lo, r.hi, signed=True)} ({_sure(r.lo, r.hi)})"
        )
    t = transfer[transfer["decision"] == "argmax"].set_index(["direction", "model", "part"])
    lines.append(
        "\n**Zero-shot transfer** (argmax; the source's OOF rule in the table): Russian → English test_rw "
        + ", ".join(f"{MODE_NAMES[m]} {t.loc[('ru_to_en', m, 'test_rw'), 'f1pn']:.3f}" for m in MODE_NAMES)
        + "; English → Russian validation "
        + ", ".join(f"{MODE_NAMES[m]} {t.loc[('en_to_ru', m, 'validation'), 'f1pn']:.3f}" for m in MODE_NAMES)
        + ". Paired, HAMAM − unmasked under the source rule: "
        + "; ".join(
            f"{r.part} {fmt(r.diff, r.lo, r.hi, signed=True)} ({_sure(r.lo, r.hi)})"
            for r in xd[xd["comparison"] == "hamam - unmasked"].itertuples()
        )
        + "."
    )
    e = effects[effects["copies"] == "all"].set_index("model")
    n = nulls[nulls["copies"] == "all"].set_index("model")
    lines.append(
        "\n**Entity swaps on English mentions**: flip rate "
        + ", ".join(f"{MODE_NAMES[m]} {fmt(*e.loc[m, ['flip_rate', 'flip_rate_lo', 'flip_rate_hi']])}" for m in e.index)
        + "; null control "
        + ", ".join(f"{MODE_NAMES[m]} {n.loc[m, 'flip_rate']:.3f}" for m in n.index)
        + ". Paired flip rate, HAMAM − unmasked "
        + f"{fmt(*flip['unmasked'], signed=True)} ({_sure(*flip['unmasked'][1:])}). HAMAM averages a pass that "
        "cannot see the name: whether its pass that sees the name itself depends less on it (chapter 02 tests this "
        "on RuSentNE by scoring HAMAM's two passes alone) is not measured here."
    )
    return "\n".join(lines)


def numbers(sc, diffs, transfer, xdiff, effects, nulls, flip: dict | None = None) -> dict:
    """results.json entries {key: [value, lo, hi]} (the keys the README and the tests read)."""
    num = {}
    for (m, part, dec), r in sc.iterrows():
        tag = "" if dec == "OOF rule" else ".argmax"
        num[f"08.{m}.{part}.f1pn{tag}"] = [r.f1pn, r.f1pn_lo, r.f1pn_hi]
        num[f"08.{m}.{part}.f1m{tag}"] = [r.f1m, r.f1m_lo, r.f1m_hi]
    for r in diffs.itertuples():
        rows = "" if r.rows == "all" else "." + r.rows.replace(", ", "_").replace(" ", "_")
        num[f"08.{r.comparison.replace(' - ', '_minus_')}.{r.part}{rows}.f1pn"] = [r.diff, r.lo, r.hi]
    for r in transfer.itertuples():
        tag = "" if r.decision == "argmax" else ".source_rule"
        num[f"08.transfer.{r.direction}.{r.model}.{r.part}.f1pn{tag}"] = [r.f1pn, r.f1pn_lo, r.f1pn_hi]
    for r in xdiff.itertuples():
        num[f"08.transfer.{r.direction}.{r.comparison.replace(' - ', '_minus_')}.{r.part}.f1pn"] = [r.diff, r.lo, r.hi]
    for tab, tag in ((effects, ""), (nulls, "null_")):
        for r in tab[tab["copies"] == "all"].itertuples():
            num[f"08.swap.flip_rate.{tag}{r.model}"] = [r.flip_rate, r.flip_rate_lo, r.flip_rate_hi]
    for b, v in (flip or {}).items():  # paired over the same copies
        num[f"08.swap.flip_rate_diff.hamam_minus_{b}"] = list(v)
    return num
