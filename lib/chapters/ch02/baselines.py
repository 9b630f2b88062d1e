"""Reference points scored by our own metric code: the organisers' RuBERT baseline predictions
and a TF-IDF (char + word n-grams) logistic regression with the same neutral class weight."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union

from ...config import RAW_DIR
from ...model import label_weights


def organisers_baseline(path: Path = RAW_DIR / "baseline_submission.zip") -> np.ndarray:
    """The published RuBERT baseline: one label per validation row, in row order."""
    with zipfile.ZipFile(path) as z:
        (name,) = z.namelist()
        return np.array([int(x) for x in z.read(name).decode().split()])


def entity_text(df: pd.DataFrame) -> list[str]:
    # the bag of n-grams cannot see where the entity is: mark it in the text
    return [f"{s[:a]} <e> {s[a:b]} </e> {s[b:]}" for s, a, b in zip(df["sentence"], df["start"], df["end"])]


def tfidf_logreg(train: pd.DataFrame, neutral_weight: float = 0.1, seed: int = 0):
    """Fit on `train`; returns the fitted pipeline (predict on `entity_text(df)`)."""
    features = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=200_000),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True),
    )
    clf = LogisticRegression(C=10.0, max_iter=2000, class_weight=label_weights(neutral_weight), random_state=seed)
    return make_pipeline(features, clf).fit(entity_text(train), train["label"])


def submission_name(path: Path = RAW_DIR / "baseline_submission.zip") -> str:
    """The one file name inside the organisers' example zip: their scoring code opens it by that name."""
    with zipfile.ZipFile(path) as z:
        (name,) = z.namelist()
    return name


def write_submission(labels, path: Path, name: str | None = None) -> Path:
    """The competition's format: a zip holding one text file (named as in the organisers' example zip), one
    label (-1, 0, 1) per line, in row order."""
    name = name or submission_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name, date_time=(2023, 1, 8, 0, 0, 0))  # fixed: the same labels, the same bytes
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, "".join(f"{int(x)}\r\n" for x in labels))  # CRLF lines, as the organisers' file
    return path


def score_rows(study) -> list[dict]:
    """Chapter 02's reference rows on validation: the organisers' predictions and TF-IDF + logistic regression
    (with the profile's neutral weight)."""
    from ...metrics import score_subsets

    val, n = study.val, study.prof.bootstrap
    organisers = organisers_baseline()[val["row"].to_numpy()]
    tfidf = tfidf_logreg(study.train, neutral_weight=study.prof.train.neutral_weight).predict(entity_text(val))
    rows = score_subsets(val, organisers, n, model="organisers' RuBERT baseline", split="validation")
    rows2 = score_subsets(val, tfidf, n, model="TF-IDF + logistic regression", split="validation")
    return rows.to_dict("records") + rows2.to_dict("records")
