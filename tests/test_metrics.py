import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from lib.metrics import bootstrap_ci, confusion, f1pn, macro_f1, score_subsets, softmax, to_labels


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


def test_bootstrap_ci_brackets_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.choice([-1, 0, 1], 500)
    p = np.where(rng.random(500) < 0.6, y, rng.choice([-1, 0, 1], 500))
    lo, hi = bootstrap_ci(y, p, n=300, seed=3)
    assert lo < f1pn(y, p) < hi and hi - lo < 0.2
    assert (lo, hi) == bootstrap_ci(y, p, n=300, seed=3)


def test_confusion_rows_are_true_labels():
    cm = confusion([1, 1, -1], [1, 0, -1])
    assert cm.loc[1, 0] == 1 and cm.loc[1, 1] == 1 and cm.loc[-1, -1] == 1 and cm.to_numpy().sum() == 3


def test_score_subsets_reports_all_seen_unseen():
    df = pd.DataFrame({"label": [1, -1, 0, 1], "sentence_seen_in_train": [True, True, False, False]})
    out = score_subsets(df, [1, -1, 0, 0], n_boot=50, model="m")
    assert list(out["subset"]) == ["all", "seen", "unseen"] and list(out["n"]) == [4, 2, 2]
    assert out.loc[out.subset == "seen", "f1pn"].item() == 1.0 and (out["model"] == "m").all()


def test_paired_bootstrap_difference_is_zero_for_identical_systems_and_signed():
    from lib.metrics import paired_bootstrap_diff

    rng = np.random.default_rng(2)
    y = rng.choice([-1, 0, 1], 400)
    noisy = np.where(rng.random(400) < 0.5, y, 0)
    assert paired_bootstrap_diff(y, noisy, noisy, n=100) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_bootstrap_diff(y, y, noisy, n=200)
    assert d == pytest.approx(1.0 - f1pn(y, noisy)) and 0 < lo <= d <= hi


def test_vectorised_resampled_f1pn_equals_the_official_formula():
    from lib.metrics import f1pn_resampled

    rng = np.random.default_rng(4)
    y, p = rng.choice([-1, 0, 1], 200), rng.choice([-1, 0, 1], 200)
    p[:5] = 0
    idx = rng.integers(0, 200, size=(30, 200))
    got = f1pn_resampled(y, p, idx)
    want = [f1_score(y[i], p[i], labels=[1, -1], average="macro", zero_division=0) for i in idx]
    assert np.allclose(got, want)
    # degenerate resample: no positive or negative anywhere -> 0, as sklearn with zero_division=0
    assert f1pn_resampled(np.zeros(3, int), np.zeros(3, int), np.array([[0, 1, 2]]))[0] == 0.0
