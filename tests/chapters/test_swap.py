import time

import numpy as np
import pandas as pd
import pytest

from lib.chapters.swap import (
    MEASURES,
    counterfactual_copies,
    effects_by,
    fits,
    paired_effect_diff,
    reliance_verdict,
    replacement_pool,
    swap_effects,
)


def frame(rows) -> pd.DataFrame:
    """Rows of (sentence, entity, tag, label); offsets from the first occurrence of the entity."""
    out = pd.DataFrame(rows, columns=["sentence", "entity", "entity_tag", "label"])
    out["start"] = [s.index(e) for s, e in zip(out["sentence"], out["entity"])]
    out["end"] = out["start"] + out["entity"].str.len()
    out["sentence_seen_in_train"] = [True, False] * (len(out) // 2) + [True] * (len(out) % 2)
    return out


@pytest.fixture
def train():
    return frame(
        [
            ("Медведева поддержали все.", "Медведева", "PERSON", 1),
            ("Иванова раскритиковали.", "Иванова", "PERSON", -1),
            ("Путина встретили в Сочи.", "Путина", "PERSON", 0),
            ("Сбербанк отчитался.", "Сбербанк", "PERSON", 0),  # a wrong tag, but a clear non-fit
            ("Петрова хвалят.", "Петрова", "PERSON", 1),
            ("В том же году ПУТИНА не было.", "ПУТИНА", "PERSON", 0),
            ("Я видел.", "Я", "PERSON", 0),  # 1 character: never a replacement
            ("США ввели санкции.", "США", "COUNTRY", -1),
            ("Россия ответила.", "Россия", "COUNTRY", 0),
            ("Германия молчит.", "Германия", "COUNTRY", 0),
        ]
    )


@pytest.fixture
def df():
    return frame(
        [
            ("Критики Путина снова осудили Путина за всё.", "Путина", "PERSON", -1),
            ("Рост экономики Германия приветствовала.", "Германия", "COUNTRY", 1),
            ("Жители Марса довольны.", "Марса", "PLANET", 0),  # no pool for this tag: skipped
            ("Критики Путина снова осудили Путина за всё.", "Путина", "PERSON", 0),
        ]
    ).assign(row=[10, 11, 12, 13])


def test_pool_sorted_distinct_without_single_letters(train):
    pool = replacement_pool(train)
    assert set(pool) == {"PERSON", "COUNTRY"}
    assert pool["PERSON"] == sorted(set(pool["PERSON"])) and "Я" not in pool["PERSON"]
    assert pool["COUNTRY"] == ["Германия", "Россия", "США"]


def test_copies_offsets_tag_and_never_the_original(df, train):
    c = counterfactual_copies(df, train, n=3, seed=1)
    assert set(c["row"]) == {0, 1, 3} and c.groupby("row").size().to_dict() == {0: 3, 1: 2, 3: 3}
    pool = replacement_pool(train)
    for r in c.itertuples():
        src = df.iloc[r.row]
        assert r.sentence[r.start : r.end] == r.entity
        assert r.start == src.start and r.end == r.start + len(r.entity)
        assert r.sentence[: r.start] == src.sentence[: src.start]
        assert r.sentence[r.end :] == src.sentence[src.end :]  # the later "Путина" is untouched
        assert r.entity_tag == src.entity_tag and r.entity in pool[r.entity_tag]
        assert r.entity.lower() != src.entity.lower() and r.original_entity == src.entity
        assert r.label == src.label and r.file_row == src.row
    assert c.groupby("row")["entity"].nunique().to_dict() == c.groupby("row").size().to_dict()  # no repeats
    assert "ПУТИНА" not in set(c.loc[c["original_entity"] == "Путина", "entity"])  # case-insensitive


def test_copies_deterministic_for_a_seed(df, train):
    a, b = counterfactual_copies(df, train, seed=5), counterfactual_copies(df, train, seed=5)
    pd.testing.assert_frame_equal(a, b)
    others = [counterfactual_copies(df, train, n=2, seed=s)["entity"].tolist() for s in range(6)]
    assert len({tuple(o) for o in others}) > 1


def test_copies_with_no_pooled_tag_are_empty(train):
    d = frame([("Жители Марса довольны.", "Марса", "PLANET", 0)])
    c = counterfactual_copies(d, train)
    assert len(c) == 0 and {"row", "original_entity", "fits"} <= set(c.columns)


def test_copies_reject_bad_offsets(df, train):
    with pytest.raises(ValueError, match="sentence\\[start:end\\]"):
        counterfactual_copies(df.assign(start=df["start"] + 1), train)


@pytest.mark.parametrize(
    "orig, repl, ok",
    [
        ("Путина", "Медведева", True),  # genitive -а both
        ("Путина", "Сбербанк", False),
        ("Путин", "Сбербанк", True),  # both consonant stems (nominative)
        ("России", "Германии", True),
        ("России", "Германия", False),
        ("Путиным", "Медведевым", True),
        ("Путиным", "Ивановой", False),
        ("Путина", "США", True),  # indeclinable replacement fits any slot
        ("США", "России", False),
        ("Кевина Хассетта", "Медведева", True),  # last word read
        ("Президент «MicroBank»", "директор", True),  # last Cyrillic word, Latin ignored
        ("ZDF", "BBC", True),
    ],
)
def test_fits_rule(orig, repl, ok):
    assert fits(orig, repl) is ok


@pytest.fixture
def setup(df, train):
    c = counterfactual_copies(df, train, n=3, seed=1)
    rng = np.random.default_rng(0)
    orig = rng.normal(size=(len(df), 3))
    return c, orig


def test_no_change_means_no_flip(setup, df):
    c, orig = setup
    r = swap_effects(orig, orig[c["row"]], c, df, n_boot=200)
    assert r["flip_rate"] == [0.0, 0.0, 0.0] and r["dp_pos"] == [0.0, 0.0, 0.0] and r["dp_neg"][0] == 0.0
    assert r["f1pn_original"][0] == r["f1pn_swapped"][0] and r["f1pn_delta"] == [0.0, 0.0, 0.0]
    assert r["n_copies"] == len(c) and r["n_rows"] == 3 and set(MEASURES) <= set(r)


def test_all_flip(setup, df):
    c, orig = setup
    swap = np.eye(3)[(orig[c["row"]].argmax(1) + 1) % 3] * 5.0  # every copy moves to another class
    r = swap_effects(orig, swap, c, df, n_boot=200)
    assert r["flip_rate"] == [1.0, 1.0, 1.0]


def test_ci_contains_value_and_subsets(setup, df):
    c, orig = setup
    swap = orig[c["row"]] + np.random.default_rng(1).normal(scale=2, size=(len(c), 3))
    r = swap_effects(orig, swap, c, df, n_boot=300)
    for m in MEASURES:
        v, lo, hi = r[m]
        assert lo - 1e-12 <= v <= hi + 1e-12, m
    fits_only = swap_effects(orig, swap, c, df, n_boot=50, subset=c["fits"])
    assert fits_only["n_copies"] == int(c["fits"].sum())
    rows0 = swap_effects(orig, swap, c, df, n_boot=50, rows=np.arange(len(df)) == 0)
    assert rows0["n_copies"] == 3 and rows0["n_rows"] == 1
    by_hand = (orig[c["row"][:3]].argmax(1) != swap[:3].argmax(1)).mean()
    assert rows0["flip_rate"][0] == pytest.approx(by_hand)


def test_f1pn_original_weights_rows_by_copies(df, train):
    c = counterfactual_copies(df, train, n=3, seed=1)
    orig = np.eye(3)[[2, 2, 1, 1]] * 3.0  # predictions: +1, +1, 0, 0 for labels -1, 1, 0, 0
    r = swap_effects(orig, orig[c["row"]], c, df, n_boot=0)
    # units: row 0 (y=-1, p=1) x3, row 1 (y=1, p=1) x2, row 3 (y=0, p=0) x3 -> F1 pos 4/7, neg 0;
    # counting each source row once would give (2/3 + 0) / 2 instead
    assert r["f1pn_original"][0] == pytest.approx(2 / 7)
    assert np.isnan(r["f1pn_original"][1])


def test_paired_diff_with_itself_is_zero(setup, df):
    c, orig = setup
    swap = orig[c["row"]] + np.random.default_rng(2).normal(size=(len(c), 3))
    for m in MEASURES:
        assert paired_effect_diff(orig, swap, orig, swap, c, df, measure=m, n_boot=100) == [0.0, 0.0, 0.0]
    d = paired_effect_diff(orig, swap, orig, orig[c["row"]], c, df, n_boot=100)
    assert d[0] == pytest.approx(swap_effects(orig, swap, c, df, n_boot=0)["flip_rate"][0])
    with pytest.raises(ValueError, match="unknown measure"):
        paired_effect_diff(orig, swap, orig, swap, c, df, measure="nope")


def test_effects_by_groups(setup, df):
    c, orig = setup
    swap = orig[c["row"]] + np.random.default_rng(3).normal(scale=2, size=(len(c), 3))
    t = effects_by(c, df, orig, swap, "entity_tag", n_boot=50)
    assert list(t["entity_tag"]) == ["COUNTRY", "PERSON", "PLANET"]
    assert t.set_index("entity_tag")["n_copies"].to_dict() == {"COUNTRY": 2, "PERSON": 6, "PLANET": 0}
    assert np.isnan(t.set_index("entity_tag").loc["PLANET", "flip_rate"])
    person = swap_effects(orig, swap, c, df, n_boot=50, rows=(df["entity_tag"] == "PERSON").to_numpy())
    assert t.set_index("entity_tag").loc["PERSON", "flip_rate"] == person["flip_rate"][0]
    seen = effects_by(c, df, orig, swap, "sentence_seen_in_train", n_boot=0)
    assert seen["n_copies"].sum() == len(c)


def test_logit_shapes_checked(setup, df):
    c, orig = setup
    with pytest.raises(ValueError, match="logits rows"):
        swap_effects(orig, orig, c, df)


def test_real_validation_scales():
    from lib.data import load_all
    from lib.folds import add_overlap_flags

    splits = load_all()
    train, val = splits["train"], add_overlap_flags(splits["validation"], splits["train"])
    t0 = time.perf_counter()
    c = counterfactual_copies(val, train, n=5, seed=13)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed
    assert len(c) == 5 * len(val)  # every validation tag has a large pool
    assert all(s[a:b] == e for s, a, b, e in zip(c["sentence"], c["start"], c["end"], c["entity"]))
    assert 0.05 < c["fits"].mean() < 0.95


def test_effects_table_and_figure(setup, df):
    from lib.chapters.figcheck import text_problems
    from lib.chapters.swap import FIGURE_MEASURES, effects_figure, effects_table

    c, orig = setup
    swap = orig[c["row"]] + np.random.default_rng(4).normal(scale=2, size=(len(c), 3))
    t = effects_table({"a": (orig, swap), "b": (orig, orig[c["row"]])}, c, df, n_boot=50)
    assert list(zip(t["model"], t["copies"])) == [("a", "all"), ("a", "fits"), ("b", "all"), ("b", "fits")]
    assert t["n_copies"].tolist() == [len(c), int(c["fits"].sum())] * 2
    assert t.loc[0, "flip_rate"] == swap_effects(orig, swap, c, df, n_boot=50)["flip_rate"][0]
    assert (t.loc[2:, ["flip_rate", "dp_pos", "dp_neg"]] == 0).all().all()
    fig = effects_figure(t, "test")
    assert text_problems(fig) == [] and len(fig.axes) == len(FIGURE_MEASURES)


def test_predict_copies_is_the_fold_ensemble(smoke, tmp_path, monkeypatch):
    """Predicting the original rows through the loaded checkpoints gives the logits saved at training time."""
    from lib import plan
    from lib.predict import predict_folds as predict_copies

    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    plan.materialise(prof, data, names=["02/unmasked", "02/hamam"], executor="serial", quiet=True)
    unmasked, hamam = (plan.read(prof, data, name) for name in ("02/unmasked", "02/hamam"))
    folds, val = unmasked.folds, data["validation"]
    assert set(folds) <= set(hamam.folds) and len(folds) == 2
    z = predict_copies(unmasked, val, "cpu", folds, batch_size=16, chunk=50)  # several chunks
    np.testing.assert_allclose(z, unmasked.ensemble("validation", folds), atol=1e-5)
    np.testing.assert_allclose(
        predict_copies(unmasked, val, "cpu", [1]), unmasked.ensemble("validation", [1]), atol=1e-5
    )

    passes = predict_copies(hamam, val, "cpu", folds, mode=("unmasked", "masked", "hamam"))
    assert set(passes) == {"unmasked", "masked", "hamam"}
    np.testing.assert_allclose(passes["hamam"], hamam.ensemble("validation", folds), atol=1e-5)  # mean of passes
    head = val.iloc[:40]
    np.testing.assert_allclose(predict_copies(hamam, head, "cpu", folds, mode="hamam"), passes["hamam"][:40], atol=1e-5)
    np.testing.assert_allclose(
        predict_copies(hamam, head, "cpu", folds, mode="masked"), passes["masked"][:40], atol=1e-5
    )
    assert not np.allclose(passes["unmasked"], passes["masked"], atol=1e-3)

    copies = counterfactual_copies(val, data["train"], n=2, seed=13)
    zc = predict_copies(unmasked, copies, "cpu", folds)
    assert len(copies) > len(val) and zc.shape == (len(copies), 3) and np.isfinite(zc).all()
    assert not np.allclose(zc, z[copies["row"]], atol=1e-4)  # another name, another prediction
    assert predict_copies(unmasked, copies.iloc[:0], "cpu", folds).shape == (0, 3)
    with pytest.raises(ValueError, match="subset of the run's folds"):
        predict_copies(unmasked, val, "cpu", [7])


def test_null_copies_are_the_originals_text_row_for_row():
    from lib.chapters.swap import counterfactual_copies, null_copies

    df = pd.DataFrame(
        {
            "sentence": ["Иван сказал, что всё плохо.", "Компания Альфа выросла."],
            "entity": ["Иван", "Альфа"],
            "entity_tag": ["PERSON", "ORGANIZATION"],
            "start": [0, 9],
            "end": [4, 14],
            "label": [-1, 1],
        }
    )
    train = df.assign(entity=["Мария", "Бета"], sentence=["Мария пришла.", "Бета растёт."], start=[0, 0], end=[5, 4])
    copies = counterfactual_copies(df, train, n=1)
    null = null_copies(df, copies)
    assert (copies["sentence"] != df["sentence"].to_numpy()[copies["row"]]).all()  # real copies changed
    src = df.iloc[null["row"]].reset_index(drop=True)
    assert (null["sentence"] == src["sentence"]).all() and (null["entity"] == src["entity"]).all()
    assert all(s[a:b] == e for s, a, b, e in zip(null["sentence"], null["start"], null["end"], null["entity"]))
    assert (null["fits"] == copies["fits"]).all()  # the same subsets apply


def test_reliance_verdict_credits_the_pass_that_sees_the_name_not_the_averaging():
    assert reliance_verdict((-0.001, 0.02), (-0.03, -0.01)) == "Not measurably"
    assert reliance_verdict((0.001, 0.02), (-0.03, -0.01)).startswith("No: HAMAM's output flips more")
    assert reliance_verdict((-0.05, -0.02), (-0.03, -0.01)).startswith("Yes")
    assert "flips more" in reliance_verdict((-0.05, -0.02), (0.02, 0.04))
    assert "cannot be told apart" in reliance_verdict((-0.05, -0.02), (-0.01, 0.02))
