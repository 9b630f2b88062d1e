"""Figure style and saving: every chapter writes PNGs through `save` into the profile's folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..config import LABEL_NAMES  # noqa: F401  (re-exported for the chapters)
from .figcheck import agg_canvas, text_problems
from .style import (  # noqa: F401  (re-exported: the chapters call plots.<name>)
    AXIS_LABELS,
    BEST_MARK,
    LABEL_COLORS,
    MODE_NAMES,
    MODEL_COLORS,
    MODEL_PREFIXES,
    RULE_COLORS,
    SPLIT_ALIASES,
    SPLIT_COLORS,
    SUBSET_LABELS,
    axis_label,
    color,
    model_color,
    model_key,
    split_color,
)


def setup() -> None:
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update(
        {"figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight", "figure.constrained_layout.use": True}
    )


CHECKS = "figure_checks.json"  # beside the figures: what lib.chapters.figcheck found in each saved figure
# a saved figure at most this wide (inches; ~1,270 px at savefig.dpi 110): a page read in a 1400-px window shows
# every panel and legend without scrolling. Wider figures are narrowed, text kept at its size.
MAX_WIDTH = 11.5


def fit_width(fig, max_width: float = MAX_WIDTH) -> float:
    """Fit what savefig keeps of `fig` (its tight box, legends outside the axes included) into `max_width` inches
    by narrowing the figure with its text kept at its size, so the panels give the room (figcheck then sees any
    crowding); legends below the panels fit by `legend_below`. A figure that would have to lose more than 40% of
    its width is left as drawn. Returns the saved width in inches."""
    canvas = agg_canvas(fig)
    pad = 2 * float(plt.rcParams["savefig.pad_inches"]) if plt.rcParams["savefig.bbox"] == "tight" else 0.0
    limit, original = max_width - pad, tuple(fig.get_size_inches())  # savefig pads the tight box on both sides

    def saved() -> float:
        canvas.draw()
        return fig.get_tightbbox(canvas.get_renderer()).width

    title = fig._suptitle  # a one-line title wider than the page is wrapped (it would hold the figure wide)
    if title is not None and title.get_text():
        wide = title.get_window_extent(canvas.get_renderer()).width / fig.dpi
        if wide > limit:
            lines = title.get_text().split("\n")
            chars = int(max(map(len, lines)) * (limit - 0.3) / wide)
            title.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
    for _ in range(4):  # the tight box follows the layout, which follows the size: a few rounds settle it
        width = saved()
        w, h = fig.get_size_inches()
        if width <= limit + 0.01:
            break
        if w - (width - limit) < 0.6 * original[0]:
            fig.set_size_inches(*original)  # the panels would be crushed: left as drawn, the page scrolls
            return saved() + pad
        fig.set_size_inches(w - (width - limit) - 0.05, h)
    return width + pad


def legend_below(fig, handles, labels=None, max_width: float = MAX_WIDTH, **kw):
    """A figure legend below the panels with as many columns as fit `max_width` inches (one row when they all
    fit, more rows otherwise), so it never makes the saved figure wider than a page."""
    canvas = agg_canvas(fig)
    entries = {"handles": handles} if labels is None else {"handles": handles, "labels": labels}
    for ncol in range(len(handles), 0, -1):
        leg = fig.legend(**entries, loc="outside lower center", ncol=ncol, **kw)
        if ncol == 1 or leg.get_window_extent(canvas.get_renderer()).width / fig.dpi <= max_width - 0.3:
            return leg
        leg.remove()


def save(fig, name: str, folder: Path) -> None:
    """Save a chapter figure, after checking its text (fonts >= 8 pt, no overlaps, legends off the data): the
    problems found are recorded in `figure_checks.json` beside it, which the smoke-run test requires empty.
    Returns nothing, so a notebook cell ending with it echoes no path of this machine."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fit_width(fig)
    problems = text_problems(fig)
    checks = folder / CHECKS
    record = json.loads(checks.read_text()) if checks.is_file() else {}
    record = {k: v for k, v in record.items() if (folder / f"{k}.png").is_file()}  # no record of a removed figure
    record[name] = problems
    checks.write_text(json.dumps(dict(sorted(record.items())), indent=1, ensure_ascii=False) + "\n")
    # fixed metadata so an unchanged figure is byte-identical across runs
    fig.savefig(path, metadata={"Software": None})


