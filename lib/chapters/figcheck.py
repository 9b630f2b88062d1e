"""Find problems in a finished figure: tiny fonts, overlapping texts, legends over data or other texts, text off
the canvas, markers cut by the axes' edge, lines drawn exactly under other lines.

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
from matplotlib.container import ErrorbarContainer
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..metrics import count

SHRINK = 1.0  # px taken off every side of a text box, so texts that only touch do not count as overlapping


def agg_canvas(fig) -> FigureCanvasAgg:
    """The figure's Agg canvas (one is attached where it has another): what savefig's PNG is drawn with."""
    return fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)


def _drawn_texts(fig):
    """Draw `fig` with Agg; returns (renderer, texts drawn), each Text once, in drawing order."""
    canvas = agg_canvas(fig)
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
            solid = line.get_linestyle() not in ("None", "", " ")  # its segments count too, sampled every pixel
            xy = _sampled(line) if solid else line.get_transform().transform(np.asarray(line.get_xydata(), float))
            if points_in(xy):
                hits.append(_line_name(line))
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
        hits.append(count(len(bars), "patch or bar", "patches or bars"))
    return hits


def _within(xy: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    """Which display points lie inside `box` shrunk by `margin` px on every side (grown where negative)."""
    x, y = xy[:, 0], xy[:, 1]
    return (x >= box.x0 + margin) & (x <= box.x1 - margin) & (y >= box.y0 + margin) & (y <= box.y1 - margin)


def _line_name(line) -> str:
    """A line's legend label; an errorbar's data line by its container's label (the line itself has none)."""
    label = line.get_label()
    for c in line.axes.containers if line.axes is not None and label.startswith("_") else ():
        if isinstance(c, ErrorbarContainer) and c.lines[0] is line:
            label = c.get_label() or label
    return f"line {label!r}" if not label.startswith("_") else "a line"


def _sampled(line) -> np.ndarray:
    """The drawn path of a line in display pixels, sampled about every pixel."""
    xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
    xy = xy[np.isfinite(xy).all(1)]
    if len(xy) < 2:
        return xy
    steps = np.nan_to_num(np.hypot(*np.diff(xy, axis=0).T)).astype(int).clip(1, 4000)
    return np.concatenate([a + (b - a) * np.linspace(0, 1, n + 1)[:, None] for a, b, n in zip(xy[:-1], xy[1:], steps)])


def clipped_markers(fig) -> list[str]:
    """Markers that the axes' edge cuts: a clipped line's marker whose centre lies within its radius of the edge
    (half a point on the border reads as a different value, or as no point at all)."""
    out = []
    for i, ax in enumerate(fig.axes):
        box = ax.bbox
        for line in ax.lines:
            if not line.get_visible() or not line.get_clip_on() or line.get_marker() in (None, "None", "", " "):
                continue
            if line.get_marker() in ("_", "|", 0, 1, 2, 3):  # caps and ticks: thin by design
                continue
            r = line.get_markersize() / 2 * fig.dpi / 72
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
            xy = xy[np.isfinite(xy).all(1)]
            cut = int((_within(xy, box, -r + 1e-6) & ~_within(xy, box, r)).sum())
            if cut:
                out.append(f"{count(cut, 'marker')} of {_line_name(line)} cut by the edge of {_axes_name(ax, i)}")
    return out


def hidden_lines(fig, share: float = 0.95) -> list[str]:
    """Lines whose drawn path lies (>= `share` of it) under a line at least as wide drawn later in the same axes:
    a reader sees one line where the figure means two."""
    out = []
    for i, ax in enumerate(fig.axes):
        drawn = [ln for ln in ax.lines if ln.get_visible() and ln.get_linestyle() not in ("None", "", " ")]
        lines = [ln for ln in drawn if len(ln.get_xydata()) > 1]
        order = sorted(range(len(lines)), key=lambda k: (lines[k].get_zorder(), k))  # drawing order
        paths = {k: _sampled(lines[k]) for k in order}
        inside = ax.bbox
        for a_pos, a in enumerate(order):
            pa = paths[a][_within(paths[a], inside)]
            if not len(pa):
                continue
            for b in order[a_pos + 1 :]:
                if not len(paths[b]) or lines[b].get_linewidth() < lines[a].get_linewidth():
                    continue  # a wider line shows around a narrower one drawn over it
                tol = max(1.0, lines[b].get_linewidth() * fig.dpi / 72 / 2)
                d, _ = cKDTree(paths[b]).query(pa, distance_upper_bound=tol + 1e-9)
                if np.isfinite(d).mean() >= share:
                    out.append(f"{_line_name(lines[a])} hidden under {_line_name(lines[b])} in {_axes_name(ax, i)}")
                    break
    return out


def text_problems(fig, min_size: float = 8.0, tight: bool | None = None) -> list[str]:
    """Problems with the drawn texts of `fig`; [] when none.

    (a) font size below `min_size` points; (b) two text boxes that overlap (tick labels included);
    (c) a legend over data of its axes (any axes for a figure legend); (d) text outside the saved
    area: the figure canvas, or with `tight` (default: rcParams["savefig.bbox"] == "tight") the
    tight bounding box that `savefig` would crop to, which grows to take in texts outside the canvas;
    (e) a legend over a text that is not its own (a title, a label); (f) markers cut by the axes' edge
    (`clipped_markers`); (g) lines hidden under other lines (`hidden_lines`).
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
        problems.append(f"small font: {count(len(ts), 'text')} at {size:g} pt < {min_size:g} pt in {w}: {_names(ts)}")

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

    for leg, _ in _legends(fig):
        own = {id(t) for t in leg.findobj(Text)}
        box = leg.get_window_extent(renderer)
        covered = [t for t, b in zip(texts, boxes) if id(t) not in own and Bbox(b.reshape(2, 2)).overlaps(box)]
        if covered:
            label = _names([leg.get_title()] if leg.get_title().get_text() else leg.get_texts(), 2)
            problems.append(f"legend {label} covers text: {_names(covered)}")

    tight = mpl.rcParams["savefig.bbox"] == "tight" if tight is None else tight
    area = fig.bbox if not tight else Bbox(fig.get_tightbbox(renderer).get_points() * fig.dpi)
    for t, (x0, y0, x1, y1) in zip(texts, boxes):
        if x0 < area.x0 - SHRINK or y0 < area.y0 - SHRINK or x1 > area.x1 + SHRINK or y1 > area.y1 + SHRINK:
            problems.append(f"text outside the {'saved area' if tight else 'figure'}: {_name(t)} in {where[id(t)]}")
    return problems + clipped_markers(fig) + hidden_lines(fig)
