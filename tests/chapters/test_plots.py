"""The study's one palette (lib.chapters.plots): a distinct colour per split and per model, and every name the chapters
give a split or a model resolves to one; figures drawn with it pass lib.chapters.figcheck."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from lib import plan  # noqa: E402
from lib.chapters import ch01, plots  # noqa: E402
from lib.chapters.ch05 import (
    bench,  # noqa: E402
    report,  # noqa: E402
)
from lib.chapters.figcheck import text_problems  # noqa: E402
from lib.config import PROFILES, ROOT  # noqa: E402
from lib.folds import SUBSETS  # noqa: E402

MODEL_KINDS = ("fold", "sbert")
MODEL_CHAPTERS = ("02", "05")  # chapters whose runs are models compared by name (03/04/07 runs are settings)


pytestmark = pytest.mark.usefixtures("chapter_style")


def _distinct(colors: list[str], min_dist: float = 0.08) -> list[tuple[str, str]]:
    rgb = np.array([to_rgb(c) for c in colors])
    d = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))
    return [(colors[i], colors[j]) for i, j in zip(*np.triu_indices(len(colors), 1)) if d[i, j] < min_dist]


def test_one_distinct_colour_per_split_and_per_model():
    for palette in (plots.SPLIT_COLORS, plots.MODEL_COLORS):
        assert len(set(palette.values())) == len(palette)  # one colour per entry
        assert not _distinct(list(palette.values())), "colours too close to tell apart"
    both = list(plots.SPLIT_COLORS.values()) + list(plots.MODEL_COLORS.values())
    assert len(set(both)) == len(both)  # a split never shares a model's colour
    assert not set(both) & set(plots.LABEL_COLORS.values())  # nor a label's


def test_every_split_name_the_chapters_use_has_a_colour():
    names = [*ch01.SPLITS, "train OOF", "validation, unseen sentence", *SUBSETS, *plots.SUBSET_LABELS.values()]
    for name in names:
        assert plots.split_color(name) in plots.SPLIT_COLORS.values()
    assert plots.split_color("unseen") == plots.split_color("validation, unseen sentence")
    assert plots.split_color("seen") != plots.split_color("unseen") != plots.split_color("all")
    with pytest.raises(KeyError):
        plots.split_color("test")


def _chapter_model_names(prof) -> set[str]:
    runs = [r for r in plan.runs(prof) if r.kind in MODEL_KINDS and set(r.readers) & set(MODEL_CHAPTERS)]
    names = {r.label for r in runs} | set(report.labels(prof).values())
    names |= {bench.method_model(m, report.labels(prof)) for m in bench.METHODS}
    for path in [*sorted((ROOT / "notebooks").glob("0[1-5]_*.ipynb")), *sorted((ROOT / "lib").rglob("*.py"))]:
        src = path.read_text()  # model="..." names written out in the chapters and their lib code
        names |= {n for n in re.findall(r'model=\\?"([^"{}\\]+)\\?"', src) if n != "..."}
    # chapter 02's score rows: a run's label with what was ensembled or which rule decided
    main = prof.backbones[0]
    names |= {f"HAMAM {main}, 2 folds", f"HAMAM {main}, argmax", f"unmasked {main}, folds [0, 1]"}
    names |= {f"HAMAM {b}, folds [0, 1]" for b in prof.compare_backbones}
    return names


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_model_name_the_chapters_use_has_a_colour(profile):
    prof = PROFILES[profile]
    names = _chapter_model_names(prof)
    assert {"CLS cross-encoder", "SBERT softmax-entity", "organisers' RuBERT baseline"} <= names
    missing = []
    for name in names:
        try:
            plots.model_color(name)
        except KeyError:
            missing.append(name)
    assert not missing
    assert plots.model_color(f"HAMAM {prof.backbones[0]}") == plots.MODEL_COLORS["HAMAM"]


def test_model_names_resolve_to_their_own_colour():
    assert plots.model_key("HAMAM e5-small") == "HAMAM"
    assert plots.model_key("HAMAM navec-bert") == "HAMAM navec-bert"  # not the main HAMAM's colour
    assert plots.model_key("unmasked e5-small") == "unmasked" and plots.model_key("masked e5-small") == "masked"
    assert plots.model_key("SBERT softmax-entity" + plots.BEST_MARK) == "SBERT softmax-entity"  # ★ keeps the name
    assert plots.model_key("SBERT\nsoftmax-entity") == "SBERT softmax-entity"  # wrapped tick labels too
    assert plots.model_key("HAMAM navec-bert, folds [0, 1]") == "HAMAM navec-bert"  # a qualifier after a comma
    assert plots.model_key("HAMAM e5-small, argmax") == plots.model_key("HAMAM e5-small, 2 folds") == "HAMAM"
    with pytest.raises(KeyError):
        plots.model_color("SBERT softmax v = entity")  # an old second name of a model has no colour


def test_one_display_name_per_model_in_chapter_05():
    prof = PROFILES["smoke"]
    names = report.labels(prof)
    assert names["HAMAM"] == plan.get(prof, "02/hamam").label
    assert names["CLS cross-encoder"] == plan.get(prof, "05/cls").label == "CLS cross-encoder"
    for v in prof.sbert_variants:
        assert names[v] == plan.get(prof, f"05/sbert-{v}").label == f"SBERT {v}"
    assert bench.method_label("SBERT marked u", names) == "SBERT softmax-entity"


def test_ci_bars_take_the_colours_of_their_subsets_and_keep_the_legend_off_the_bars():
    df = pd.DataFrame(
        {
            "model": ["HAMAM e5-small", "HAMAM e5-small", "CLS cross-encoder", "CLS cross-encoder"],
            "subset": ["all", "unseen", "all", "unseen"],
            "f1pn": [0.5, 0.45, 0.48, 0.44],
            "f1pn_lo": [0.45, 0.4, 0.43, 0.4],
            "f1pn_hi": [0.55, 0.5, 0.53, 0.49],
        }
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    plots.ci_bars(ax, df, x="model", hue="subset")
    colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    assert colours == {plots.split_color("all"), plots.split_color("unseen")}
    assert ax.get_ylabel() == "F1pn"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all rows", "unseen sentence"]
    assert text_problems(fig) == []


def test_ci_bars_hatch_a_model_shown_twice_under_two_rules():
    df = pd.DataFrame(
        {
            "model": ["HAMAM e5-small, 2 folds", "HAMAM e5-small, argmax"],
            "subset": ["all", "all"],
            "f1pn": [0.5, 0.48],
            "f1pn_lo": [0.45, 0.43],
            "f1pn_hi": [0.55, 0.53],
        }
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    plots.ci_bars(ax, df, x="subset", hue="model")
    first, second = ax.patches
    assert matplotlib.colors.to_hex(first.get_facecolor()) == plots.MODEL_COLORS["HAMAM"]
    assert first.get_facecolor() == second.get_facecolor() and not first.get_hatch() and second.get_hatch()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all rows"]


def test_one_name_and_colour_per_training_objective_for_chapters_03_and_07():
    from lib.chapters import style
    from lib.config import TrainConfig

    assert style.objective(TrainConfig(neutral_weight=0.1)) == (
        style.objective_name("ce", 0.1),
        style.objective_color("ce", 0.1),
    )  # chapter 07's ce-weight-0.1 run and chapter 03's weight 0.1: one look
    cfgs = [
        TrainConfig(neutral_weight=0.1),
        TrainConfig(neutral_weight=1.0),
        TrainConfig(loss="focal", neutral_weight=1.0),
        TrainConfig(loss="focal", neutral_weight=0.1),
        TrainConfig(loss="dice", neutral_weight=1.0),
        TrainConfig(loss="two_head"),
        TrainConfig(loss="two_head", polar_weight=3.0),
    ]
    looks = [style.objective(c) for c in cfgs]
    assert len({n for n, _ in looks}) == len({c for _, c in looks}) == len(cfgs)
    assert looks[2][0] == "focal (γ = 2), neutral weight 1" and looks[6][0] == "two heads, polar weight 3"
    with pytest.raises(KeyError, match="OBJECTIVE_NAMES"):
        style.objective_name("hinge", 1.0)


def test_save_narrows_a_wide_figure_to_the_page_with_its_outside_legend(tmp_path):
    from PIL import Image

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set(title="panel", xlabel="x")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: savefig's tight box grows
    plots.save(fig, "wide", tmp_path)
    width, _ = Image.open(tmp_path / "wide.png").size
    assert width <= plots.MAX_WIDTH * plt.rcParams["savefig.dpi"] + 2  # the whole figure fits the page
    assert fig.get_size_inches()[1] == 4  # narrower panels, same height and text size
    narrow, _ = plt.subplots(figsize=(6, 3))
    assert plots.fit_width(narrow) < plots.MAX_WIDTH and narrow.get_size_inches()[0] == 6  # left alone


def test_save_records_each_figures_checks_and_forgets_removed_figures(tmp_path):
    import json

    (tmp_path / plots.CHECKS).write_text(json.dumps({"gone": ["an old problem"], "kept": []}))
    (tmp_path / "kept.png").write_bytes(b"")  # a figure still there keeps its record
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    plots.save(fig, "new", tmp_path)
    assert json.loads((tmp_path / plots.CHECKS).read_text()) == {"kept": [], "new": []}


def test_a_legend_below_takes_as_many_columns_as_fit_and_crushable_figures_are_kept():
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    for k in range(8):
        axes[0].plot([0, 1], [k, k + 1], label=f"a long legend entry number {k}")
    leg = plots.legend_below(fig, *axes[0].get_legend_handles_labels())
    assert 1 < leg._ncols < 8 and len(fig.legends) == 1  # more rows, no leftover legend
    width = plots.fit_width(fig)
    assert width <= plots.MAX_WIDTH + 0.01
    assert text_problems(fig) == []
    fig, ax = plt.subplots(figsize=(30, 3))  # would lose more than 40%: left as drawn
    ax.set_title("x")
    plots.fit_width(fig)
    assert fig.get_size_inches()[0] == 30
    short, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1], label="one")
    ax.plot([0, 1], [1, 0], label="two")
    assert plots.legend_below(short, *ax.get_legend_handles_labels())._ncols == 2  # one row when it fits


def test_fit_width_wraps_a_title_wider_than_the_page():
    fig, axes = plt.subplots(1, 2, figsize=(14, 3))
    fig.suptitle("a long title " * 20 + "\nsecond line")
    assert plots.fit_width(fig) <= plots.MAX_WIDTH + 0.01
    assert fig._suptitle.get_text().count("\n") >= 2 and fig._suptitle.get_text().endswith("second line")
    assert text_problems(fig) == []
