"""Notebook 06's examples, tables, figures and answer text, from `lib.chapters.ch06.attention`'s computation.

Figures keep `lib.chapters.plots`'s style (`plots.setup`, `plots.save`, its group colours). `readable` raises every
text of a figure to at least MIN_PT points and moves axes legends off the data; `sink_free_vmax` sets an attention
map's colour scale without the special tokens ([CLS]/[SEP], <s>/</s>), which otherwise take most of the weight.
Layers and heads are numbered from 1, as in `lib.chapters.ch06.attention`; bertviz numbers both from 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Patch
from matplotlib.text import Text

from ... import model as hm
from ...config import ROOT
from ...training import collate
from .. import plots
from . import attention as A
from .examples import pick_examples  # noqa: F401  (the notebook's R.pick_examples)

NAMES = {-1: "negative", 1: "positive"}
MIN_PT = 8  # smallest font size of a saved figure, in points
ORDINAL = {2: "2nd", 3: "3rd"}
GROUP_LABELS = {
    "entity": "entity",
    "special": "special token",
    "sentiment": "corpus-associated word",  # a word used more in polar than in neutral train rows, not a lexicon
    "other": "other word",
}


# --- the examples ---------------------------------------------------------------------------------


def show_layers(n_layers: int, freeze: int = 0) -> list[int]:
    """Layers for the static per-example maps: the last frozen one (if any), the middle of the
    trained ones, and the last."""
    return sorted({layer for layer in (freeze, (freeze + n_layers + 1) // 2, n_layers) if layer >= 1})


@torch.no_grad()
def example_view(model: hm.HamamModel, tokenizer, example: dict, mode: str, decimals: int | None = None):
    """(attention tuple of (1, H, T, T) per layer, token strings) as bertviz wants them.

    Tokens are the ids the model saw, so the masked copy shows the mask token at the entity's
    positions; the entity's tokens are shown in double brackets (⟦…⟧), since bertviz highlights none.
    With `decimals`, weights are rounded in float64 so bertviz's JSON stays short.
    """
    x = collate([example], tokenizer.pad_token_id)
    att = A.forward_attentions(model, x, mode)[1].cpu()
    ids = hm.mask_entity(x["input_ids"], x["entity_mask"], model.mask_token_id) if mode == "masked" else x["input_ids"]
    if decimals is not None:
        att = torch.round(att.double(), decimals=decimals)
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    tokens = [f"⟦{tk}⟧" if e else tk for tk, e in zip(tokens, x["entity_mask"][0].tolist())]
    return tuple(att[:, layer] for layer in range(att.shape[1])), tokens


def token_table(model: hm.HamamModel, tokenizer, example: dict, mode: str) -> pd.DataFrame:
    """Per token of one example (with `groups`): the last layer's attention from the entity tokens
    (heads averaged) and |input × gradient|, each as a share of the row."""
    x = A.collate_groups([example], tokenizer.pad_token_id)
    attr, _, att = A.input_x_gradient(model, x, mode)
    row = A.query_rows(att[:, -1].mean(1), x["entity_mask"])[0, A.QUERIES.index("entity")]
    ids = hm.mask_entity(x["input_ids"], x["entity_mask"], model.mask_token_id) if mode == "masked" else x["input_ids"]
    return pd.DataFrame(
        {
            "token": tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            "group": [A.GROUPS[g] for g in example["groups"]],
            "attention (entity → token)": (row / row.sum()).numpy(),
            "|input × gradient|": (attr[0] / attr[0].sum().clamp(min=1e-12)).numpy(),
        }
    )


def show(view, kind: str = "head", layers=None, decimals: int = 2, **kwargs):
    """Draw an `example_view` with bertviz: kind "head" (head_view, opened at the last layer shown)
    or "model" (model_view, layers x heads). `layers` (numbered from 1; all when None) limits what
    is embedded; weights are rounded to `decimals` in float64. Both keep the notebook's JSON short.
    bertviz labels layers (head_view's drop-down, model_view's rows) and model_view's heads from 0."""
    from bertviz import head_view, model_view

    att, tokens = view
    include = None if layers is None else [layer - 1 for layer in layers]
    att = tuple(torch.round(a.double(), decimals=decimals) for a in att)
    if kind == "head":
        return head_view(att, tokens, **{"layer": (include or [len(att) - 1])[-1], "include_layers": include, **kwargs})
    if kind == "model":
        return model_view(att, tokens, **{"display_mode": "light", "include_layers": include, **kwargs})
    raise ValueError(f"kind must be 'head' or 'model', got {kind!r}")


