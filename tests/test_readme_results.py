"""The README's results block is written from figures/results.json (scripts/readme_results.py): every chapter's
computed answers and the run record, never typed by hand, and a check that fails when the two drift apart."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "scripts" / "readme_results.py")
rr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rr)

DOC = {
    "run": {
        "commit": "0123456789abcdef",
        "seconds": 9000,
        "parts": [{"only": "all", "seconds": 2000}, {"only": "training", "seconds": 7000, "note": "in the background"}],
        "hardware": "AMD EPYC, 2 CPU threads, no GPU",
        "precision": "bf16",
        "torch": "2.13.0+cpu",
        "transformers": "5.23.0",
        "runs": {"02/hamam": {"folds": 5, "seconds": 2000.4}},
    },
    "chapters": {
        "01": {"seconds": 13, "answers": ["**RuSentNE-23** has 6637 train rows."]},
        "02": {"seconds": 900, "answers": ["Goal missed: all rows 0.571 [0.540, 0.601].", "Swaps: fewer flips."]},
    },
}


def test_the_block_carries_every_answer_and_the_run_record_in_chapter_order():
    block = rr.render(DOC)
    assert block.startswith(rr.BEGIN) and block.rstrip().endswith(rr.END)
    for text in ("Goal missed: all rows 0.571 [0.540, 0.601].", "Swaps: fewer flips.", "6637 train rows"):
        assert text in block
    assert block.index("RuSentNE-23") < block.index("Goal missed") < block.index("Swaps")
    assert "9,000 s" in block and "2 h 30 min" in block and "`0123456789ab`" in block and "in the background" in block
    assert "| `02/hamam` | 5 | 2,000 |" in block
    assert "within the goal" in block  # 9,000 s: the goal exactly
    over = json.loads(json.dumps(DOC))
    over["run"]["seconds"] = 12_001
    assert "over the ceiling of 12,000 s" in rr.render(over)
    over["run"]["seconds"] = 11_766
    assert "over the goal of 9,000 s, within the ceiling of 12,000 s" in rr.render(over)
    assert "#### 02 · HAMAM training" in block  # the notebook's own title
    assert "(reports/02_hamam_training.html)" in block


def test_check_fails_when_the_readme_drifts_from_the_results(tmp_path):
    readme = f"# Study\n\nprose\n\n{rr.BEGIN}\nold\n{rr.END}\n\nmore prose\n"
    assert rr.check(readme, DOC) is not None  # the block is stale
    fresh = rr.replace_block(readme, rr.render(DOC))
    assert fresh.startswith("# Study\n\nprose\n\n") and fresh.endswith("\n\nmore prose\n")
    assert rr.check(fresh, DOC) is None
    changed = json.loads(json.dumps(DOC))
    changed["chapters"]["02"]["answers"][0] = "Goal missed: all rows 0.570 [0.540, 0.601]."
    assert rr.check(fresh, changed) is not None  # one digit moved: caught
    assert rr.check("# Study without a block\n", DOC) is not None  # results with answers must be in the README
    with pytest.raises(SystemExit):
        rr.replace_block("no markers", rr.render(DOC))


def test_results_from_before_answers_point_to_the_pages_and_need_no_block():
    old = {"chapters": {"02": {"seconds": 269, "numbers": {"02.hamam.validation.all": [0.571, 0.54, 0.601]}}}}
    block = rr.render(old)
    assert "earlier run" in block and "0.571" not in block  # no number without its answer's words
    assert rr.check("# Study without a block\n", old) is None


def test_the_committed_readme_says_what_the_committed_results_say():
    doc = json.loads((ROOT / "figures" / "results.json").read_text())
    assert rr.check((ROOT / "README.md").read_text(), doc) is None
