"""Which F1pn this study computes: pinned on the organisers' own RuBERT baseline predictions.

The official RuSentNE-2023 score is macro F1 over the positive and negative classes computed on ALL
rows: `f1_score(y, p, labels=[1, -1], average="macro")`. The `metrics.py` in the organisers'
repository (dialogue-evaluation/RuSentNE-evaluation) computes its "F1 +- macro" differently: it keeps
only the rows whose gold label is not neutral and then takes sklearn's default macro average, over
every label present in gold or prediction, so the predicted-neutral class enters with F1 = 0. On the
same predictions the two differ by ~0.10; these tests pin which one `lib.metrics.f1pn` is.
"""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from lib.chapters.ch02.baselines import organisers_baseline, write_submission
from lib.config import RAW_DIR
from lib.data import load_split
from lib.metrics import f1pn

OFFICIAL = 0.4432  # f1pn of the organisers' baseline on validation, all 2845 rows
GOLD_POLAR_ONLY = 0.3471  # the repository metrics.py variant on the same predictions
TOL = 5e-5


@pytest.fixture(scope="module")
def baseline():
    val = load_split("validation")
    p = organisers_baseline()
    assert len(p) == len(val) == 2845 and set(np.unique(p)) <= {-1, 0, 1}
    return val["label"].to_numpy(), p


def gold_polar_only(y, p) -> float:
    """The variant: rows with a non-neutral gold label, macro F1 over the labels present (neutral included)."""
    keep = y != 0
    return float(f1_score(y[keep], p[keep], average="macro", zero_division=0))


def test_f1pn_is_the_official_all_rows_score(baseline):
    y, p = baseline
    value = f1pn(y, p)
    print(f"f1pn (official, all rows) = {value:.6f}")
    assert round(value, 4) == OFFICIAL
    assert value == pytest.approx(OFFICIAL, abs=TOL)
    assert value == pytest.approx(f1_score(y, p, labels=[1, -1], average="macro"), abs=1e-12)


def test_gold_non_neutral_variant_gives_a_different_number(baseline):
    y, p = baseline
    value = gold_polar_only(y, p)
    print(f"gold non-neutral rows, macro over present labels = {value:.6f}")
    assert round(value, 4) == GOLD_POLAR_ONLY
    assert value == pytest.approx(GOLD_POLAR_ONLY, abs=TOL)
    assert abs(value - f1pn(y, p)) > 0.09
    # the 0.3471 needs both parts of the variant: on gold non-neutral rows with labels=[1, -1] it is 0.5206
    keep = y != 0
    assert f1pn(y[keep], p[keep]) == pytest.approx(0.5206, abs=TOL)
    assert value == pytest.approx(f1pn(y[keep], p[keep]) * 2 / 3, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_f1pn_equals_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 500))
    y = rng.choice([-1, 0, 1], size=n, p=[0.15, 0.7, 0.15])
    p = rng.choice([-1, 0, 1], size=n)
    assert f1pn(y, p) == pytest.approx(f1_score(y, p, labels=[1, -1], average="macro", zero_division=0), abs=1e-12)
    assert f1pn(list(y), list(p)) == f1pn(y, p)


def test_our_submission_zip_reads_like_the_organisers_example(tmp_path):
    """One file, named as in baseline_submission.zip (their scorer opens it by name), one label per line."""
    import zipfile

    labels = organisers_baseline()
    ours = write_submission(labels, tmp_path / "submission.zip")
    with zipfile.ZipFile(RAW_DIR / "baseline_submission.zip") as theirs, zipfile.ZipFile(ours) as z:
        assert z.namelist() == theirs.namelist() == ["baseline_results.txt"]
        assert z.read("baseline_results.txt") == theirs.read("baseline_results.txt")  # same labels, same bytes
    assert (organisers_baseline(ours) == labels).all()
