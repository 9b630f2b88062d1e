"""Chapter 08: NewsMTSC in the plan (its own tables and keys), English mention kinds for swaps, target groups,
predictions files that re-score to what is reported, and the results.json keys."""

import numpy as np
import pandas as pd
import pytest

from lib import newsmtsc, plan
from lib.chapters import ch08
from lib.config import get_profile


def test_the_plan_trains_chapter_08_on_newsmtsc_with_its_own_key(smoke):
    prof, data = smoke
    runs = {r.name: r for r in plan.runs(prof) if r.name.startswith("08/")}
    assert set(runs) == {"08/hamam", "08/unmasked", "08/masked"}
    assert all(r.dataset == "newsmtsc" and "08" in r.readers for r in runs.values())
    en = plan.dataset(prof, runs["08/hamam"], data)
    assert set(en) == {"train", "validation", "final"} and len(en["train"]) <= prof.max_rows
    assert en["train"]["fold"].nunique() == prof.n_folds and "sentence_seen_in_train" in en["validation"]
    ru_key = plan.resolve(prof, plan.get(prof, "02/hamam"), data).key
    assert plan.resolve(prof, runs["08/hamam"], data).key != ru_key  # other rows, other key
    assert "08" in plan.get(prof, "02/hamam").readers  # transfer reads chapter 02's checkpoints
    rows = {r["name"] for r in plan.status(prof, data, chapters=["02", "08"])}
    assert "08/hamam" in rows and "02/hamam" in rows  # one config, two datasets: two artifacts, two rows


def test_mention_kinds_pair_like_with_like():
    kinds = [ch08.mention_kind(m) for m in ("He", "him", "Trump", "Hillary Clinton", "the president", "Trump's")]
    assert kinds == [
        "pronoun, subject:capitalised",
        "pronoun, object",
        "name",
        "multi-word name",
        "other",
        "possessive name",
    ]
    assert ch08.mention_kind('" Nunnelee') == "name"  # a leading quote is not the word
    assert ch08.mention_kind("she") != ch08.mention_kind("him")  # a swap keeps the case: never he -> him
    df = pd.DataFrame({"entity": ["She", "Obama"]})
    assert list(ch08.with_kinds(df)["entity_tag"]) == ["pronoun, subject:capitalised", "name"]


def test_target_groups_tell_sentences_with_mixed_labels_apart():
    df = pd.DataFrame({"sentence": ["a", "b", "b", "c", "c"], "label": [1, -1, -1, 1, -1]})
    assert list(ch08.target_groups(df)) == [
        "one target",
        "several, one label",
        "several, one label",
        "several, mixed labels",
        "several, mixed labels",
    ]


