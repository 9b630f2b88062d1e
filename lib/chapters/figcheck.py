"""Find text problems in a finished figure: tiny fonts, overlapping texts, legends over data, text off the canvas.

`text_problems(fig)` draws the figure once with the Agg renderer and looks only at the texts that were
actually drawn (visible, non-empty, tick labels inside the view limits), so what it reports is what a
reader of the saved PNG sees. Each problem is one readable line naming the texts and their axes.
"""

from __future__ import annotations

from unittest import mock

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from scipy.sparse.csgraph import connected_components

SHRINK = 1.0  # px taken off every side of a text box, so texts that only touch do not count as overlapping


def _drawn_texts(fig):
    """Draw `fig` with Agg; returns (renderer, texts drawn), each Text once, in drawing order."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    drawn, original = {}, Text.draw

    def spy(self, renderer):
        if self.get_visible() and self.get_text().strip() and (self.get_alpha() is None or self.get_alpha() > 0):
            drawn.setdefault(id(self), self)
        return original(self, renderer)

    with mock.patch.object(Text, "draw", spy):
        canvas.draw()
    return canvas.get_renderer(), list(drawn.values())


def _axes_name(ax, i: int) -> str:
    if ax is None:
        return "the figure"
    title = next((t for t in (ax.get_title(loc) for loc in ("center", "left", "right")) if t), "")
    if title:
        return f"axes '{title[:40]}'"
    return f"axes {ax.get_label()}" if ax.get_label() and not ax.get_label().startswith("_") else f"axes #{i}"


def _name(t: Text) -> str:
    s = " ".join(t.get_text().split())
    return repr(s[:30] + ("…" if len(s) > 30 else ""))


def _names(ts: list[Text], shown: int = 4) -> str:
    if len(ts) == 2:
        return f"{_name(ts[0])} and {_name(ts[1])}"
    more = f" (+{len(ts) - shown} more)" if len(ts) > shown else ""
    return ", ".join(_name(t) for t in ts[:shown]) + more


def _legends(fig):
    """(legend, axes it belongs to or None for a figure legend)."""
    out = [(ax.get_legend(), ax) for ax in fig.axes if ax.get_legend() is not None]
    return out + [(leg, None) for leg in fig.legends]


def _data_hits(ax, box: Bbox, renderer) -> list[str]:
    """What data of `ax` (points of lines and scatters, bars/patches, other collections) lies in `box`."""
    hits, inside = [], ax.bbox

    def points_in(xy) -> bool:
        def within(b, xy):
            return (xy[:, 0] >= b.x0) & (xy[:, 0] <= b.x1) & (xy[:, 1] >= b.y0) & (xy[:, 1] <= b.y1)

        xy = xy[np.isfinite(xy).all(1)]
        xy = xy[within(inside, xy)]  # data outside the view is not drawn
        return bool(within(box, xy).any())

    for line in ax.lines:
        if line.get_visible() and line.get_transform().contains_branch(ax.transData) and len(line.get_xydata()):
            xy = line.get_transform().transform(line.get_xydata())
            if line.get_linestyle() not in ("None", "", " ") and len(xy) > 1:  # sample the segments too, ~every 2 px
                steps = np.nan_to_num(np.hypot(*np.diff(xy, axis=0).T) / 2).astype(int).clip(1, 2000)
                seg = [a + (b - a) * np.linspace(0, 1, n + 1)[:, None] for a, b, n in zip(xy[:-1], xy[1:], steps)]
                xy = np.concatenate(seg)
            if points_in(xy):
                hits.append(f"line {line.get_label()!r}" if not line.get_label().startswith("_") else "a line")
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            hit = points_in(coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), float)))
        else:
            tr = coll.get_transform()
            hit = any(tr.transform_path(p).intersects_bbox(box, filled=True) for p in coll.get_paths())
        if hit:
            hits.append(f"{type(coll).__name__} {coll.get_label()!r}".replace(" '_", " '"))
    shown = [Bbox.intersection(p.get_window_extent(renderer), inside) for p in ax.patches if p.get_visible()]
    bars = [b for b in shown if b is not None and b.overlaps(box)]
    if bars:
        hits.append(f"{len(bars)} patch(es)/bar(s)")
    return hits


def text_problems(fig, min_size: float = 8.0, tight: bool | None = None) -> list[str]:
    """Problems with the drawn texts of `fig`; [] when none.

    (a) font size below `min_size` points; (b) two text boxes that overlap (tick labels included);
    (c) a legend over data of its axes (any axes for a figure legend); (d) text outside the saved
    area: the figure canvas, or with `tight` (default: rcParams["savefig.bbox"] == "tight") the
    tight bounding box that `savefig` would crop to, which grows to take in texts outside the canvas.
    """
    renderer, texts = _drawn_texts(fig)
    owner = {}
    for i, ax in enumerate(fig.axes):
        for t in ax.findobj(Text):
            owner.setdefault(id(t), _axes_name(ax, i))
    where = {id(t): owner.get(id(t), "the figure") for t in texts}
    problems = []

    small: dict[tuple[str, float], list[Text]] = {}
    for t in texts:
        if t.get_fontsize() < min_size:
            small.setdefault((where[id(t)], t.get_fontsize()), []).append(t)
    for (w, size), ts in small.items():
        problems.append(f"small font: {len(ts)} text(s) at {size:g} pt < {min_size:g} pt in {w}: {_names(ts)}")

    boxes = np.array([Text.get_window_extent(t, renderer).extents for t in texts]).reshape(-1, 4)
    lo, hi = boxes[:, :2] + SHRINK, boxes[:, 2:] - SHRINK  # NaN boxes compare False: never overlap
    over = ((lo[:, None] < hi[None]) & (lo[None] < hi[:, None])).all(-1)
    # one problem per group of texts that overlap one another (a crammed row of tick labels is one group)
    n_groups, group = connected_components(over & ~np.eye(len(texts), dtype=bool), directed=False)
    for g in range(n_groups):
        ts = [t for t, k in zip(texts, group) if k == g]
        if len(ts) > 1:
            places = " / ".join(dict.fromkeys(where[id(t)] for t in ts))
            problems.append(f"overlapping texts in {places}: {_names(ts)}")

    for leg, ax in _legends(fig):
        box = leg.get_window_extent(renderer)
        for k, a in [(fig.axes.index(ax), ax)] if ax is not None else list(enumerate(fig.axes)):
            hits = _data_hits(a, box, renderer)
            if hits:
                label = _names([leg.get_title()] if leg.get_title().get_text() else leg.get_texts(), 2)
                problems.append(f"legend {label} covers data in {_axes_name(a, k)}: {', '.join(hits)}")

    tight = mpl.rcParams["savefig.bbox"] == "tight" if tight is None else tight
    area = fig.bbox if not tight else Bbox(fig.get_tightbbox(renderer).get_points() * fig.dpi)
    for t, (x0, y0, x1, y1) in zip(texts, boxes):
        if x0 < area.x0 - SHRINK or y0 < area.y0 - SHRINK or x1 > area.x1 + SHRINK or y1 > area.y1 + SHRINK:
            problems.append(f"text outside the {'saved area' if tight else 'figure'}: {_name(t)} in {where[id(t)]}")
    return problems
