import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from lib.metrics import (
    bootstrap_ci,
    ci_note,
    confusion,
    draw_resamples,
    f1pn,
    f1pn_resampled,
    macro_f1,
    paired_bootstrap_diff,
    score,
    score_subsets,
    sentence_groups,
    softmax,
    to_labels,
)


def width(ci):
    return ci[1] - ci[0]


@pytest.fixture
def duplicated():
    """200 sentences, each repeated 1-4 times as exact copies: the clusters the bootstrap must respect."""
    rng = np.random.default_rng(7)
    y = rng.choice([-1, 0, 1], 200)
    p = np.where(rng.random(200) < 0.5, y, rng.choice([-1, 0, 1], 200))
    rows = np.repeat(np.arange(200), rng.integers(1, 5, 200))
    return y, p, rows, np.array([f"sentence {i}" for i in rows])


def test_f1pn_equals_the_official_formula_on_random_predictions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.choice([-1, 0, 1], 300), rng.choice([-1, 0, 1], 300)
        assert f1pn(y, p) == pytest.approx(f1_score(y, p, labels=[1, -1], average="macro"))
        assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))


def test_f1pn_ignores_neutral_as_a_class_but_counts_its_errors():
    y = np.array([1, -1, 0, 0])
    assert f1pn(y, np.array([1, -1, 0, 0])) == 1.0
    assert f1pn(y, np.array([1, -1, 1, 0])) == pytest.approx((2 / 3 + 1) / 2)  # neutral -> positive is a false positive


def test_to_labels_maps_logit_columns_to_labels():
    assert list(to_labels(np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]]))) == [-1, 0, 1]
    assert np.allclose(softmax(np.zeros((2, 3))).sum(1), 1)


def test_to_labels_and_softmax_refuse_nan_rows_naming_how_many_and_the_first():
    z = np.zeros((10, 3))
    z[[5, 7], 1] = np.nan
    for fn in (to_labels, softmax):
        with pytest.raises(ValueError, match=r"NaN in 2 of 10 rows \(first: row 5\).*missing"):
            fn(z)


@pytest.mark.parametrize("shape", [(3,), (4, 2), (2, 3, 1)])
def test_to_labels_and_softmax_refuse_wrong_shapes_naming_the_shape(shape):
    for fn in (to_labels, softmax):
        with pytest.raises(ValueError, match=r"2-D with 3 columns.*got shape " + re_shape(shape)):
            fn(np.zeros(shape))


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_bootstrap_ci_brackets_the_point_estimate_and_is_seeded(duplicated):
    y, p, rows, sent = duplicated
    y, p = y[rows], p[rows]
    lo, hi = bootstrap_ci(y, p, groups=sent, n=300, seed=3)
    assert lo < f1pn(y, p) < hi and hi - lo < 0.3
    assert (lo, hi) == bootstrap_ci(y, p, groups=sent, n=300, seed=3)
    assert (lo, hi) != bootstrap_ci(y, p, groups=sent, n=300, seed=4)


def test_groups_is_a_required_keyword():
    with pytest.raises(TypeError):
        bootstrap_ci([1, 0], [1, 0], n=10)
    with pytest.raises(TypeError):
        paired_bootstrap_diff([1, 0], [1, 0], [0, 0], n=10)


def test_row_bootstrap_is_the_old_index_resampling():
    # groups=None keeps the previous behaviour exactly: same draws as resampling row indices
    rng = np.random.default_rng(1)
    y, p = rng.choice([-1, 0, 1], 150), rng.choice([-1, 0, 1], 150)
    idx = np.random.default_rng(5).integers(0, 150, size=(200, 150))
    old = np.array([f1pn(y[i], p[i]) for i in idx])
    assert np.allclose(bootstrap_ci(y, p, groups=None, n=200, seed=5), np.quantile(old, [0.025, 0.975]))


def test_clustered_ci_matches_one_row_per_sentence_and_row_bootstrap_is_too_narrow(duplicated):
    y, p, rows, sent = duplicated
    clustered = width(bootstrap_ci(y[rows], p[rows], groups=sent, n=2000))
    unique = width(bootstrap_ci(y, p, groups=None, n=2000))
    naive = width(bootstrap_ci(y[rows], p[rows], groups=None, n=2000))
    assert clustered == pytest.approx(unique, rel=0.25)
    assert naive < 0.75 * clustered