def test_predictions_file_rescores_from_the_raw_file(tmp_path):
    part = newsmtsc.read_split("test_rw").head(60)
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(len(part)) < 0.7, part["label"], 0)
    path = tmp_path / "p.tsv"
    out = ch08.predictions_file(part, labels, path)
    assert list(out.columns) == ["gid", "label"] and path.read_text().startswith("gid\tlabel\n")
    again = ch08.rescore(path, "test_rw")
    assert again["f1pn"] == pytest.approx(ch08.scored(part, labels, 0)["f1pn"])
    twice = pd.concat([out, out.head(1)])
    twice.to_csv(tmp_path / "twice.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="occurs twice"):
        ch08.rescore(tmp_path / "twice.tsv", "test_rw")
    with pytest.raises(ValueError, match="not in NewsMTSC"):
        pd.DataFrame({"gid": ["nope"], "label": [0]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
        ch08.rescore(tmp_path / "bad.tsv", "test_rw")


def test_numbers_carry_the_keys_the_readme_reads():
    idx = pd.MultiIndex.from_product([["hamam", "unmasked", "masked"], ["test_rw", "test_mt"], ["OOF rule", "argmax"]])
    sc = pd.DataFrame({c: 0.5 for c in ("f1pn", "f1pn_lo", "f1pn_hi", "f1m", "f1m_lo", "f1m_hi")}, index=idx)
    diffs = pd.DataFrame(
        [{"comparison": "hamam - unmasked", "part": "test_rw", "rows": "all", "n": 9, "diff": 0.1, "lo": 0, "hi": 0.2}]
    )
    transfer = pd.DataFrame(
        [
            {"direction": d, "model": m, "part": p, "decision": "argmax", "f1pn": 0.4, "f1pn_lo": 0.3, "f1pn_hi": 0.5}
            for d, p in (("ru_to_en", "test_rw"), ("en_to_ru", "validation"))
            for m in ("hamam", "unmasked")
        ]
    )
    xdiff = pd.DataFrame(
        [{"direction": "ru_to_en", "part": "test_rw", "comparison": "hamam - unmasked", "diff": 0, "lo": -1, "hi": 1}]
    )
    eff = pd.DataFrame(
        [
            {"model": m, "copies": "all", "flip_rate": 0.1, "flip_rate_lo": 0, "flip_rate_hi": 0.2}
            for m in ("hamam", "unmasked")
        ]
    )
    num = ch08.numbers(sc, diffs, transfer, xdiff, eff, eff, {"unmasked": (0.1, 0.0, 0.2)})
    assert num["08.swap.flip_rate_diff.hamam_minus_unmasked"] == [0.1, 0.0, 0.2]
    for k in (
        "08.hamam.test_rw.f1pn",
        "08.unmasked.test_rw.f1pn",
        "08.masked.test_rw.f1pn",
        "08.hamam.test_mt.f1pn",
        "08.hamam.test_mt.f1m",
        "08.hamam_minus_unmasked.test_rw.f1pn",
        "08.transfer.ru_to_en.hamam.test_rw.f1pn",
        "08.transfer.en_to_ru.unmasked.validation.f1pn",
        "08.swap.flip_rate.hamam",
        "08.swap.flip_rate.null_unmasked",
    ):
        assert k in num and len(num[k]) == 3, k


def test_the_cpu_plan_gives_chapter_08_two_folds_of_every_mode():
    prof = get_profile("cpu")
    assert [plan.get(prof, f"08/{m}").folds for m in ("hamam", "unmasked", "masked")] == [(0, 1)] * 3


def test_the_scores_figure_reads_cleanly():
    import matplotlib

    matplotlib.use("Agg")
    from lib.chapters.figcheck import text_problems
    from lib.chapters.plots import fit_width, setup

    scores = pd.DataFrame(
        [
            {"model": m, "part": p, "decision": "OOF rule", "f1pn": 0.6, "f1pn_lo": 0.55, "f1pn_hi": 0.65}
            for m in ("hamam", "unmasked", "masked")
            for p in ch08.TESTS
        ]
    )
    diffs = pd.DataFrame(
        [
            {"comparison": f"hamam - {b}", "part": p, "rows": g, "n": 100, "diff": 0.01, "lo": -0.02, "hi": 0.04}
            for p in ch08.TESTS
            for b in ("unmasked", "masked")
            for g in ("all", "one target", "several, mixed labels", "several, one label")
        ]
    )
    # a range as wide as the cpu run's (-0.098 to +0.074), whose default ticks collided once the page narrowed it
    diffs.loc[3, ["diff", "lo", "hi"]] = [-0.03, -0.098, 0.0]
    diffs.loc[5, ["diff", "lo", "hi"]] = [0.031, -0.01, 0.074]
    with matplotlib.rc_context():
        setup()  # the chapters' theme (its larger fonts are what crowds the ticks)
        fig = ch08.scores_figure(scores, diffs)
        fit_width(fig)  # as plots.save narrows it to the page before its check
        assert text_problems(fig) == []
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels[0] == "HAMAM − unmasked, test_rw: all (n=100)"


def test_the_answer_states_each_verdict_at_the_strength_of_its_interval():
    parts = list(ch08.TESTS)
    sc = pd.DataFrame(
        [
            {"model": m, "part": p, "decision": "OOF rule", "f1pn": 0.7, "f1pn_lo": 0.65, "f1pn_hi": 0.75, "f1m": 0.72}
            for m in ("hamam", "unmasked", "masked")
            for p in parts
        ]
    ).set_index(["model", "part", "decision"])
    diffs = pd.DataFrame(
        [
            {
                "comparison": "hamam - unmasked",
                "part": parts[0],
                "rows": "all",
                "n": 9,
                "diff": -0.01,
                "lo": -0.03,
                "hi": 0.01,
            },
            {
                "comparison": "hamam - unmasked",
                "part": parts[1],
                "rows": "all",
                "n": 9,
                "diff": -0.02,
                "lo": -0.04,
                "hi": 0.01,
            },
            {
                "comparison": "hamam - masked",
                "part": parts[0],
                "rows": "all",
                "n": 9,
                "diff": 0.03,
                "lo": 0.01,
                "hi": 0.05,
            },
            {
                "comparison": "hamam - masked",
                "part": parts[1],
                "rows": "all",
                "n": 9,
                "diff": 0.01,
                "lo": -0.01,
                "hi": 0.03,
            },
        ]
    )
    transfer = pd.DataFrame(
        [
            {"direction": d, "model": m, "part": p, "decision": "argmax", "f1pn": 0.5}
            for d, p in (("ru_to_en", parts[0]), ("en_to_ru", "validation"))
            for m in ("hamam", "unmasked", "masked")
        ]
    )
    xdiff = pd.DataFrame(
        [
            {
                "direction": "ru_to_en",
                "part": parts[0],
                "comparison": "hamam - unmasked",
                "diff": 0.02,
                "lo": -0.01,
                "hi": 0.05,
            },
            {
                "direction": "en_to_ru",
                "part": "validation",
                "comparison": "hamam - unmasked",
                "diff": -0.03,
                "lo": -0.05,
                "hi": -0.01,
            },
        ]
    )
    flips = {"flip_rate": 0.1, "flip_rate_lo": 0.08, "flip_rate_hi": 0.12, "copies": "all"}
    effects = pd.DataFrame([{"model": m, **flips} for m in ("hamam", "unmasked", "masked")])
    text = ch08.answer(sc, diffs, transfer, xdiff, effects, effects, {"unmasked": (-0.035, -0.05, -0.02)})
    head = text.split("\n")[0]
    assert f"HAMAM is indistinguishable from unmasked on {parts[0]}, {parts[1]}" in head
    assert f"ahead of masked on {parts[0]}, not distinguishable on {parts[1]}" in head
    assert "behind unmasked on English → Russian validation, not distinguishable on Russian → English" in head
    assert "changes HAMAM's label less often than the unmasked model's (-0.035 [-0.050, -0.020]" in head
    text = ch08.answer(sc, diffs, transfer, xdiff, effects, effects, {"unmasked": (0.01, -0.01, 0.03)})
    assert "neither clearly more nor less often than" in text
