import time

import pandas as pd
import pytest

from lib.chapters.ch05 import bench

SENT = "Путин встретился с Байденом в Женеве, а потом улетел в Москву"
PER_ENTITY = ["HAMAM (cross)", "CLS pair (cross)", "SBERT marked u", "SBERT plain u, cached"]  # Scorers.per_entity


@pytest.mark.parametrize("n", [1, 5, 16])
def test_entity_spans_are_distinct_word_ngrams(n):
    df = bench.entity_spans(SENT, n)
    assert len(df) == n and len(set(zip(df["start"], df["end"]))) == n
    assert all(SENT[a:b] == e for a, b, e in zip(df["start"], df["end"], df["entity"]))
    assert df["entity"].iloc[0] == "Путин"


def test_entity_spans_refuses_short_sentences():
    with pytest.raises(ValueError):
        bench.entity_spans("Путин", 2)


def test_sample_rows_takes_whole_sentences_until_enough_rows():
    df = pd.DataFrame({"sentence": [f"s{i // 3}" for i in range(60)], "x": range(60)})
    s = bench.sample_rows(df, 10, seed=1)
    assert len(s) == 12  # 4 sentences of 3 rows: the fourth starts below 10 rows
    assert s.groupby("sentence").size().eq(3).all()


def test_sample_sentences_have_enough_ngrams():
    df = pd.DataFrame({"sentence": [SENT, "Коротко.", SENT + " снова"]})
    got = bench.sample_sentences(df, 5, 16)
    assert set(got) == {SENT, SENT + " снова"}
    for s in got:
        bench.entity_spans(s, 16)


def test_clock_keeps_the_best_run_and_repeats_short_calls():
    calls = []
    t = bench.clock(lambda: calls.append(1), repeat=3, min_seconds=0.01)
    assert len(calls) > 3 and 0 <= t < 0.01
    slow = []
    bench.clock(lambda: (slow.append(1), time.sleep(0.02)), repeat=2, min_seconds=0.01)
    assert len(slow) == 2  # one call per run when a call is long enough


def test_headline_ratios():
    tp = pd.DataFrame(
        {"method": ["HAMAM (cross)", "SBERT marked u", "SBERT plain u"], "per_second": [100.0, 150.0, 300.0]}
    )
    cost = pd.DataFrame(
        {
            "method": ["HAMAM (cross)", "SBERT plain u, cached"] * 2,
            "N": [1, 1, 16, 16],
            "ms_per_sentence": [10.0, 5.0, 80.0, 8.0],
        }
    )
    h = bench.headline(tp, cost, "05.")
    assert h["05.throughput_ratio.sbert_plain_vs_hamam"] == 3.0 and h["05.cached_entities_speedup_vs_hamam.n16"] == 10.0
    assert h["05.cached_entities_speedup_vs_hamam.n1"] == 2.0


def test_planned_tokens_grows_with_the_work():
    tpe = {k: 10.0 for k in ("HAMAM", "CLS cross-encoder", "softmax-entity", "softmax-plain", "encode", "entity")}
    assert bench.planned_tokens(tpe, 100, 4) < bench.planned_tokens(tpe, 200, 4) < bench.planned_tokens(tpe, 200, 8)


def test_aggregate_reports_the_median_run_and_the_spread():
    t = bench.aggregate({"a": [3.0, 1.0, 2.0], "b": [5.0, 4.0, 9.0, 6.0]})
    a, b = t.set_index("method").loc["a"], t.set_index("method").loc["b"]
    assert (a["seconds_min"], a["seconds"], a["seconds_max"], a["repeats"]) == (1.0, 2.0, 3.0, 3)
    assert (b["seconds_min"], b["seconds"], b["seconds_max"], b["repeats"]) == (4.0, 5.5, 9.0, 4)
    cost = bench.aggregate({("HAMAM (cross)", 1): [0.2, 0.1, 0.3]}, keys=("method", "N"))
    assert cost.iloc[0][["method", "N", "seconds"]].tolist() == ["HAMAM (cross)", 1, 0.2]


def test_run_refuses_fewer_than_three_timing_runs():
    with pytest.raises(ValueError, match=">= 3"):
        bench.run(None, pd.DataFrame(), repeat=2)


def test_throughput_plot_draws_points_with_min_max_whiskers_in_the_models_colours():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots
    from lib.chapters.figcheck import text_problems

    methods = list(bench.METHODS)
    tp = bench.aggregate({m: [0.5, 0.4, 0.7] for m in methods[:-1]})
    tp["items"], tp["unit"] = 100, ["rows"] * 4 + ["distinct sentences"]
    tp["per_second"], tp["per_second_min"], tp["per_second_max"] = 100 / 0.5, 100 / 0.7, 100 / 0.4
    times = {(m, n): [0.01 * n, 0.012 * n, 0.02 * n] for m in PER_ENTITY for n in (1, 4, 16)}
    cost = bench.aggregate(times, keys=("method", "N"))
    cost["ms_per_sentence"], cost["ms_min"], cost["ms_max"] = cost["seconds"], cost["seconds_min"], cost["seconds_max"]
    with matplotlib.rc_context():
        plots.setup()
        fig, axes = plt.subplots(2, 1, figsize=(11, 9))  # as chapter 05 draws it
        bench.plot(axes, tp, cost, ns=(1, 4, 16), labels={"HAMAM": "HAMAM e5-small"})
        assert plots.fit_width(fig) <= plots.MAX_WIDTH + 0.01 and text_problems(fig) == []
        labels = [t.get_text() for t in axes[0].get_yticklabels()]
        assert "HAMAM e5-small" in labels and "CLS cross-encoder" in labels and "CLS pair (cross)" not in labels
        assert not any(
            line.get_linestyle() not in ("None", "", " ") for line in axes[1].lines if len(line.get_xdata()) > 2
        )
        plt.close(fig)


def test_deployment_cost_times_each_variant_against_the_recipe_on_the_same_batches(smoke):
    from lib import plan

    prof, data = smoke
    backbone = plan.backbone_dir(prof, prof.train.backbone, data, build=True)
    table = bench.deployment_cost(backbone, prof.train, data["train"].head(64), data["validation"], steps=2, rows=16)
    assert list(table["variant"]) == [bench.deployment_label(m, k) for m, k in bench.DEPLOYMENT]
    recipe = table.iloc[0]
    assert recipe.masked_pass and recipe.K == 5
    assert recipe.train_ratio == recipe.train_ratio_min == recipe.train_ratio_max == 1.0  # every run against itself
    for what in ("train", "infer"):
        assert (table[f"{what}_ratio_min"] <= table[f"{what}_ratio"]).all()
        assert (table[f"{what}_ratio"] <= table[f"{what}_ratio_max"]).all()
    assert (table["train_s_per_step"] > 0).all() and (table["infer_ms_per_row"] > 0).all()
    assert table.attrs["steps"] == 2 and table.attrs["train_rows"] == 64
    text = bench.deployment_sentence(table)
    assert "dropping the masked pass" in text and "K = 1" in text
    nums = bench.deployment_numbers(table, "05.")
    assert nums["05.deployment.train_ratio.hamam_k5"] == [1.0, 1.0, 1.0]
    assert len(nums["05.deployment.infer_ratio.unmasked_k1"]) == 3
    with pytest.raises(ValueError, match="repeat must be >= 3"):
        bench.deployment_cost(backbone, prof.train, data["train"].head(8), data["validation"], repeat=2)
