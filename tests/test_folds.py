import numpy as np
import pytest

from lib.data import load_all
from lib.folds import add_overlap_flags, make_folds, subset_mask


@pytest.fixture(scope="module")
def data():
    return load_all()


def test_no_sentence_crosses_folds(data):
    train = data["train"].assign(fold=make_folds(data["train"], 5, 13))
    assert set(train["fold"]) == set(range(5))
    assert (train.groupby("sentence")["fold"].nunique() == 1).all()


def test_folds_are_stratified_within_tolerance(data):
    train = data["train"].assign(fold=make_folds(data["train"], 5, 13))
    overall = train["label"].value_counts(normalize=True)
    for _, part in train.groupby("fold"):
        share = part["label"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.02
        assert abs(len(part) - len(train) / 5) < 0.05 * len(train)


def test_same_seed_same_folds_other_seed_other_folds(data):
    a, b = make_folds(data["train"], 5, 13), make_folds(data["train"], 5, 13)
    c = make_folds(data["train"], 5, 14)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_overlap_flags_match_the_documented_shares(data):
    val = add_overlap_flags(data["validation"], data["train"])
    assert round(val["sentence_seen_in_train"].mean(), 3) == 0.705
    assert round(val["entity_seen_in_train"].mean(), 3) == 0.517
    final = add_overlap_flags(data["final"], data["train"])
    assert final["sentence_seen_in_train"].sum() == 0


def test_entity_flag_is_case_insensitive(data):
    train = data["train"].head(1)
    df = train.assign(entity=train["entity"].str.upper(), sentence="другое предложение")
    flags = add_overlap_flags(df, train)
    assert flags["entity_seen_in_train"].all() and not flags["sentence_seen_in_train"].any()


def test_subsets_partition_the_rows(data):
    val = add_overlap_flags(data["validation"], data["train"])
    seen, unseen = subset_mask(val, "seen"), subset_mask(val, "unseen")
    assert subset_mask(val, "all").all() and not (seen & unseen).any() and (seen | unseen).all()
    with pytest.raises(ValueError):
        subset_mask(val, "other")


def test_repeated_subset_is_rows_whose_entity_occurs_again_as_a_word():
    import pandas as pd

    df = pd.DataFrame({"sentence": ["ЕС и ЕС", "ЕСЛИ ЕС", "Путин и Путиным"], "start": [0, 5, 0], "end": [2, 7, 5]})
    assert subset_mask(df, "repeated").tolist() == [True, False, False]


def test_prepared_tables_are_rebuilt_when_an_ingredient_changes_and_reused_otherwise(tmp_path, monkeypatch, raw_copy):
    import dataclasses

    from lib import config, folds
    from lib.config import get_profile

    monkeypatch.setattr(config.RunPaths, "processed", property(lambda self: tmp_path / "processed" / self.profile))
    prof = dataclasses.replace(get_profile("smoke"), max_rows=None)
    first = folds.load_prepared(prof, raw_copy)
    stamp = lambda: (first.folder / "train.tsv").stat().st_mtime_ns  # noqa: E731
    before = stamp()
    assert folds.load_prepared(prof, raw_copy).folder == first.folder and stamp() == before  # read, not rebuilt
    t = folds.load_prepared(dataclasses.replace(prof, n_folds=3), raw_copy)
    assert t.folder != first.folder and set(t["train"]["fold"]) == {0, 1, 2}  # another fold count
    (raw_copy / "train_data.csv").write_text((raw_copy / "train_data.csv").read_text().replace("\t1\n", "\t0\n", 1))
    assert folds.load_prepared(prof, raw_copy).folder != first.folder  # the raw file changed
