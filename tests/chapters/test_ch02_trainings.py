"""Chapter 02 over trainings: paired per-(seed, fold) differences with a t-interval over trainings, and the
headline's decision rule chosen by how it transfers from OOF rows to averaged logits (validation unused)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lib import rules
from lib.chapters.ch02 import trainings as tr
from lib.metrics import over_trainings
from tests.test_ensembles import fake_runs


def test_over_trainings_is_a_t_interval_over_trainings():
    v = [0.02, -0.01, 0.03, 0.01, 0.00]
    r = over_trainings(v)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / np.sqrt(5)
    assert r["n"] == 5 and r["mean"] == pytest.approx(0.01)
    assert (r["lo"], r["hi"]) == pytest.approx((0.01 - half, 0.01 + half))
    assert r["min"] == -0.01 and r["max"] == 0.03
    assert np.isnan(over_trainings([0.02])["lo"])  # one training: no interval, not a zero-width one


def test_paired_trainings_pairs_the_same_seed_and_fold():
    models = pd.DataFrame(
        [
            {"mode": "hamam", "seed": 13, "fold": 0, "f1pn_rule": 0.50},
            {"mode": "hamam", "seed": 13, "fold": 1, "f1pn_rule": 0.60},
            {"mode": "hamam", "seed": 14, "fold": 0, "f1pn_rule": 0.55},
            {"mode": "unmasked", "seed": 13, "fold": 0, "f1pn_rule": 0.40},
            {"mode": "unmasked", "seed": 13, "fold": 1, "f1pn_rule": 0.65},
            {"mode": "masked", "seed": 13, "fold": 0, "f1pn_rule": 0.1},
        ]
    )
    summary, diff = tr.paired_trainings(models, "hamam", "unmasked")
    assert summary["n"] == 2  # seed 14 has no unmasked partner
    assert sorted(diff["diff"].round(3)) == [-0.05, 0.1]


def test_single_models_choose_each_threshold_on_that_models_own_held_out_fold():
    runs, train = fake_runs(n_seeds=1, n_folds=2)
    val = pd.DataFrame({"label": np.zeros(200, dtype=int)})
    runs[0].logits["validation"] = np.zeros((2, 200, 3), dtype=np.float32)
    m = tr.single_models({"hamam": {13: runs[0]}}, train, val)
    held = train["fold"].to_numpy() == 1
    assert len(m) == 2 and m.loc[1, "threshold"] == rules.choose(train["label"][held], runs[0].oof[held], "threshold")


def test_the_interval_over_trainings_is_over_folds_with_seeds_averaged_first():
    rows = [
        {"mode": m, "seed": s, "fold": k, "f1pn_rule": v}
        for (s, k, h, u) in [
            (13, 0, 0.5, 0.4),
            (14, 0, 0.6, 0.4),
            (13, 1, 0.5, 0.5),
            (14, 1, 0.4, 0.5),
            (13, 2, 0.7, 0.5),
            (14, 2, 0.5, 0.5),
        ]
        for m, v in (("hamam", h), ("unmasked", u))
    ]
    summary, diff = tr.paired_trainings(pd.DataFrame(rows), "hamam", "unmasked")
    assert summary["n"] == 6 and summary["folds"] == 3  # two seeds of one fold share their training rows
    assert summary["mean"] == pytest.approx(np.mean([0.15, -0.05, 0.1]))
    assert summary["hi"] - summary["lo"] == pytest.approx(
        2 * stats.t.ppf(0.975, 2) * np.std([0.15, -0.05, 0.1], ddof=1) / np.sqrt(3)
    )


def test_verdict_says_when_the_two_intervals_disagree():
    trn = {"n": 10, "folds": 5, "mean": -0.02, "lo": -0.03, "hi": -0.01, "sd": 0.01, "min": -0.04, "max": 0.0}
    text = tr.verdict("hamam - unmasked", (0.02, 0.005, 0.035), trn)
    assert text.startswith("**HAMAM − unmasked: not settled**") and "opposite sides" in text  # display names
    assert "better**: both CIs exclude 0" in tr.verdict(
        "x", (0.02, 0.005, 0.035), {**trn, "mean": 0.02, "lo": 0.01, "hi": 0.03}
    )
    assert "only the CI over trainings" in tr.verdict("x", (0.0, -0.01, 0.01), trn)
    assert "cannot be told apart" in tr.verdict("x", (0.0, -0.01, 0.01), {**trn, "lo": -0.05, "hi": 0.01})
    assert over_trainings([])["n"] == 0  # no common (seed, fold): NaNs, not an error


def test_learning_curves_keep_every_fold_visible_when_folds_give_equal_curves():
    from types import SimpleNamespace

    from lib.chapters.figcheck import text_problems  # draws the figure first: lines sit where a reader sees them

    history = [{"step": s, "held_f1pn": 0.1 + s / 100, "train_loss": 1.0} for s in (10, 20, 30, 40)]
    runs = {m: SimpleNamespace(runs=[{"fold": f, "history": history} for f in range(5)]) for m in ("hamam", "unmasked")}
    fig = tr.learning_curves(runs)  # the worst case: every fold's curve the same
    assert [len(ax.lines) for ax in fig.axes] == [5, 5, 5, 5]
    assert text_problems(fig) == []  # no hidden line, and the legend (below the panels) covers nothing
    # the check itself still sees equal lines drawn in the wrong order (widest last)
    ax = fig.axes[0]
    ax.plot(*ax.lines[0].get_data(), lw=5)
    assert [p for p in text_problems(fig) if "hidden" in p]


def test_goal_note_says_why_the_headline_falls_short_from_what_ran():
    early = [{"best_step": 100, "steps": 450}, {"best_step": 200, "steps": 450}]
    late = [{"best_step": 450, "steps": 450}]
    assert tr.goal_note(0.60, (0.61, 0.58, 0.64), {13: 0.61, 14: 0.60}, early) == ""  # met: nothing to explain
    note = tr.goal_note(0.60, (0.567, 0.538, 0.598), {13: 0.571, 14: 0.553}, early)
    assert "gap to 0.60 is 0.033" in note and "spread of 0.018, smaller than the gap" in note
    assert "above the 95% CI (upper end 0.598)" in note and "at 33% of each run" in note and "not what it lacks" in note
    note = tr.goal_note(0.60, (0.59, 0.56, 0.62), {13: 0.59}, late)
    assert "inside the 95% CI" in note and "not measured" in note and "may help" in note


def test_comparisons_are_shown_with_display_names_and_a_true_minus():
    from lib.chapters.study import shown, verdict

    assert shown("hamam - masked") == "HAMAM − masked"
    assert shown("e5-small - navec-bert (hamam)") == "e5-small − navec-bert (HAMAM)"
    assert shown("every mention - labelled span") == "every mention − labelled span"
    assert shown("K=5") == "K=5"  # not a difference: unchanged
    row = {"comparison": "hamam - unmasked", "subset": "all", "diff": -0.01, "lo": -0.03, "hi": 0.01}
    assert verdict(row).startswith("HAMAM − unmasked on all rows: ")


def test_every_mention_counts_the_labels_it_changed_beside_the_paired_difference():
    sentences = ["Ann met Bob.", "Ann met Bob.", "Ann saw Ann.", "Ann saw Ann.", "Cy ran.", "Dee sat."]
    val = pd.DataFrame(
        {"label": [1, -1, 0, 1, 0, -1], "sentence": sentences, "start": [0, 8, 0, 0, 0, 0], "end": [3, 11, 3, 3, 2, 3]}
    )  # rows 2 and 3 name an entity that occurs twice in its sentence
    span = np.array([1, -1, 0, 0, 0, -1])
    every = np.array([1, -1, 0, 1, 0, 1])  # rows 3 and 5 change; row 3 is a repeated-entity row
    table, lines = tr.every_mention(val, every, span, 50, [0])
    assert list(table["subset"]) == ["all", "repeated"]
    assert lines[0].startswith("- every mention − labelled span on all rows: ")
    assert "1 fold model (fold 0) of one seed" in lines[0]
    assert lines[-1] == "- the two models' labels differ on 2 of 6 validation rows, 1 of the 2 repeated-entity rows"


def test_tidy_tables_show_display_names_and_no_minus_zero():
    from lib.chapters.study import tidy

    df = pd.DataFrame(
        {
            "comparison": ["hamam - unmasked", "hamam_unmasked_pass - unmasked"],
            "n": [803, 10],
            "diff": [-0.0003, 0.02144],
            "lo": [-0.00002, np.nan],
        }
    )
    t = tidy(df)
    assert list(t["comparison"]) == ["HAMAM − unmasked", "HAMAM: unmasked pass − unmasked"]
    assert t["n"].tolist() == [803, 10]  # counts stay whole
    assert t["diff"].tolist() == [-0.0003, 0.021]  # a value that would print as -0.000 keeps its 4th decimal
    assert str(t["lo"].iloc[0]) == "0.0"  # below even that: 0, never -0.0
    assert tidy(df.set_index(["comparison", "n"])).index.get_level_values(0)[0] == "HAMAM − unmasked"
