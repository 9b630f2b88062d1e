"""Chapter 01's corpus statistics and figures: labels, entity types, lengths in word tokens, how often sentences
and entities repeat, overlap with train, fold balance. Splits keep the study's colours (`lib.chapters.plots`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "final")


def n_words(texts) -> np.ndarray:
    """Word tokens per text (words with inner hyphens, and every other symbol on its own)."""
    from ..backbones import corpus_words

    return np.array([sum(corpus_words([t]).values()) for t in texts])


def lengths(data: dict) -> pd.DataFrame:
    """One row per (split, example): sentence and entity length in word tokens."""
    return pd.concat(
        [
            df.assign(split=name, sentence_tokens=n_words(df["sentence"]), entity_tokens=n_words(df["entity"]))
            for name, df in data.items()
        ],
        ignore_index=True,
    )


def overlap(data: dict) -> pd.DataFrame:
    """Per split other than train: share of rows whose sentence / entity string also occurs in train."""
    cols = ["sentence_seen_in_train", "entity_seen_in_train"]
    return pd.DataFrame({n: df[cols].mean() for n, df in data.items() if n != "train"}).T


def _splits(present) -> list[str]:
    return [s for s in SPLITS if s in set(present)] + sorted(set(present) - set(SPLITS))


def _split_legend(fig, splits, title: str = "split"):
    from matplotlib.patches import Patch

    from .plots import split_color

    handles = [Patch(color=split_color(s), label=s) for s in splits]
    fig.legend(handles=handles, title=title, loc="outside right upper")


def _label_legend(fig, ax, title: str = "label"):
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, labels, title=title, loc="outside right upper")


def label_shares_figure(labeled: pd.DataFrame):
    """Label shares per split (bars in the splits' colours)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .plots import LABEL_NAMES, SPLIT_COLORS

    fig, ax = plt.subplots(figsize=(6.8, 3.2))
    share = labeled.groupby("split")["label"].value_counts(normalize=True).rename("share").reset_index()
    order = _splits(share["split"])
    sns.barplot(share, x="label", y="share", hue="split", hue_order=order, palette=SPLIT_COLORS, ax=ax, legend=False)
    ax.set_xticks([0, 1, 2], [LABEL_NAMES[k] for k in (-1, 0, 1)])
    ax.set(title="Label shares per split", xlabel="label", ylabel="share of the split's rows")
    _split_legend(fig, order)
    return fig


def tags_figure(data: dict, labeled: pd.DataFrame):
    """Entity-type shares per split, and the label shares of each type (train + validation)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .plots import LABEL_NAMES, SPLIT_COLORS

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    tags = pd.concat([df.assign(split=n) for n, df in data.items()])
    share = tags.groupby("split")["entity_tag"].value_counts(normalize=True).rename("share").reset_index()
    order = _splits(share["split"])
    sns.barplot(
        share, y="entity_tag", x="share", hue="split", hue_order=order, palette=SPLIT_COLORS, ax=axes[0], legend=False
    )
    axes[0].set(title="Entity types per split", xlabel="share of the split's rows", ylabel="entity type")
    by_tag = pd.crosstab(labeled["entity_tag"], labeled["label"], normalize="index").rename(columns=LABEL_NAMES)
    sns.heatmap(by_tag, annot=True, fmt=".2f", cmap="Blues", ax=axes[1], cbar_kws={"label": "share of the type's rows"})
    axes[1].set(title="Label shares per entity type (train + validation)", xlabel="label", ylabel="")
    _split_legend(fig, order)
    return fig


def lengths_figure(table: pd.DataFrame):
    """Sentence and entity lengths, and rows per sentence, per split (step histograms, one legend for all)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .plots import SPLIT_COLORS

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
    order = _splits(table["split"])
    common = {
        "hue": "split",
        "hue_order": order,
        "palette": SPLIT_COLORS,
        "stat": "density",
        "common_norm": False,
        "element": "step",
        "legend": False,
    }
    sns.histplot(table, x="sentence_tokens", bins=40, ax=axes[0], **common)
    sns.histplot(table, x="entity_tokens", discrete=True, ax=axes[1], **common)
    per_sentence = table.groupby(["split", "sentence"]).size().rename("entities").reset_index()
    sns.histplot(per_sentence, x="entities", discrete=True, ax=axes[2], **common)
    axes[1].set_xlim(0.5, 10.5)
    axes[2].set_xlim(0.5, 12.5)
    titles = ("Sentence length", "Entity length", "Rows (entities) per sentence")
    xlabels = ("word tokens per sentence", "word tokens per entity", "rows sharing one sentence")
    for ax, title, xlabel in zip(axes, titles, xlabels):
        ax.set(title=title, xlabel=xlabel, ylabel="share of the split (density)")
    _split_legend(fig, order)
    return fig


def overlap_figure(overlap_table: pd.DataFrame, val: pd.DataFrame):
    """Left: share of each split's rows whose sentence / entity string occurs in train (bars in the splits'
    colours); right: validation labels for seen-sentence and unseen-sentence rows."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .plots import LABEL_COLORS, LABEL_NAMES, split_color

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.1, 1]})
    ax, splits = axes[0], list(overlap_table.index)
    what = {"sentence_seen_in_train": "sentence seen\nin train", "entity_seen_in_train": "entity string seen\nin train"}
    width = 0.8 / len(splits)
    for j, s in enumerate(splits):
        x = np.arange(len(what)) - 0.4 + width * (j + 0.5)
        vals = overlap_table.loc[s, list(what)].to_numpy(float)
        ax.bar(x, vals, width, color=split_color(s))
        for xi, v in zip(x, vals):
            ax.annotate(f"{v:.1%}", (xi, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=9)
    ax.set_xticks(range(len(what)), list(what.values()))
    ax.set(ylim=(0, 1), title="Rows overlapping train", ylabel="share of the split's rows")
    seen = val["sentence_seen_in_train"].map({True: "seen sentence", False: "unseen sentence"})
    seen_lab = pd.crosstab(seen, val["label"], normalize="index").rename(columns=LABEL_NAMES)
    seen_lab.plot.bar(stacked=True, ax=axes[1], rot=0, color=[LABEL_COLORS[k] for k in (-1, 0, 1)], legend=False)
    axes[1].set(title="Validation labels by sentence overlap", xlabel="validation rows", ylabel="share of the rows")
    handles = [Patch(color=split_color(s), label=s) for s in splits]
    handles += [Patch(color=LABEL_COLORS[k], label=LABEL_NAMES[k]) for k in (-1, 0, 1)]
    fig.legend(handles=handles, title="split (left), label (right)", loc="outside right upper")
    return fig


def folds_figure(balance: pd.DataFrame):
    """Label shares per fold (stacked bars), legend outside; `balance`: label shares per fold plus `rows`."""
    import matplotlib.pyplot as plt

    from .plots import LABEL_COLORS

    fig, ax = plt.subplots(figsize=(6.8, 3.2), layout="constrained")  # the legend goes outside, right of the axes
    shares = balance.drop(columns="rows")
    shares.plot.bar(stacked=True, ax=ax, rot=0, color=[LABEL_COLORS[k] for k in (-1, 0, 1)])
    rows = ", ".join(map(str, balance["rows"]))
    title = f"Label share per fold ({len(balance)} folds)\nrows per fold: {rows}"
    ax.set(title=title, xlabel="fold", ylabel="share of rows")
    _label_legend(fig, ax)
    return fig


def answer(
    profile: str, n_folds: int, data: dict, lab: pd.Series, spread: pd.Series, seen: pd.DataFrame, crossing
) -> str:
    """The chapter's answer as Markdown from the tables above (train label shares `lab`, per-label spread of the
    fold shares, the split-by-split `seen` shares); the claim about final rows follows the measured overlap."""
    train, val, final = data["train"], data["validation"], data["final"]
    final_seen = seen.loc["final", "sentence"]
    so = (
        "So every final row is an unseen-sentence row"
        if final_seen == 0
        else f"Apart from {final_seen:.1%} repeated sentences, final rows are unseen-sentence rows"
    )
    return f"""
**RuSentNE-23 ({profile} profile)** has {len(train)} train, {len(val)} validation and {len(final)} final rows;
{lab[0]:.1%} of train rows are neutral, {lab[-1]:.1%} negative, {lab[1]:.1%} positive.
Sentences repeat ({train["sentence"].nunique()} distinct sentences in train), so folds are grouped by sentence:
{crossing} sentences cross folds, and the label shares of the {n_folds} folds differ by at most
{100 * spread.max():.1f} percentage points. {seen.loc["validation", "sentence"]:.1%} of validation rows share their
sentence with train (final: {final_seen:.1%}), and {seen.loc["validation", "entity"]:.1%} name an entity seen in
train (final: {seen.loc["final", "entity"]:.1%}). Train and validation share documents; the final split does not: a
public labelled copy of the corpus with document ids (yuliana-solomatina/rusentne-2023-prompt-tuning) places every
validation row in a document that also supplies train rows, and no final row in one. {so}: expect test scores nearer the
unseen-sentence validation scores than the all-rows ones, and the later chapters report unseen-sentence
validation rows beside all rows wherever they score validation.
"""
