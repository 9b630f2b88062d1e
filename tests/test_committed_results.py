"""The committed files score what figures/results.json says: the validation submission is the headline, and
chapter 08's prediction files are its NewsMTSC headline, each read back from disk and scored against the raw
labels as a reader would."""

import json
from pathlib import Path

import pytest

from lib.chapters.ch02.baselines import organisers_baseline
from lib.data import load_split
from lib.metrics import f1pn

FIGURES = Path(__file__).resolve().parents[1] / "figures"
NUMBERS = {c: e["numbers"] for c, e in json.loads((FIGURES / "results.json").read_text())["chapters"].items()}


def test_the_validation_submission_scores_the_headline():
    labels = organisers_baseline(FIGURES / "submission_validation.zip")  # the same format as the organisers' zip
    y = load_split("validation")["label"].to_numpy()
    assert len(labels) == len(y)
    assert f1pn(y, labels) == pytest.approx(NUMBERS["02"]["02.hamam.validation.all"][0], abs=1e-4)


@pytest.mark.parametrize("part", ["test_rw", "test_mt"])
def test_chapter_08_predictions_score_what_results_say(part):
    from lib.chapters import ch08

    path = FIGURES / f"08_predictions_{part}.tsv"
    assert path.is_file() == ("08" in NUMBERS), "08's predictions are committed exactly when its numbers are"
    if path.is_file():
        assert ch08.rescore(path, part)["f1pn"] == pytest.approx(NUMBERS["08"][f"08.hamam.{part}.f1pn"][0], abs=1e-4)
