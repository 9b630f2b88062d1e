import numpy as np
import pandas as pd
import pytest

from lib import rules
from lib.chapters import ch03
from lib.metrics import bootstrap_ci, f1pn, to_labels


@pytest.fixture
def logits():
    return np.random.default_rng(0).normal(size=(300, 3)) * 2


def test_threshold_zero_is_argmax_over_the_two_sentiment_classes(logits):
    p = rules.threshold_rule(logits, 0.0)
    assert set(p) <= {-1, 1}
    assert np.array_equal(p, np.where(logits[:, rules.POS] > logits[:, rules.NEG], 1, -1))


def test_threshold_above_one_predicts_only_neutral(logits):
    assert (rules.threshold_rule(logits, 1.01) == 0).all()


def test_threshold_rule_by_hand():
    # P = softmax; row 0: pos 0.7 -> positive at t=0.5; row 1: max sentiment prob < 0.5 -> neutral
    z = np.log(np.array([[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]]))
    assert rules.threshold_rule(z, 0.5).tolist() == [1, 0]


def test_bias_zero_is_plain_argmax_and_large_bias_is_all_neutral(logits):
    assert np.array_equal(rules.bias_rule(logits, 0.0), to_labels(logits))
    assert (rules.bias_rule(logits, 100.0) == 0).all() and (rules.bias_rule(logits, -100.0) != 0).all()


def test_sweep_matches_direct_computation_and_choice_is_the_best_oof_point(logits):
    y = np.random.default_rng(1).choice([-1, 0, 1], len(logits))
    s = rules.sweep(y, logits, "threshold", n_boot=50, groups=None)
    for _, row in s.sample(5, random_state=0).iterrows():
        assert row["f1pn"] == pytest.approx(f1pn(y, rules.threshold_rule(logits, row["param"])))
        assert row["f1pn_lo"] <= row["f1pn_hi"]
    t = rules.choose(y, logits, "threshold")
    assert f1pn(y, rules.threshold_rule(logits, t)) == pytest.approx(s["f1pn"].max())


def test_sweep_band_is_the_sentence_clustered_ci_at_each_grid_value(logits):
    rng = np.random.default_rng(3)
    sentence = np.repeat(np.arange(100), 3)  # 3 entities per sentence
    y = rng.choice([-1, 0, 1], 100)[sentence]
    s = rules.sweep(y, logits, "neutral_bias", grid=[-1.0, 0.0, 1.0], n_boot=200, seed=4, groups=sentence)
    assert "f1pn_lo" not in rules.sweep(y, logits, "neutral_bias", grid=[0.0], groups=sentence)
    for _, row in s.iterrows():
        p = rules.bias_rule(logits, row["param"])
        want = bootstrap_ci(y, p, groups=sentence, n=200, seed=4)
        assert (row["f1pn_lo"], row["f1pn_hi"]) == pytest.approx(want)
        assert want != pytest.approx(bootstrap_ci(y, p, groups=None, n=200, seed=4))  # the groups mattered


def test_rule_chosen_on_oof_is_applied_unchanged_to_validation():
    # OOF wants a high threshold (its sentiment predictions are mostly wrong); validation would want t=0
    rng = np.random.default_rng(2)
    oof_logits, val_logits = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    y_oof = np.where(rng.random(400) < 0.8, 0, to_labels(oof_logits))
    y_val = np.where(rules.threshold_rule(val_logits, 0.0) == 1, 1, -1)
    t, pred = rules.tune_then_apply("threshold", y_oof, oof_logits, val_logits)
    assert t == rules.choose(y_oof, oof_logits, "threshold") and t > 0.3
    assert np.array_equal(pred, rules.threshold_rule(val_logits, t))
    assert rules.choose(y_val, val_logits, "threshold") < t  # the validation optimum was not used


def test_sweep_counts_the_rows_predicted_polar_and_the_cut_is_where_they_get_few(logits):
    y = np.random.default_rng(5).choice([-1, 0, 1], len(logits))
    s = rules.sweep(y, logits, "threshold", groups=None)
    for _, row in s.sample(5, random_state=1).iterrows():
        p = rules.threshold_rule(logits, row["param"])
        assert row["n_polar"] == np.isin(p, [-1, 1]).sum() == row["n_pred_-1"] + row["n_pred_1"]
    cut = ch03.polar_cut(s, 20)
    assert s.loc[s["param"] >= cut, "n_polar"].max() < 20 <= s.loc[s["param"] < cut, "n_polar"].min()
    assert ch03.polar_cut(s, 0) == np.inf