# --- tables ---------------------------------------------------------------------------------------


def lexicon_top(lexicon: pd.DataFrame, k: int = 15) -> pd.DataFrame:
    """The top `k` words per polar label side by side."""
    cols = ["word", "count", "neutral_count", "z"]
    top = {name: lexicon[lexicon["label"] == lab].head(k)[cols].reset_index(drop=True) for lab, name in NAMES.items()}
    return pd.concat(top, axis=1)


def token_shares(examples: list[dict]) -> pd.DataFrame:
    """Share of each row's tokens per group: what uniform attention would put on each group."""
    counts = [np.bincount(e["groups"], minlength=len(A.GROUPS)) / len(e["groups"]) for e in examples]
    return pd.DataFrame(counts, columns=list(A.GROUPS))


def mean_mass_table(scan: A.Scan, layers=None) -> pd.DataFrame:
    """Mean mass per condition and query (rows) and group (columns), over the given layers."""
    keys = [(m, c, q) for m, c in A.CONDITIONS for q in A.QUERIES]
    rows = {k: {g: scan.row_mass(*k, g, layers).mean() for g in A.GROUPS} for k in keys}
    return pd.DataFrame(rows).T.rename_axis(["model", "mode", "query"])


def mass_panels(scan: A.Scan, query: str) -> dict:
    """{(condition, "→ group"): layer x head frame} for one query: rows the four conditions."""
    names = plots.GROUP_NAMES
    return {
        (f"{m} · {c}", f"→ {names.get(g, g)}"): scan.grid(m, c, query, g) for m, c in A.CONDITIONS for g in A.GROUPS
    }


def diff_panels(scan: A.Scan, kind: str) -> dict:
    """Layer x head differences of mean mass. kind "finetuning": fine-tuned − initial, rows (query,
    copy); kind "masking": masked − unmasked, rows (query, model)."""
    if kind not in ("finetuning", "masking"):
        raise ValueError(f"kind must be 'finetuning' or 'masking', got {kind!r}")
    out = {}
    for q in A.QUERIES:
        for part in A.COPIES if kind == "finetuning" else A.MODELS:
            for g in A.GROUPS:
                pairs = (
                    [("fine-tuned", part), ("initial", part)]
                    if kind == "finetuning"
                    else [(part, "masked"), (part, "unmasked")]
                )
                d = scan.grid(*pairs[0], q, g) - scan.grid(*pairs[1], q, g)
                out[(f"from {'[CLS]' if q == 'cls' else 'entity'} · {part}", f"→ {plots.GROUP_NAMES.get(g, g)}")] = d
    return out


# --- figures --------------------------------------------------------------------------------------