def test_draws_keep_the_rows_of_a_sentence_together(duplicated):
    _, _, rows, sent = duplicated
    counts, inverse = draw_resamples(sent, len(sent), n=50, seed=0)
    assert counts.shape == (50, 200) and (counts.sum(1) == 200).all()
    w = counts[:, inverse]
    same = inverse[:, None] == inverse[None, :]
    for r in range(5):  # rows of one sentence always get the same weight
        assert (w[r][:, None] == w[r][None, :])[same].all()
    assert np.array_equal(inverse, sentence_groups(pd.DataFrame({"sentence": sent})))


def test_groups_must_match_the_rows_and_have_no_missing_values():
    with pytest.raises(ValueError, match="3 entries for 4 rows"):
        bootstrap_ci([1, 0, 1, 0], [1, 0, 1, 0], groups=["a", "b", "c"], n=10)
    with pytest.raises(ValueError, match="missing"):
        bootstrap_ci([1, 0, 1, 0], [1, 0, 1, 0], groups=["a", None, "c", "c"], n=10)


def test_weighted_vectorised_f1pn_equals_sklearn_with_sample_weight():
    rng = np.random.default_rng(4)
    y, p = rng.choice([-1, 0, 1], 200), rng.choice([-1, 0, 1], 200)
    p[:5] = 0
    w = rng.integers(0, 4, size=(30, 200))
    want = [f1_score(y, p, labels=[1, -1], average="macro", zero_division=0, sample_weight=wr) for wr in w]
    assert np.allclose(f1pn_resampled(y, p, w), want)
    assert np.allclose([f1pn(y, p, sample_weight=wr) for wr in w], want)
    wf = rng.random((5, 200))  # real-valued weights too
    want_f = [f1_score(y, p, labels=[1, -1], average="macro", zero_division=0, sample_weight=wr) for wr in wf]
    assert np.allclose(f1pn_resampled(y, p, wf), want_f)
    # cluster counts with a row->cluster map equal the expanded per-row weights
    inverse = rng.integers(0, 40, 200)
    c = rng.integers(0, 4, size=(30, 40))
    assert np.allclose(f1pn_resampled(y, p, c, inverse), f1pn_resampled(y, p, c[:, inverse]))
    # degenerate resample: no positive or negative anywhere -> 0, as sklearn with zero_division=0
    assert f1pn_resampled(np.zeros(3, int), np.zeros(3, int), np.ones((1, 3)))[0] == 0.0


def test_looped_metric_path_agrees_with_the_vectorised_one(duplicated):
    y, p, rows, sent = duplicated
    y, p = y[rows], p[rows]
    fast = bootstrap_ci(y, p, groups=sent, n=100, seed=2)
    slow = bootstrap_ci(
        y, p, groups=sent, metric=lambda a, b, sample_weight=None: f1pn(a, b, sample_weight), n=100, seed=2
    )
    assert np.allclose(fast, slow)
    lo, hi = bootstrap_ci(y, p, groups=sent, metric=macro_f1, n=100)
    assert lo < macro_f1(y, p) < hi


def test_confusion_rows_are_true_labels():
    cm = confusion([1, 1, -1], [1, 0, -1])
    assert cm.loc[1, 0] == 1 and cm.loc[1, 1] == 1 and cm.loc[-1, -1] == 1 and cm.to_numpy().sum() == 3


def test_score_subsets_reports_all_seen_unseen():
    df = pd.DataFrame(
        {"label": [1, -1, 0, 1], "sentence_seen_in_train": [True, True, False, False], "sentence": list("aabc")}
    )
    out = score_subsets(df, [1, -1, 0, 0], n_boot=50, model="m")
    assert list(out["subset"]) == ["all", "seen", "unseen"] and list(out["n"]) == [4, 2, 2]
    assert out.loc[out.subset == "seen", "f1pn"].item() == 1.0 and (out["model"] == "m").all()


def test_score_subsets_clusters_each_subset_by_its_sentences(duplicated):
    y, p, rows, sent = duplicated
    df = pd.DataFrame({"label": y[rows], "sentence": sent, "sentence_seen_in_train": rows % 3 == 0})
    out = score_subsets(df, p[rows], n_boot=200).set_index("subset")
    for sub, m in [("all", np.ones(len(df), bool)), ("seen", rows % 3 == 0), ("unseen", rows % 3 != 0)]:
        lo, hi = bootstrap_ci(y[rows][m], p[rows][m], groups=sent[m], n=200)
        assert (out.loc[sub, "f1pn_lo"], out.loc[sub, "f1pn_hi"]) == pytest.approx((lo, hi))
    assert width(out.loc["all", ["f1pn_lo", "f1pn_hi"]].to_numpy()) > 1.2 * width(
        bootstrap_ci(y[rows], p[rows], groups=None, n=200)
    )
    s = score(y[rows], p[rows], n_boot=0, groups=sent)
    assert np.isnan(s["f1pn_lo"]) and s["n"] == len(rows)


