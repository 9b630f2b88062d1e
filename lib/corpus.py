"""Chapter 01's corpus statistics: lengths in word tokens and how often sentences and entities repeat."""

from __future__ import annotations

import numpy as np
import pandas as pd


def n_words(texts) -> np.ndarray:
    """Word tokens per text (words with inner hyphens, and every other symbol on its own)."""
    from .backbones import corpus_words

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


def lengths_figure(table: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    common = {"hue": "split", "stat": "density", "common_norm": False, "element": "step"}
    sns.histplot(table, x="sentence_tokens", bins=40, ax=axes[0], **common)
    sns.histplot(table, x="entity_tokens", discrete=True, ax=axes[1], **common)
    per_sentence = table.groupby(["split", "sentence"]).size().rename("entities").reset_index()
    sns.histplot(per_sentence, x="entities", discrete=True, ax=axes[2], **common)
    axes[1].set_xlim(0.5, 10.5)
    axes[2].set_xlim(0.5, 12.5)
    for ax, title in zip(
        axes, ("Sentence length (word tokens)", "Entity length (word tokens)", "Entities (rows) per sentence")
    ):
        ax.set_title(title)
    return fig