def readable(fig, size: float = MIN_PT):
    """Raise every text of `fig` (tick labels included) to at least `size` points and move each axes
    legend out of its data, to the right of the axes; returns `fig`."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if any(t.get_fontsize() < size for t in axis.get_ticklabels()):
                ax.tick_params(axis="x" if axis is ax.xaxis else "y", labelsize=size)
        if ax.get_legend() is not None:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=size)
    for t in fig.findobj(Text):
        if t.get_fontsize() < size:
            t.set_fontsize(size)
    return fig


def sink_free_vmax(att, groups) -> float:
    """Top of an attention map's colour scale: its largest weight on a key (column) that is not a
    special token, so the sink tokens, which draw most of the attention, do not set the scale."""
    att, keep = np.asarray(att, dtype=float), np.array([g != "special" for g in groups])
    return max(float(att[:, keep].max()) if keep.any() else float(att.max()), 1e-6)


def group_legend(fig, groups, extra: dict | None = None) -> None:
    """A legend below the figure: `extra` ({label: handle}) first, then the token-label colours of the
    groups that occur in `groups`, and only those."""
    present = [g for g in A.GROUPS if g in set(groups)]
    items = dict(extra or {}) | {
        f"{GROUP_LABELS[g]} (label colour)": Patch(color=plots.GROUP_COLORS[g]) for g in present
    }
    plots.legend_below(fig, list(items.values()), list(items), fontsize=MIN_PT + 1)


def attention_maps(cells: dict, title: str, x_labels_every_row: bool):
    """{(row, column): (T x T attention, tokens, group names)}: one map per cell (rows attend to
    columns) with its own colour bar from 0 to `sink_free_vmax`; heavier weights, mostly on the
    special tokens, are clipped, which an arrow on the bar marks."""
    rows, cols = list(dict.fromkeys(r for r, _ in cells)), list(dict.fromkeys(c for _, c in cells))
    n = max(len(v[1]) for v in cells.values())
    fit = max((plots.MAX_WIDTH - 0.6) / len(cols) - 0.9, 2.0)  # the widest map that keeps the figure on a page
    s = min(1.0 + 0.14 * n, fit)  # 8-pt token labels need about 0.14 in each
    step = int(np.ceil(0.14 * n / (s - 1.0)))  # a long sentence: every step-th token labelled, so none collide
    size = (len(cols) * (s + 0.9) + 0.6, len(rows) * (s + (1.0 if x_labels_every_row else 0.0)) + 2.0)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=size, squeeze=False, layout="constrained")
    for (r, row), (c, col) in ((rc, cc) for rc in enumerate(rows) for cc in enumerate(cols)):
        att, tokens, groups = cells[row, col]
        att, ax, vmax = np.asarray(att, dtype=float), axes[r, c], sink_free_vmax(att, groups)
        im = ax.imshow(att, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.grid(False)
        x_on, at = x_labels_every_row or r == len(rows) - 1, list(range(0, len(tokens), step))
        shown = [tokens[i] for i in at]
        ax.set_xticks(at, shown if x_on else [], rotation=90, fontsize=MIN_PT)
        ax.set_yticks(at, shown if c == 0 else [], fontsize=MIN_PT)
        ax.tick_params(length=0)
        for lab, i in [*zip(ax.get_xticklabels(), at), *zip(ax.get_yticklabels(), at)]:
            lab.set_color(plots.GROUP_COLORS[groups[i]])
        cb = fig.colorbar(im, ax=ax, shrink=0.8, aspect=25, extend="max" if att.max() > vmax else "neither")
        cb.ax.tick_params(labelsize=MIN_PT)
        ax.set_title(col if r == 0 else "", fontsize=10)
        ax.set_ylabel(row if c == 0 else "", fontsize=10)
    sinks = dict.fromkeys(t for _, tokens, groups in cells.values() for t, g in zip(tokens, groups) if g == "special")
    note = f"colour scale per map: 0 to its largest weight on a non-special token ({', '.join(sinks)} left out)"
    note += f"; every {ORDINAL.get(step, f'{step}th')} token labelled" if step > 1 else ""
    fig.suptitle(f"{title}\nrows attend to columns; {note}", fontsize=11)
    group_legend(fig, [g for _, _, groups in cells.values() for g in groups])
    return fig


def example_maps(views: dict, groups, layers, title: str):
    """One example: rows the conditions {(model, mode): (attention tuple, tokens)}, columns the given
    layers (numbered from 1); each map is the mean over heads."""
    cells = {
        (" · ".join(c), f"layer {layer}"): (v[0][layer - 1][0].mean(0), v[1], groups)
        for c, v in views.items()
        for layer in layers
    }
    return attention_maps(cells, f"{title}; heads averaged", x_labels_every_row=False)


def head_maps(views: dict, groups: dict, layer: int, head: int, title: str):
    """One head (numbered from 1) on several examples: {(example, model, mode): (attention tuple,
    tokens)}; rows the examples, columns the conditions (one example: rows the models, columns the copies);
    `groups`: {example: group names}."""
    examples = list(dict.fromkeys(k[0] for k in views))
    if len(examples) == 1:  # one example: models as rows, copies as columns (a 2 x 2 grid fits a page)
        cells = {(k[1], k[2]): (v[0][layer - 1][0, head - 1], v[1], groups[k[0]]) for k, v in views.items()}
        return attention_maps(cells, f"{title}\nexample: {examples[0]}", x_labels_every_row=True)
    cells = {(k[0], " · ".join(k[1:])): (v[0][layer - 1][0, head - 1], v[1], groups[k[0]]) for k, v in views.items()}
    return attention_maps(cells, title, x_labels_every_row=True)


def token_bars(tables: dict):
    """`lib.chapters.plots.token_bars` with readable labels and one legend that names the measures and only
    the token-label colours that occur."""
    fig = plots.token_bars(tables)
    old = fig.legends[0]
    measures = {t.get_text(): h for t, h in zip(old.get_texts(), old.legend_handles)}
    old.remove()
    fig.suptitle("Fine-tuned model: last layer's attention from the entity (heads averaged) vs input × gradient")
    group_legend(fig, [g for t in tables.values() for g in t["group"]], extra=measures)
    return readable(fig)


# --- the answer -----------------------------------------------------------------------------------


def display_path(path) -> str:
    """`path` relative to the repository root when inside it (as the README cites files), else as is."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _fmt(*values, signed: bool = False) -> list[str]:
    """The values with 3 decimals, or 4 when all are below 0.01 (lexicon words hold ~1% of tokens)."""
    d = 4 if max(abs(float(v)) for v in values) < 0.01 else 3
    return [f"{round(float(v), d) + 0.0:{'+' if signed else ''}.{d}f}" for v in values]  # + 0.0: no "-0.000"


