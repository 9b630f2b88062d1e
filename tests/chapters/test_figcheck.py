import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lib.chapters.figcheck import text_problems  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_style():
    with matplotlib.rc_context({"savefig.bbox": None, "font.size": 10}):
        yield
    plt.close("all")


def simple(**kw):
    fig, ax = plt.subplots(figsize=(6, 4), **kw)
    x = np.linspace(0, 10, 50)
    ax.plot(x, np.sin(x), marker="o", label="sin")
    ax.set(title="clean", xlabel="x", ylabel="y")
    return fig, ax


def test_clean_figure_has_no_problems():
    fig, ax = simple(layout="constrained")
    ax.legend(loc="lower left")  # sin(x) stays above -1, the lower left corner of the axes is empty
    ax.set_ylim(-3, 1.2)
    assert text_problems(fig) == []


def test_overlapping_axes_texts_are_reported():
    fig, ax = simple(layout="constrained")
    ax.text(2, 0.5, "first annotation")
    ax.text(2.3, 0.52, "second annotation")
    (p,) = text_problems(fig)
    assert p.startswith("overlapping texts in axes 'clean'") and "'first annotation'" in p and "'second" in p


def test_touching_texts_are_not_reported():
    fig, ax = simple(layout="constrained")
    a = ax.text(2, 0.5, "left", va="bottom")
    fig.canvas.draw()
    box = a.get_window_extent()
    x, y = ax.transData.inverted().transform((box.x1, box.y0))
    ax.text(x, y, "right", va="bottom")
    assert text_problems(fig) == []


def test_small_tick_labels_are_reported_once_per_axes_and_size():
    fig, ax = simple(layout="constrained")
    ax.tick_params(labelsize=6)
    (p,) = text_problems(fig)
    assert p.startswith("small font: ") and " at 6 pt < 8 pt in axes 'clean': " in p
    assert text_problems(fig, min_size=6) == []


def test_legend_over_data_points_is_reported():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.scatter(np.full(20, 0.5), np.linspace(0, 1, 20), label="points")
    ax.set_title("scatter")
    ax.legend(loc="center")
    (p,) = text_problems(fig)
    assert p == "legend 'points' covers data in axes 'scatter': PathCollection 'points'"


def test_legend_over_a_line_segment_between_points_is_reported():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot([0, 1], [0.5, 0.5], label="flat")  # two points at the edges, the line crosses the middle
    ax.set_xlim(-0.05, 1.05)
    ax.legend(loc="center")
    assert any("line 'flat'" in p for p in text_problems(fig))


def test_legend_over_bars_is_reported_and_beside_them_is_not():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.bar([0, 1, 2], [1, 1, 1], label="bars")
    ax.legend(loc="center")
    assert any("patch or bar" in p or "patches or bars" in p for p in text_problems(fig))
    ax.set_ylim(0, 2)
    ax.legend(loc="upper right")
    assert text_problems(fig) == []


def test_legend_outside_the_axes_is_not_reported_when_saving_tight():
    with matplotlib.rc_context({"figure.constrained_layout.use": False}):  # whatever style another test set
        fig, ax = simple()  # no layout engine: the legend sticks out of the canvas
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", title="a rather long legend title")
    assert text_problems(fig, tight=True) == []
    with matplotlib.rc_context({"savefig.bbox": "tight"}):
        assert text_problems(fig) == []
    # without the tight crop the same legend is cut off: reported as outside the figure
    assert any(p.startswith("text outside the figure") for p in text_problems(fig, tight=False))


def test_crammed_long_xtick_labels_are_reported():
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    names = [f"a rather long category name {i}" for i in range(8)]
    ax.bar(range(8), np.arange(8))
    ax.set_xticks(range(8), names)
    ax.set_title("crammed")
    (p,) = text_problems(fig)  # all eight collide: one group, named by its first four labels
    assert p.startswith("overlapping texts in axes 'crammed': 'a rather long category name 0', ")
    assert p.endswith("(+4 more)")
    ax.set_xticks(range(8), names, rotation=90)  # the usual fix
    assert text_problems(fig) == []


