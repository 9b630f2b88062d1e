"""Chapter 04's iteration count: steps to 95% of a run's own best held-out F1pn, its table over seeds, the paired
K = 5 - K = 1 difference, the answer's wording, and the learning-curve figure (seed means cut at the shortest run)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.chapters import ch04  # noqa: E402
from lib.chapters.figcheck import text_problems  # noqa: E402

pytestmark = pytest.mark.usefixtures("chapter_style")


def history(scores, every: int = 5):
    return [{"step": every * (i + 1), "epoch": (i + 1) / len(scores), "held_f1pn": s} for i, s in enumerate(scores)]


def test_steps_to_95_is_the_first_evaluation_at_95_percent_of_the_runs_own_best():
    # best 0.60 -> the bar is 0.57; 0.56 at step 15 is short of it, 0.58 at step 20 reaches it
    assert ch04.steps_to_fraction(history([0.2, 0.5, 0.56, 0.58, 0.6, 0.59])) == 20
    assert ch04.steps_to_fraction(history([0.2, 0.6, 0.1, 0.3])) == 10  # a later dip does not matter
    assert ch04.steps_to_fraction(history([0.3, 0.4]), fraction=0.5) == 5
    assert np.isnan(ch04.steps_to_fraction([]))
    assert np.isnan(ch04.steps_to_fraction(history([0.0, 0.0])))  # never a right polar prediction: no curve


def runs_frame(steps: dict) -> pd.DataFrame:
    """{(K, seed): steps to 95%} -> a runs table as `run_all` builds it (one fold)."""
    return pd.DataFrame(
        [
            {
                "K": k,
                "rate": 0.3,
                "seed": s,
                "fold": 0,
                "steps": 100,
                "stopped_early": False,
                "best_held_f1pn": 0.5,
                "steps_to_95": v,
                "seconds_per_step": 0.1 * k,
            }
            for (k, s), v in steps.items()
        ]
    )


def test_iterations_table_and_the_paired_difference_over_seeds():
    runs = runs_frame({(1, 13): 60, (1, 14): 80, (1, 15): 70, (5, 13): 40, (5, 14): 90, (5, 15): 50})
    t = ch04.iterations_table(runs).set_index("K")
    assert t.loc[1, ["steps_to_95_mean", "steps_to_95_min", "steps_to_95_max", "runs"]].tolist() == [70, 60, 80, 3]
    assert t.loc[5, "seconds_to_95_mean"] == pytest.approx(0.5 * 60)
    d = ch04.iterations_difference(runs, 0.3)
    assert list(d["per_seed"].values()) == [-20, 10, -20]  # K = 5 - K = 1, seed by seed
    assert (d["mean"], d["min"], d["max"], d["n"]) == (pytest.approx(-10), -20, 10, 3)
    text = ch04.iterations_answer(ch04.iterations_table(runs), d)
    assert "10.0 fewer steps" in text and "from -20 to +10" in text and "no consistent direction" in text
    assert "95% t-interval over the 3 seeds" in text  # the CI over seeds, with their number


def test_the_answer_says_fewer_for_every_seed_when_it_is():
    runs = runs_frame({(1, 13): 60, (1, 14): 80, (5, 13): 40, (5, 14): 70})
    d = ch04.iterations_difference(runs, 0.3)
    text = ch04.iterations_answer(ch04.iterations_table(runs), d)
    assert "needs 15.0 fewer steps, 21% of K = 1's mean" in text and "fewer for every one of the 2 seeds" in text
    runs = runs_frame({(1, 13): 60, (1, 14): 80, (1, 15): 70, (5, 13): 40, (5, 14): 80, (5, 15): 45})
    text = ch04.iterations_answer(ch04.iterations_table(runs), ch04.iterations_difference(runs, 0.3))
    assert "fewer or as many for every one of the 3 seeds (per seed -25 to +0)" in text  # a tie is no reversal
    assert "no consistent direction" not in text


def test_learning_curves_average_only_as_far_as_the_shortest_run():
    hist, curves, rows = [], [], []
    for k in (1, 5):
        for seed, n_evals in ((13, 8), (14, 6)):
            # seeds and K apart, as trainings are (identical curves would draw one line over another)
            h = history(list(np.linspace(0.1, 0.5, n_evals) + 0.01 * k + 0.08 * (seed - 13)), every=5)
            hist += [{"K": k, "rate": 0.3, "seed": seed, "fold": 0, "eval": i, **e} for i, e in enumerate(h)]
            loss = 1.0 + 0.1 * k + 0.2 * (seed - 13)
            curves += [{"K": k, "rate": 0.3, "seed": seed, "fold": 0, "step": i + 1, "loss": loss} for i in range(40)]
            rows.append({"K": k, "rate": 0.3, "seed": seed, "fold": 0, "steps_to_95": ch04.steps_to_fraction(h)})
    out = {"hist": pd.DataFrame(hist), "curves": pd.DataFrame(curves), "runs": pd.DataFrame(rows)}
    m = ch04._seed_mean(out["hist"][out["hist"]["K"] == 1], "step", "held_f1pn", "eval")
    assert m["eval"].max() == 5 and m["x"].max() == 30  # 6 evaluations in the shorter run: no mean past them
    fig = ch04.curves_figure(out, 0.3)
    bold = [line for line in fig.axes[0].lines if line.get_linewidth() > 2]
    assert len(bold) == 2 and all(line.get_xdata().max() == 30 for line in bold)
    assert text_problems(fig) == []


def test_learning_curves_keep_every_line_visible_when_seeds_and_k_give_equal_curves():
    hist, curves, rows = [], [], []
    for k in (1, 5):
        for seed in (13, 14, 15, 16):
            h = history(list(np.linspace(0.1, 0.5, 8)), every=5)  # the worst case: every curve the same
            hist += [{"K": k, "rate": 0.3, "seed": seed, "fold": 0, "eval": i, **e} for i, e in enumerate(h)]
            curves += [{"K": k, "rate": 0.3, "seed": seed, "fold": 0, "step": i + 1, "loss": 1.0} for i in range(40)]
            rows.append({"K": k, "rate": 0.3, "seed": seed, "fold": 0, "steps_to_95": ch04.steps_to_fraction(h)})
    out = {"hist": pd.DataFrame(hist), "curves": pd.DataFrame(curves), "runs": pd.DataFrame(rows)}
    fig = ch04.curves_figure(out, 0.3)
    assert not [p for p in text_problems(fig) if "hidden" in p]