def _ci(v, signed: bool = False) -> str:
    """ "v [lo, hi]"; signed differences also say whether the CI excludes 0 (or is too small to show)."""
    s = _fmt(*v, signed=signed)
    if len(v) == 1:
        return s[0]
    text = f"{s[0]} [{s[1]}, {s[2]}]"
    if not signed:
        return text
    if max(abs(v[1]), abs(v[2])) < 5e-5:
        return text + " (negligible: the whole CI is within ±0.00005)"
    return text + (" (CI excludes 0)" if v[1] > 0 or v[2] < 0 else " (CI includes 0)")


def _moved(scan: A.Scan, query: str, group: str, mode: str = "unmasked") -> str:
    h, T, last = A.head_gain(scan, query, group, mode), scan.trained, [scan.shape[0]]
    m = [scan.row_mass(k, mode, query, group, T).mean() for k in A.MODELS]
    e = [scan.row_mass(k, mode, query, group, last).mean() for k in A.MODELS]
    hb, ha = _fmt(h["before"], h["after"])
    which = "heads of the trained layers" if scan.freeze else "heads"
    return (
        f"{h['up']}/{h['n']} {which} gain; the largest gain of the {h['n']}, layer {h['layer']} head {h['head']}: "
        f"{hb} → {ha} ({_fmt(h['gain'], signed=True)[0]}); the largest change in either direction, layer "
        f"{h['abs_layer']} head {h['abs_head']}: {_fmt(h['abs_change'], signed=True)[0]}; "
        f"mean over {'the trained' if scan.freeze else 'all'} "
        f"layers {' → '.join(_fmt(*m))}, last layer {' → '.join(_fmt(*e))}"
    )


def _span(scan: A.Scan, query: str, group: str) -> str:
    return " → ".join(_fmt(*(scan.row_mass(m, "unmasked", query, group, scan.trained).mean() for m in A.MODELS)))


def _groups(d: dict) -> str:
    plural = {g: GROUP_LABELS[g] + ("" if g == "entity" else "s") for g in d}  # "corpus-associated words"
    return ", ".join(f"{plural[g]} {v}" for g, v in zip(d, _fmt(*d.values(), signed=True)))