def test_precision_recall_figure_stops_the_curves_at_the_cut_and_labels_its_axes(logits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots
    from lib.chapters.figcheck import text_problems

    y = np.random.default_rng(6).choice([-1, 0, 1], len(logits))
    s = pd.concat([rules.sweep(y, logits, "threshold", groups=None).assign(on=n) for n in ("train OOF", "validation")])
    cut = ch03.polar_cut(s[s["on"] == "validation"])
    with matplotlib.rc_context():
        plots.setup()
        fig = ch03.precision_recall_figure(s, 0.5)
        ax = fig.axes[1]
        assert max(line.get_xdata().max() for line in ax.lines if len(line.get_xdata()) > 2) < cut
        assert fig.axes[0].get_ylabel() and text_problems(fig) == []
        plt.close(fig)


def test_weight_figure_names_the_runs_and_shows_scores_and_gain_apart(logits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots
    from lib.chapters.figcheck import text_problems

    y = np.random.default_rng(7).choice([-1, 0, 1], len(logits))
    rows, sweeps = [], []
    for w in (0.1, 1.0):
        run = {"run": f"03/weight-{w:g}", "label": f"neutral weight {w:g}", "backbone": "e5-small", "mode": "unmasked"}
        scores = {"f1pn_argmax": 0.4, "f1pn_threshold": 0.45, "gain": 0.05, "gain_lo": 0.01, "gain_hi": 0.09}
        cis = {f"{c}_{e}": v + d for c, v in list(scores.items())[:2] for e, d in (("lo", -0.03), ("hi", 0.03))}
        rows.append({"neutral_weight": w, **run, "epochs": 1, "folds": "0", "subset": "all", **scores, **cis})
        sweeps.append(rules.sweep(y, logits * w, "threshold", groups=None).assign(neutral_weight=w, t_chosen=0.4))
    weights = pd.DataFrame(rows)
    note = ch03.runs_note(weights)
    assert (
        "03/weight-0.1" in note and "03/weight-1:" in note and "mode unmasked, 1 epoch, fold 0" in note
    )  # no "(s)" plurals
    with matplotlib.rc_context():
        plots.setup()
        fig = ch03.weight_figure(weights, pd.concat(sweeps))
        assert len(fig.axes) == 3 and note in fig._suptitle.get_text()
        assert fig.axes[2].get_ylabel().startswith("F1pn gain") and text_problems(fig) == []
        assert plots.fit_width(fig) <= plots.MAX_WIDTH + 0.01 and text_problems(fig) == []  # as saved: fits a page
        plt.close(fig)


def test_sweep_leaves_a_precision_undefined_where_no_row_is_predicted_in_the_class():
    from lib.rules import sweep

    y = np.array([1, -1, 0, 0, 1, 0])
    logits = np.log(np.array([[0.6, 0.1, 0.3]] * 6))  # LABELS order (-1, 0, 1): max polar prob 0.6 everywhere
    s = sweep(y, logits, "threshold", grid=[0.5, 0.7], groups=None).set_index("param")
    assert s.loc[0.5, "precision_-1"] == pytest.approx(1 / 6) and np.isnan(s.loc[0.5, "precision_0"])
    assert np.isnan(s.loc[0.7, "precision_-1"]) and s.loc[0.7, "recall_-1"] == 0  # nothing predicted negative
    assert s.loc[0.7, "precision_0"] == pytest.approx(0.5)


def test_sweep_figure_shows_both_lines_when_the_chosen_bias_is_the_plain_argmax(logits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots
    from lib.chapters.figcheck import text_problems

    rng = np.random.default_rng(3)
    ys = {on: rng.choice([-1, 0, 1], len(logits)) for on in ("train OOF", "validation")}  # two different splits
    sweeps = pd.concat(
        rules.sweep(y, logits, rule, groups=None).assign(rule=rule, on=on)
        for rule in rules.RULES
        for on, y in ys.items()
    )
    with matplotlib.rc_context():
        plots.setup()
        fig = ch03.sweep_figure(sweeps, {"threshold": 0.4, "neutral_bias": 0.0})  # chosen b = the b = 0 line
        plots.fit_width(fig)
        assert text_problems(fig) == []
        plt.close(fig)
