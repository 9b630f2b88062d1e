"""Chapter 02 over trainings: paired per-(seed, fold) differences with a t-interval over trainings, and the
headline's decision rule chosen by how it transfers from OOF rows to averaged logits (validation unused)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lib import rules
from lib.chapters.ch02 import trainings as tr
from lib.config import TrainConfig
from lib.metrics import over_trainings, softmax
from lib.training import KFoldResult


def fake_runs(n_seeds=2, n_folds=3, n=300, n_val=200, sharp=3.0, seed=0):
    """k-fold results whose logits carry the label plus noise; validation logits are NaN (never to be read)."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1, 0, 1], size=n, p=[0.2, 0.6, 0.2])
    train = pd.DataFrame({"label": y, "fold": np.arange(n) % n_folds})
    onehot = np.eye(3)[y + 1]
    out = []
    for s in range(n_seeds):
        oof = (sharp * onehot + rng.normal(0, 1.5, (n, 3))).astype(np.float32)
        logits = {"validation": np.full((n_folds, n_val, 3), np.nan), "final": np.full((n_folds, n_val, 3), np.nan)}
        out.append(KFoldResult(TrainConfig(seed=13 + s), list(range(n_folds)), oof, logits, [], None))
    return out, train


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


def test_matched_polar_rate_calls_the_same_share_polar_on_flatter_logits():
    runs, train = fake_runs()
    single, covered = tr.oof_by_seed(runs, train)
    y = train["label"].to_numpy()
    decide = tr.fit_rule("matched polar rate", y, single, single.mean(0))
    flat = single.mean(0) * 0.3  # an averaged ensemble is less sharp than one model
    assert tr._polar_share(decide(flat)) == pytest.approx(decide.param, abs=0.01)
    assert rules.threshold_rule(flat, 0.5).tolist() != decide(flat).tolist()  # a fixed t would call fewer polar


def test_neutral_bias_commutes_with_averaging_logits():
    runs, train = fake_runs()
    single, _ = tr.oof_by_seed(runs, train)
    y = train["label"].to_numpy()
    decide = tr.fit_rule("neutral bias", y, single, single.mean(0))
    a, b = single[0], single[1]
    z = (a + b) / 2
    shifted = [x.copy() for x in (a, b)]
    for x in shifted:
        x[:, rules.NEU] += decide.param
    assert (decide(z) == np.asarray([-1, 0, 1])[((shifted[0] + shifted[1]) / 2).argmax(1)]).all()


def test_transfer_table_uses_oof_rows_only_and_the_headline_rule_is_its_best():
    runs, train = fake_runs()  # validation logits are NaN: reading them would poison the scores
    table = tr.transfer_table(runs, train)
    assert list(table["rule"]) == list(tr.CANDIDATES) and table["oof_f1pn"].between(0, 1).all()
    decide, _ = tr.headline_rule(runs, train, table)
    assert decide.rule == table.loc[table["oof_f1pn"].idxmax(), "rule"]
    labels = decide(np.log(softmax(np.random.default_rng(1).normal(size=(50, 3)))))
    assert set(labels) <= {-1, 0, 1}
    with pytest.raises(ValueError, match="unknown rule"):
        tr.fit_rule("oracle", train["label"].to_numpy(), *tr.oof_by_seed(runs, train)[:1], None)


def test_average_weighs_every_model_once():
    runs, _ = fake_runs(n_seeds=2, n_folds=3)
    for i, r in enumerate(runs):
        r.logits["validation"] = np.full((3, 4, 3), float(i))
    assert np.allclose(tr.average(runs, "validation"), 0.5)


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
    assert "opposite sides" in tr.verdict("hamam - unmasked", (0.02, 0.005, 0.035), trn)
    assert "better**: both CIs exclude 0" in tr.verdict(
        "x", (0.02, 0.005, 0.035), {**trn, "mean": 0.02, "lo": 0.01, "hi": 0.03}
    )
    assert "only the CI over trainings" in tr.verdict("x", (0.0, -0.01, 0.01), trn)
    assert "cannot be told apart" in tr.verdict("x", (0.0, -0.01, 0.01), {**trn, "lo": -0.05, "hi": 0.01})
    assert over_trainings([])["n"] == 0  # no common (seed, fold): NaNs, not an error


def test_pooled_averages_every_model_and_refuses_one_fold_of_several_models():
    runs, train = fake_runs(n_seeds=2, n_folds=3)
    runs[1] = KFoldResult(runs[1].cfg, [0, 1], runs[1].oof, {k: v[:2] for k, v in runs[1].logits.items()}, [], None)
    for r, v in zip(runs, (1.0, 4.0)):
        r.logits["validation"][:] = v
    runs[1].oof[train["fold"].to_numpy() == 2] = np.nan  # the second run has no fold 2
    p = tr.pooled(runs)
    assert p.folds == [0, 1]  # the folds every run covers
    assert p.ensemble("validation")[0, 0] == pytest.approx((3 * 1.0 + 2 * 4.0) / 5)  # equal weight per model
    held = train["fold"].to_numpy() == 0
    assert p.oof[held] == pytest.approx((runs[0].oof[held] + runs[1].oof[held]) / 2)
    with pytest.raises(ValueError, match="several models per fold"):
        p.ensemble("validation", [0])
    with pytest.raises(ValueError, match="several models per fold"):
        p.checkpoint(0)


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