def verdict(nums: dict) -> str:
    """The chapter's question answered yes/no from the fine-tuning changes and their CIs: does attention move toward
    the entity (from [CLS]) and from the entity toward the words that go with polar labels (against uniform)?"""
    parts, uniform = [], {"entity_to_sentiment": nums.get("06.uniform.sentiment_share", [0.0])[0]}
    for key, what in (
        ("cls_to_entity", "from [CLS] toward the entity"),
        ("entity_to_sentiment", "from the entity toward corpus-associated words"),
    ):
        v, lo, hi = nums[f"06.{key}.trained_layers.finetuned_minus_initial"]
        after = nums[f"06.{key}.trained_layers.finetuned"][0]
        word = "yes" if lo > 0 else "no, it moves away" if hi < 0 else "no measurable move"
        word += ", yet still below uniform attention" if lo > 0 and after < uniform.get(key, 0.0) else ""
        parts.append(f"{what}: **{word}** ({_ci([v, lo, hi], True)}; after fine-tuning {_fmt(after)[0]})")
    return (
        "**Does our model do what the reference inspection reported (attention moving to the entity and to "
        "sentiment-bearing words after fine-tuning)?** Mean mass in the trained layers, fine-tuned − initial, "
        + "; ".join(parts)
        + ". The word group is learnt from this corpus' labels (words more frequent in polar than in neutral train "
        "rows), not a published lexicon: a word in it may go with polar rows without carrying sentiment itself."
    )


def answer(
    scan: A.Scan, nums: dict, *, profile: str, backbone: str, lexicon_size: int, figures: str = "figures"
) -> str:
    """The chapter's answer as Markdown, every number computed from `scan` and `nums`
    (`lib.chapters.ch06.attention.headline`); `figures`: the folder the chapter's figures were saved in."""
    L, H = scan.shape
    f, ft = scan.freeze, "fine-tuned"
    share = scan.results[ft, "unmasked"]["tokens"].mean(0)
    trained = f"layers {f + 1}–{L}" if f else f"all {L} layers"
    intro = (
        f"**Where the model looks ({profile} profile, {backbone}: {L} layers × {H} heads, {len(scan.rows)} validation "
        "rows; layers and heads numbered from 1, bertviz counts from 0).**"
    )
    if f:
        change = nums["06.frozen_layers.max_abs_change"][0]
        frozen_change = "0, identical" if change == 0 else f"{change:.1e}"
        intro += (
            f" Fine-tuning kept the embeddings and layers 1–{f} frozen, so in those layers both models compute the "
            f"same attention (largest difference of a head's mean mass there: {frozen_change}). Every fine-tuning "
            "effect below is therefore read in "
            f"the trained {trained}, and what masking changes in layers 1–{f} is the pre-trained model's response to "
            "the mask token."
        )
    else:
        intro += " All layers were fine-tuned."
    k = "06.{}.trained_layers.{}"
    d_ent, d_sent = (
        _ci(nums[k.format(x, "finetuned_minus_initial")], True) for x in ("cls_to_entity", "entity_to_sentiment")
    )
    out = [
        intro,
        verdict(nums),
        f"Uniform attention would put {share[0]:.3f} of a query's mass on the entity, {share[1]:.3f} on special "
        f"tokens and {_fmt(share[2])[0]} on the {lexicon_size} corpus-associated words (mean token shares).",
        f"*Toward the entity after fine-tuning* (unmasked copy, {trained}): from [CLS] — "
        f"{_moved(scan, 'cls', 'entity')}; change of the mean {d_ent}. "
        f"From the entity tokens — {_moved(scan, 'entity', 'entity')}.",
        f"*Toward corpus-associated words after fine-tuning* (unmasked copy, {trained}): from the entity tokens — "
        f"{_moved(scan, 'entity', 'sentiment')}; change of the mean {d_sent}. From [CLS] — "
        f"{_moved(scan, 'cls', 'sentiment')}. In the masked copy, from the entity positions — "
        f"{_moved(scan, 'entity', 'sentiment', 'masked')}.",
        f"*Special tokens* (unmasked copy, {trained}): from the entity tokens {_span(scan, 'entity', 'special')}; "
        f"from [CLS] {_span(scan, 'cls', 'special')}.",
    ]
    diff = {
        q: {g: (scan.row_mass(ft, "masked", q, g) - scan.row_mass(ft, "unmasked", q, g)).mean() for g in A.GROUPS}
        for q in A.QUERIES
    }
    ctx = {
        m: scan.row_mass(m, "masked", "entity", A.CONTEXT, scan.trained)
        - scan.row_mass(m, "unmasked", "entity", A.CONTEXT, scan.trained)
        for m in A.MODELS
    }
    ts = _fmt(ctx[ft].mean(), ctx["initial"].mean(), signed=True)
    alone = f" (in the trained {trained} alone: {ts[0]} fine-tuned vs {ts[1]} initial)" if f else ""
    m = "06.masked_minus_unmasked.entity_to_context.{}"
    out.append(
        "*What masking the entity changes* (masked − unmasked copy, mean over all layers and heads). Fine-tuned "
        f"model, from the entity positions: {_groups(diff['entity'])}; onto the context words (lexicon + other) "
        f"{_ci(nums[m.format('finetuned')], True)}, of which corpus-associated words "
        f"{_ci(nums['06.masked_minus_unmasked.entity_to_sentiment.finetuned'], True)}. From [CLS]: "
        f"{_groups(diff['cls'])}. The initial backbone moves {_ci(nums[m.format('initial')], True)} onto the context, "
        f"so fine-tuning changed this shift by {_ci(nums[m.format('finetuned_minus_initial')], True)}{alone}."
    )
    bl = A.sentiment_by_label(scan)
    row, base = bl.loc[(ft, "unmasked", "entity")], bl.loc[("uniform attention", "", "(token share)")]
    vals = _fmt(*row, *base)
    by_label = ", ".join(f"{lab} {vals[i]} (uniform {vals[len(row) + i]})" for i, lab in enumerate(row.index))
    out.append(
        "*Polar vs neutral rows* (fine-tuned, unmasked, last layer, from the entity): corpus-associated words "
        f"{by_label}."
    )
    if "06.attribution.entity_share.finetuned" in nums:
        out.append(_attribution(scan, nums))
    if profile == "smoke":
        out.append(
            "*Smoke profile: a tiny random backbone trained for one epoch on a few hundred rows; the numbers test the "
            "pipeline, not the hypothesis.*"
        )
    out.append(
        f"Figures: `{figures}/06_*.png`; every layer × head mass: `{figures}/06_layer_head_masses.csv`; the executed "
        "chapter with the bertviz views: `reports/06_attention.html`."
    )
    return "\n\n".join(out)


