"""Figure style and saving: every chapter writes PNGs through `save` into the profile's folder."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

LABEL_NAMES = {-1: "negative", 0: "neutral", 1: "positive"}
LABEL_COLORS = {-1: "#d62728", 0: "#7f7f7f", 1: "#2ca02c"}


def setup() -> None:
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight", "figure.constrained_layout.use": True})


def save(fig, name: str, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    # fixed metadata so an unchanged figure is byte-identical across runs
    fig.savefig(path, metadata={"Software": None})
    return path


def ci_bars(ax, df, x: str, hue: str, y: str = "f1pn", lo: str = "f1pn_lo", hi: str = "f1pn_hi"):
    """Grouped bars with asymmetric CI whiskers (seaborn's barplot cannot take precomputed CIs)."""
    xs, hues = list(dict.fromkeys(df[x])), list(dict.fromkeys(df[hue]))
    width = 0.8 / len(hues)
    palette = sns.color_palette(n_colors=len(hues))
    for j, h in enumerate(hues):
        sub = df[df[hue] == h].set_index(x).reindex(xs)
        pos = [i - 0.4 + width * (j + 0.5) for i in range(len(xs))]
        ax.bar(pos, sub[y], width, label=str(h), color=palette[j])
        ax.errorbar(pos, sub[y], yerr=[sub[y] - sub[lo], sub[hi] - sub[y]], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_ylabel(y)
    ax.legend(title=hue, fontsize=8)
    return ax