def test_ci_note_names_the_method_and_resamples():
    assert ci_note(1000) == "sentence-cluster bootstrap, 1000 resamples"


def test_paired_bootstrap_difference_is_zero_for_identical_systems_and_signed(duplicated):
    y, p, rows, sent = duplicated
    y = y[rows]
    noisy = np.where(np.random.default_rng(2).random(len(y)) < 0.5, y, 0)
    # identical systems give exactly 0 in every resample only if both see the same draw
    assert paired_bootstrap_diff(y, noisy, noisy, groups=sent, n=100) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_bootstrap_diff(y, y, noisy, groups=sent, n=200)
    assert d == pytest.approx(1.0 - f1pn(y, noisy)) and 0 < lo <= d <= hi
    d, lo, hi = paired_bootstrap_diff(y, noisy, y, groups=sent, metric=macro_f1, n=50)
    assert d == pytest.approx(macro_f1(y, noisy) - 1.0) and lo <= d <= hi < 0


def test_paired_bootstrap_difference_honours_groups(duplicated):
    y, p, rows, sent = duplicated
    q = np.where(np.random.default_rng(3).random(200) < 0.3, y, p)
    a, b, yd = p[rows], q[rows], y[rows]
    # a single cluster: every resample redraws all rows, so the CI collapses onto the point estimate
    d, lo, hi = paired_bootstrap_diff(yd, a, b, groups=np.zeros(len(yd)), n=100)
    assert d == pytest.approx(f1pn(yd, a) - f1pn(yd, b)) and lo == pytest.approx(d) and hi == pytest.approx(d)
    # sentences as clusters: as wide as one row per sentence, wider than resampling the duplicated rows
    clustered = width(paired_bootstrap_diff(yd, a, b, groups=sent, n=2000)[1:])
    unique = width(paired_bootstrap_diff(y, p, q, groups=None, n=2000)[1:])
    naive = width(paired_bootstrap_diff(yd, a, b, groups=None, n=2000)[1:])
    assert clustered == pytest.approx(unique, rel=0.25) and naive < 0.75 * clustered


def test_score_gives_a_clustered_ci_for_each_metric_asked():
    from lib.metrics import score

    rng = np.random.default_rng(3)
    y = rng.choice([-1, 0, 1], 300)
    p = np.where(rng.random(300) < 0.7, y, rng.choice([-1, 0, 1], 300))
    groups = np.arange(300) // 3
    s = score(y, p, 200, groups=groups, ci=("f1pn", "macro_f1"))
    for m in ("f1pn", "macro_f1"):
        assert s[f"{m}_lo"] < s[m] < s[f"{m}_hi"]
    assert "accuracy_lo" not in score(y, p, 50, groups=groups)  # by default F1pn alone


def test_fmt_never_prints_minus_zero_and_keeps_the_side_of_a_bound_near_zero():
    from lib.metrics import fmt

    assert fmt(0.4832, 0.4561, 0.5093) == "0.483 [0.456, 0.509]"
    assert fmt(-0.0, signed=True) == "+0.000"
    # a bound that rounds to 0 keeps a 4th decimal, so "includes 0" / "excludes 0" can be read off the numbers
    assert fmt(0.021, -0.0004, 0.043, signed=True) == "+0.021 [-0.0004, +0.043]"
    assert fmt(0.021, 0.0004, 0.043, signed=True) == "+0.021 [+0.0004, +0.043]"
    assert fmt(-0.00001, signed=True) == "+0.0000"  # below even the 4th decimal: 0, unsigned in sign


def test_fmt_diff_says_whether_the_ci_excludes_0():
    from lib.metrics import fmt_diff

    assert fmt_diff(0.021, 0.004, 0.038) == "+0.021 [+0.004, +0.038] (CI excludes 0)"
    assert fmt_diff(-0.02, -0.05, -0.001) == "-0.020 [-0.050, -0.001] (CI excludes 0)"
    assert fmt_diff(0.01, -0.0004, 0.03) == "+0.010 [-0.0004, +0.030] (CI includes 0)"