def _attribution(scan: A.Scan, nums: dict) -> str:
    ft, ag, rh = "fine-tuned", A.agreement(scan).sort_index(), A.spearman_summary(scan)
    rho = rh.loc[(ft, "unmasked", "entity")]
    masked = rh.loc[(ft, "masked", "entity"), "median"] if (ft, "masked", "entity") in rh.index else float("nan")
    att = ag.loc[(ft, "unmasked"), "attention from entity, last layer"]
    verdict = (
        "Attention and attribution rank context words alike more often than not, but loosely."
        if rho["median"] > 0.2
        else "Attention is a weak guide to which context words drive the prediction."
    )
    return (
        "*Attention vs attribution* (fine-tuned, unmasked copy): input × gradient puts "
        f"{_ci(nums['06.attribution.sentiment_share.finetuned'])} of its mass on corpus-associated words and "
        f"{_ci(nums['06.attribution.entity_share.finetuned'])} on the entity, against {_fmt(att['sentiment'])[0]} and "
        f"{att['entity']:.3f} for the last layer's attention from the entity. Per row, over context tokens, the median "
        f"Spearman correlation between last-layer attention from the entity and |input × gradient| is "
        f"{rho['median']:.2f} (positive in {rho['share_positive']:.0%} of {int(rho['rows'])} rows; from [CLS] "
        f"{rh.loc[(ft, 'unmasked', 'cls'), 'median']:.2f}; masked copy, from the entity: {masked:.2f}). {verdict}"
    )
