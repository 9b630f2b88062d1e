"""scripts/benchmark.py: its ratio statistics on hand-made timings, and a tiny smoke-profile run's JSON."""

import importlib.util
import json

import pytest

from lib.config import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ratio_stats_on_hand_made_timings(bench):
    a = [[1.0, 1.0], [2.0, 2.0], [1.0, 3.0]]  # A's step seconds per round
    b = [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]  # B on the same batches: 2x, 1.5x, 2x slower
    r = bench.ratio_stats(a, b)
    assert r["per_round"] == pytest.approx([2.0, 1.5, 2.0])
    assert r["rounds"] == pytest.approx({"min": 1.5, "median": 2.0, "max": 2.0})
    assert r["of_medians"] == pytest.approx(3.0 / 1.5)  # median of B's six steps / median of A's
    assert bench.ratio_stats(b, a)["of_medians"] == pytest.approx(0.5)  # swapping the arms inverts it
    s = bench.arm_stats([5.0, 1.0], a, examples=30)
    assert s["step_seconds"] == pytest.approx({"min": 1.0, "median": 1.5, "max": 3.0})
    assert s["examples_per_s"] == pytest.approx(30 / 10.0) and s["timed_steps"] == 6 and s["warmup_seconds"] == 6.0


def test_compile_one_off_seconds(bench):
    """Time above the median step, compiled arm minus eager arm: compilation and later recompiles."""
    compiled = bench.arm_stats([10.0, 1.0, 1.0], [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0]], examples=6)
    eager = bench.arm_stats([2.0, 2.0, 2.0], [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], examples=6)
    assert bench.one_off_seconds(compiled, eager) == pytest.approx(9.0 + 4.0)


def test_precision_check_line(bench):
    faster = {"ratio": {"of_medians": 1.6, "rounds": {"min": 1.5, "median": 1.6, "max": 1.7}}}
    slower = {"ratio": {"of_medians": 0.5, "rounds": {"min": 0.4, "median": 0.5, "max": 0.6}}}
    unsettled = {"ratio": {"of_medians": 1.1, "rounds": {"min": 0.9, "median": 1.1, "max": 1.3}}}
    line = bench.precision_check("bf16", faster, "e5-small")["line"]
    assert line.startswith("auto picks bf16: right here (bf16 1.60x faster on e5-small")
    assert not bench.precision_check("bf16", slower, "e5-small")["right"]
    assert (
        bench.precision_check("fp32", slower, "x")["right"] and not bench.precision_check("fp32", faster, "x")["right"]
    )
    assert "WRONG" in bench.precision_check("fp32", faster, "x")["line"]
    assert not bench.precision_check("bf16", unsettled, "x")["settled"]
    assert bench.precision_check("bf16", unsettled, "x")["line"].endswith("NOT SETTLED")


def test_smoke_run_writes_the_json(bench, tmp_path):
    out = tmp_path / "benchmark.json"
    argv = ["--profile", "smoke", "--rounds", "2", "--steps", "2", "--warmup", "1", "--only", "bucketing,msd"]
    bench.main([*argv, "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["hardware"] and res["torch"] and res["threads"] >= 1 and res["date"]
    assert res["auto_precision"] in ("bf16", "fp32", "fp16")
    assert res["settings"]["profile"] == "smoke" and res["settings"]["rounds"] == 2
    assert set(res["comparisons"]) == {"bucketing", "msd"}
    for comp in res["comparisons"].values():
        r = comp["ratio"]
        assert len(r["per_round"]) == 2 and r["of_medians"] > 0
        assert r["rounds"]["min"] <= r["rounds"]["median"] <= r["rounds"]["max"]
        for arm in comp["arms"].values():
            s = arm["step_seconds"]
            assert 0 < s["min"] <= s["median"] <= s["max"] and arm["timed_steps"] == 4 and arm["examples_per_s"] > 0
    assert res["comparisons"]["bucketing"]["arms"]["B"]["pad_to"] == 64  # the smoke profile's max_length
    assert res["comparisons"]["msd"]["arms"]["A"]["msd_k"] == 5 and res["comparisons"]["msd"]["arms"]["B"]["msd_k"] == 1


def test_unknown_comparison_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--profile", "smoke", "--only", "nope"])


def test_merge_keeps_other_comparisons_of_the_same_machine(bench):
    machine = {"hardware": "cpu x", "torch": "2", "threads": 2, "device": "cpu"}
    old = machine | {"date": "d1", "seconds": 10.0, "settings": {"only": ["bf16", "msd"]}, "skipped": {}}
    old |= {"comparisons": {"bf16": {"r": 1}, "msd": {"r": 2}}, "precision_check": {"auto": "bf16"}}
    new = machine | {"date": "d2", "seconds": 5.0, "settings": {"only": ["msd"]}, "skipped": {"vocab": "why"}}
    new |= {"comparisons": {"msd": {"r": 3, "date": "d2"}}}
    out = bench.merged(old, new, "f.json")
    assert out["comparisons"] == {"bf16": {"r": 1, "date": "d1"}, "msd": {"r": 3, "date": "d2"}}
    assert out["settings"]["only"] == ["msd", "bf16"] and out["precision_check"] == {"auto": "bf16"}
    assert out["seconds"] == 15.0 and out["date"] == "d2" and out["skipped"] == {"vocab": "why"}
    with pytest.raises(SystemExit, match="hardware"):
        bench.merged(old | {"hardware": "cpu y"}, new, "f.json")


def test_frozen_cache_needs_frozen_layers(bench, tmp_path):
    out = tmp_path / "benchmark.json"
    bench.main(["--profile", "smoke", "--only", "frozen_cache", "--out", str(out)])
    assert json.loads(out.read_text())["skipped"] == {"frozen_cache": "the recipe freezes no layers"}
