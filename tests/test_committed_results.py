"""The committed files score what figures/results.json says: the validation submission is the headline, and
chapter 08's prediction files are its NewsMTSC headline, each read back from disk and scored against the raw
labels as a reader would."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from lib.chapters.ch02.baselines import organisers_baseline
from lib.data import load_split
from lib.metrics import f1pn

FIGURES = Path(__file__).resolve().parents[1] / "figures"
DOC = json.loads((FIGURES / "results.json").read_text())
NUMBERS = {c: e["numbers"] for c, e in DOC["chapters"].items()}
RUN = DOC.get("run")
# results committed before the run record existed (issue 31) cannot meet the checks below; a full run writes it
needs_run = pytest.mark.skipif(RUN is None, reason="figures/results.json predates the run record")


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


@needs_run
def test_one_recorded_run_produced_every_chapter():
    for field in ("commit", "seconds", "hardware", "precision", "torch", "transformers", "runs", "parts"):
        assert field in RUN, field
    assert sorted(DOC["chapters"]) == [f"{i:02d}" for i in range(1, 9)]
    assert {c: e["commit"] for c, e in DOC["chapters"].items()} == dict.fromkeys(DOC["chapters"], RUN["commit"])
    assert RUN["seconds"] == sum(p["seconds"] for p in RUN["parts"])
    root = FIGURES.parent
    if (root / ".git").exists():  # the run's code is in this history
        git = subprocess.run(["git", "merge-base", "--is-ancestor", RUN["commit"], "HEAD"], cwd=root)
        assert git.returncode == 0, f"run.commit {RUN['commit']} is not in HEAD's history"


def _ci(chapter: str, key: str) -> list[float]:
    v = NUMBERS[chapter][key]
    assert len(v) == 3 and v[1] <= v[0] <= v[2], (key, v)
    return v


@needs_run
def test_the_chapters_answer_with_the_numbers_the_issues_ask_for():
    from lib import plan
    from lib.chapters.ch07 import result_name
    from lib.config import get_profile

    assert all(NUMBERS[f"{i:02d}"] for i in range(1, 8))
    ch02 = DOC["chapters"]["02"]
    assert len(ch02["hamam_seeds"]) >= 2 and len(ch02["hamam_folds"]) == 5 and len(ch02["mode_folds"]) == 5
    for s in ch02["hamam_seeds"]:
        _ci("02", f"02.hamam_seed{s}.validation.all")
    for key in ("02.hamam.validation.all", "02.hamam.validation.seen", "02.hamam.validation.unseen"):
        _ci("02", key)
    assert len(NUMBERS["02"]["02.hamam_minus_unmasked.trainings"]) == 3
    assert len(NUMBERS["02"]["02.swap.f1pn_delta_diff_fits.hamam_minus_unmasked"]) == 3
    assert {"02.swap.flip_rate.null_hamam", "02.swap.flip_rate.null_unmasked"} <= set(NUMBERS["02"])
    assert len(DOC["chapters"]["04"]["seeds"]) >= 4
    prof = get_profile(DOC["profile"])
    for run in (r for r in plan.runs(prof) if r.name.startswith("07/")):
        for subset in ("all", "unseen"):
            _ci("07", f"07.{result_name(run.name)}.validation.{subset}")
    assert any(k.startswith("03.weight_difference.") for k in NUMBERS["03"])
    keys = [f"08.{m}.test_rw.f1pn" for m in ("hamam", "unmasked", "masked")] + [
        "08.hamam.test_mt.f1pn",
        "08.hamam.test_mt.f1m",
        "08.hamam_minus_unmasked.test_rw.f1pn",
        *(f"08.transfer.ru_to_en.{m}.test_rw.f1pn" for m in ("hamam", "unmasked")),
        *(f"08.transfer.en_to_ru.{m}.validation.f1pn" for m in ("hamam", "unmasked")),
    ]
    for key in keys:
        assert len(NUMBERS["08"][key]) == 3, key
    assert {"08.swap.flip_rate.hamam", "08.swap.flip_rate.unmasked"} <= set(NUMBERS["08"])


@needs_run
@pytest.mark.parametrize("page", sorted((FIGURES.parent / "reports").glob("[0-9][0-9]_*.html")), ids=lambda p: p.stem)
def test_committed_pages_carry_no_leftover_output(page):
    text = page.read_text(encoding="utf-8")
    for leftover in (
        "PosixPath(",
        "Traceback (most recent call last)",
        "Default prompt name is set to",
        "/work/",
        "/tmp/",
    ):
        assert leftover not in text, f"{page.name}: {leftover}"
    warning = re.search(r"\b\w*Warning: ", text)  # a warning printed to a page (stderr), e.g. pandas' FutureWarning
    assert warning is None, f"{page.name}: {text[warning.start() : warning.start() + 120] if warning else ''}"