def test_tick_labels_outside_the_view_and_hidden_texts_are_skipped():
    fig, ax = simple(layout="constrained")
    ax.set_xticks([-50, 5, 50], ["far left, would overlap", "five", "far right"])
    ax.set_xlim(-0.5, 10.5)  # the line's end markers whole
    ax.text(5, 0, "hidden", fontsize=4).set_visible(False)
    ax.text(5, 0, "", fontsize=4)
    ax.annotate("clipped away", (100, 0), fontsize=4, annotation_clip=True)
    assert text_problems(fig) == []


def test_texts_of_an_axes_that_is_off_and_colorbar_texts():
    fig, axes = plt.subplots(1, 2, figsize=(7, 3), layout="constrained")
    axes[0].set_axis_off()
    axes[0].tick_params(labelsize=4)  # not drawn: not reported
    im = axes[1].imshow(np.arange(12).reshape(3, 4))
    cb = fig.colorbar(im, ax=axes[1], label="value")
    cb.ax.tick_params(labelsize=5)
    (p,) = text_problems(fig)
    assert p.startswith("small font:") and "5 pt" in p and "<colorbar>" in p


def test_text_off_the_canvas_and_suptitle():
    fig, ax = simple(layout="constrained")
    fig.suptitle("a suptitle")
    fig.text(0.98, 0.5, "sticks out of the right edge")
    problems = text_problems(fig, tight=False)
    assert problems == ["text outside the figure: 'sticks out of the right edge' in the figure"]


def test_figure_without_pyplot_and_a_figure_legend_over_data():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], marker="o", label="diagonal")
    ax.set_title("fig legend")
    fig.legend(loc="center")
    (p,) = text_problems(fig)
    assert p == "legend 'diagonal' covers data in axes 'fig legend': line 'diagonal'"


def test_a_marker_cut_by_the_axes_edge_is_reported_and_one_inside_is_not():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.errorbar([0.2, 0.5], [0.3, 1.0], yerr=0.05, fmt="o", ms=8, capsize=3, label="points")
    ax.set(title="edge", ylim=(0, 1.0))  # the second point sits on the top edge: half of it is cut
    (p,) = text_problems(fig)
    assert p == "1 marker of line 'points' cut by the edge of axes 'edge'"
    ax.set_ylim(0, 1.1)
    assert text_problems(fig) == []


def test_a_line_drawn_under_another_is_reported_and_close_lines_are_not():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.set(title="lines", xlim=(0, 1))
    ax.axvline(0.500, color="grey", ls=":", label="train")
    ax.axvline(0.501, color="black", ls="--", label="validation")  # the same pixel column: train is hidden
    (p,) = text_problems(fig)
    assert p == "line 'train' hidden under line 'validation' in axes 'lines'"
    ax.lines[0].set_linewidth(4)  # wider than the line over it: it shows on both sides
    assert text_problems(fig) == []
    ax.lines[0].set_linewidth(1.5)
    ax.lines[0].set_xdata([0.45, 0.45])  # ~25 px apart: two lines a reader can see
    assert text_problems(fig) == []
    x = np.linspace(0, 1, 50)
    ax.plot(x, x, label="diagonal")
    ax.plot(x, x + 0.1 * np.sin(12 * x), label="model")  # crosses the diagonal, mostly apart from it
    assert text_problems(fig) == []


def test_a_legend_over_the_title_is_reported():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot([0, 1], [0, 1], label="a rather long legend entry")
    ax.set_title("a title that runs along the top of the axes")
    ax.legend(loc="lower left", bbox_to_anchor=(0.3, 0.99))
    problems = text_problems(fig)
    assert any(p.startswith("legend 'a rather long legend entry' covers text: ") and "a title" in p for p in problems)