def ci_bars(
    ax, df, x: str, hue: str, y: str = "f1pn", lo: str = "f1pn_lo", hi: str = "f1pn_hi", colors: dict | None = None
):
    """Grouped bars with asymmetric CI whiskers (seaborn's barplot cannot take precomputed CIs). Bars take the
    study's colour of their `hue` value (a split, subset or model; `colors` overrides); legend outside, right."""
    xs, hues = list(dict.fromkeys(df[x])), list(dict.fromkeys(df[hue]))
    width = 0.8 / len(hues)
    fallback, used = sns.color_palette(n_colors=len(hues)), set()
    for j, h in enumerate(hues):
        try:
            c = (colors or {}).get(h) or color(h)
        except KeyError:
            c = fallback[j]
        hatch = "//" if c in used else None  # one model under two decision rules: its colour, hatched the second time
        used.add(c)
        sub = df[df[hue] == h].set_index(x).reindex(xs)
        pos = [i - 0.4 + width * (j + 0.5) for i in range(len(xs))]
        label = SUBSET_LABELS.get(h, str(h)) if hue == "subset" else str(h)
        ax.bar(pos, sub[y], width, label=label, color=c, hatch=hatch, edgecolor="white" if hatch else None)
        ax.errorbar(pos, sub[y], yerr=[sub[y] - sub[lo], sub[hi] - sub[y]], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(range(len(xs)), [SUBSET_LABELS.get(v, str(v)) for v in xs] if x == "subset" else xs)
    ax.set_ylabel(axis_label(y))
    title = "validation rows" if hue == "subset" else hue
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


# --- chapter 06: attention -------------------------------------------------------------------------

GROUP_COLORS = {"entity": "#d62728", "special": "#7f7f7f", "sentiment": "#2ca02c", "other": "black"}
GROUP_NAMES = {"sentiment": "corpus-assoc. words", "special": "special tokens", "other": "other words"}
GROUP_NOTE = "token labels: red entity, green corpus-associated word, gray special token"


def _ticks(n: int, max_labels: int = 12) -> list[int]:
    """Positions 0..n-1 to label with 1..n: every one up to `max_labels`, else every k-th (and the last)."""
    step = max(1, -(-n // max_labels))
    return sorted(set(range(0, n, step)) | {n - 1})


def layer_head_grid(
    panels: dict,
    title: str,
    diverging: bool = False,
    frozen: int = 0,
    annotate: bool | None = None,
    cbar_label: str = "mass",
):
    """Layer x head maps, {(row label, column label): frame with layers as index and heads as
    columns (numbered from 1)}. One colour scale (and colour bar) per column; row labels on the
    left, column labels on top, head numbers only under the bottom row, so no text overlaps.
    `frozen`: a dashed line under the last frozen layer. Cells are annotated only when small."""
    rows, cols = list(dict.fromkeys(r for r, _ in panels)), list(dict.fromkeys(c for _, c in panels))
    n_layers, n_heads = next(iter(panels.values())).shape
    annotate = n_layers * n_heads <= 36 if annotate is None else annotate
    w, h = max(2.9, 0.25 * n_heads + 0.7), max(2.4, 0.2 * n_layers + 0.6)
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(w * len(cols) + 1.0, h * len(rows) + 1.4), squeeze=False, layout="constrained"
    )
    for c, col in enumerate(cols):
        vals = np.concatenate([np.ravel(panels[r, col]) for r in rows if (r, col) in panels])
        lim = float(np.nanmax(np.abs(vals))) or 1e-6
        vmin, vmax, cmap = (-lim, lim, "RdBu_r") if diverging else (0.0, lim, "Blues")
        for r, row in enumerate(rows):
            ax = axes[r, c]
            if (row, col) not in panels:
                ax.set_axis_off()
                continue
            data = panels[row, col]
            im = ax.imshow(
                np.asarray(data, dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest"
            )
            if annotate:
                fmt = ("{:+.3f}" if lim >= 0.005 else "{:+.1e}") if diverging else "{:.2f}"
                for (i, j), v in np.ndenumerate(np.asarray(data, dtype=float)):
                    ax.text(
                        j,
                        i,
                        fmt.format(v),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(v) > 0.6 * lim else "black",
                    )
            xt, yt = _ticks(n_heads), _ticks(n_layers)
            ax.set_xticks(xt, [str(data.columns[j]) for j in xt] if r == len(rows) - 1 else [], fontsize=7)
            ax.set_yticks(yt, [str(data.index[i]) for i in yt] if c == 0 else [], fontsize=7)
            ax.grid(False)
            if 0 < frozen < n_layers:
                ax.axhline(frozen - 0.5, color="black", ls="--", lw=1)
            if r == 0:
                ax.set_title(col, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{row}\nlayer", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("head", fontsize=9)
        cb = fig.colorbar(im, ax=axes[:, c], location="bottom", shrink=0.8, aspect=30, label=cbar_label)
        cb.locator = MaxNLocator(nbins=4, symmetric=diverging)
        cb.formatter = FuncFormatter(lambda v, _: f"{v:.2g}")
        cb.update_ticks()
    note = f"; dashed line: layers 1–{frozen} above it were frozen during fine-tuning" if 0 < frozen < n_layers else ""
    fig.suptitle(f"{title}\n(rows of a map: layer, columns: head{note})", fontsize=11)
    return fig


DODGE = 0.15  # layers between neighbouring conditions in layer_profile


def layer_profile(
    profile, frozen: int = 0, queries=("cls", "entity"), groups=("entity", "special", "sentiment", "other")
):
    """Mean mass per layer (heads averaged), one panel per query x group, one line per condition, the conditions
    side by side within a layer (equal masses, as in frozen layers, stay four visible lines); frozen layers
    shaded. `profile`: `lib.chapters.ch06.attention.Scan.layer_profile()`."""
    fig, axes = plt.subplots(
        len(queries),
        len(groups),
        figsize=(3.4 * len(groups), 2.9 * len(queries) + 0.8),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    styles = {
        ("initial", "unmasked"): ("#1f77b4", "-"),
        ("initial", "masked"): ("#1f77b4", "--"),
        ("fine-tuned", "unmasked"): ("#ff7f0e", "-"),
        ("fine-tuned", "masked"): ("#ff7f0e", "--"),
    }
    n_layers = int(profile["layer"].max())
    for r, q in enumerate(queries):
        for c, g in enumerate(groups):
            ax = axes[r, c]
            for i, ((m, mode), (colour, ls)) in enumerate(styles.items()):
                d = profile[
                    (profile["model"] == m)
                    & (profile["mode"] == mode)
                    & (profile["query"] == q)
                    & (profile["group"] == g)
                ]
                x = d["layer"] + DODGE * (i - (len(styles) - 1) / 2)
                ax.plot(x, d["mass"], color=colour, ls=ls, marker="o", ms=3, label=f"{m} · {mode}")
            if frozen:
                ax.axvspan(0.5, frozen + 0.5, color="gray", alpha=0.15, lw=0, label="frozen in fine-tuning")
            ax.set_xticks(range(1, n_layers + 1))
            ax.tick_params(labelsize=8)
            top = 1.15 * float(profile.loc[(profile["query"] == q) & (profile["group"] == g), "mass"].max()) + 1e-6
            ax.set_ylim(-0.04 * top, top)  # a mass of 0 keeps its whole marker
            ax.set_title(f"{'[CLS]' if q == 'cls' else 'entity'} → {GROUP_NAMES.get(g, g)}", fontsize=10)
            if c == 0:
                ax.set_ylabel("mean attention mass")
            if r == len(queries) - 1:
                ax.set_xlabel("layer")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    legend_below(fig, handles, labels, fontsize=8)
    fig.suptitle("Attention mass per layer, heads averaged (conditions side by side within a layer)", fontsize=11)
    return fig


def lexicon_bars(top: dict):
    """{label: frame with word and z}: the top words of each polar label by z-scored log-odds."""
    fig, axes = plt.subplots(
        1,
        len(top),
        figsize=(5 * len(top), 0.25 * max(len(t) for t in top.values()) + 1.2),
        squeeze=False,
        layout="constrained",
    )
    for ax, (lab, t) in zip(axes[0], top.items()):
        sns.barplot(t, y="word", x="z", color=LABEL_COLORS[lab], ax=ax)
        ax.set_title(f"{LABEL_NAMES[lab]} vs neutral: top words")
        ax.set_xlabel("z-scored log-odds")
        ax.set_ylabel("")
    return fig


def attribution_summary(agree, spearman, model: str = "fine-tuned"):
    """Left: share per group of each measure for `model` (one panel per copy); right: per-row
    Spearman(last-layer attention, |input × gradient|) over context tokens."""
    modes = list(dict.fromkeys(agree.loc[model].index.get_level_values("mode")))
    fig, axes = plt.subplots(
        1, len(modes) + 1, figsize=(4.4 * len(modes) + 5, 4.4), squeeze=False, layout="constrained"
    )
    long = agree.loc[model].reset_index().melt(id_vars=["mode", "group"], var_name="measure", value_name="share")
    for ax, mode in zip(axes[0], modes):
        sns.barplot(
            long[long["mode"] == mode],
            x="group",
            y="share",
            hue="measure",
            errorbar=None,
            ax=ax,
            legend=ax is axes[0, 0],
        )
        ax.set_title(f"{model} · {mode}: share per group", fontsize=10)
        ax.set_xlabel("")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].get_legend().remove()
    legend_below(fig, handles, labels, fontsize=8)
    sp = spearman.assign(condition=spearman["model"] + "\n" + spearman["mode"])
    ax = axes[0, -1]
    sns.boxplot(sp, x="condition", y="spearman", hue="query", ax=ax, fliersize=1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title("per row: Spearman(last-layer attention,\n|input × gradient|) over context tokens", fontsize=10)
    ax.set_xlabel("")
    ax.legend(title="query", fontsize=8, loc="lower right")
    return fig


def token_bars(tables: dict, measures=("attention (entity → token)", "|input × gradient|")):
    """{(example, mode): `lib.chapters.ch06.attention.token_table`}: per token, each measure's share of the row;
    rows the examples, columns the copies."""
    names, modes = list(dict.fromkeys(k[0] for k in tables)), list(dict.fromkeys(k[1] for k in tables))
    n = max(len(t) for t in tables.values())
    fig, axes = plt.subplots(
        len(names),
        len(modes),
        figsize=(max(5.0, 0.19 * n + 1.0) * len(modes), 3.0 * len(names) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    colors = sns.color_palette(n_colors=len(measures))
    for r, name in enumerate(names):
        for c, mode in enumerate(modes):
            t, ax = tables[name, mode], axes[r, c]
            x = np.arange(len(t))
            for j, m in enumerate(measures):
                ax.bar(x - 0.4 + 0.8 * (j + 0.5) / len(measures), t[m], 0.8 / len(measures), color=colors[j], label=m)
            ax.set_xticks(x, t["token"], rotation=90, fontsize=6)
            for lab, g in zip(ax.get_xticklabels(), t["group"]):
                lab.set_color(GROUP_COLORS[g])
            ax.set_xlim(-0.6, len(t) - 0.4)
            ax.set_title(f"{name} · {mode}", fontsize=10)
            ax.set_ylabel("share of the row" if c == 0 else "")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    legend_below(fig, handles, labels, fontsize=9)
    fig.suptitle(f"Fine-tuned model, last layer (heads averaged) vs input × gradient; {GROUP_NOTE}", fontsize=11)
    return fig
