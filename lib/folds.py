"""Sentence-grouped stratified folds and the seen/unseen subsets every evaluation is split by."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

SUBSETS = ("all", "seen", "unseen")  # validation rows whose sentence is / is not in train


def make_folds(train: pd.DataFrame, n_folds: int = 5, seed: int = 13) -> np.ndarray:
    """Fold id per row: stratified by label, grouped by sentence (a sentence never crosses folds)."""
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(train), -1, dtype=int)
    for k, (_, held) in enumerate(cv.split(train, train["label"], groups=train["sentence"])):
        fold[held] = k
    return fold


def add_overlap_flags(df: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """`sentence_seen_in_train` (exact sentence) and `entity_seen_in_train` (case-insensitive)."""
    out = df.copy()
    out["sentence_seen_in_train"] = out["sentence"].isin(set(train["sentence"]))
    out["entity_seen_in_train"] = out["entity"].str.lower().isin(set(train["entity"].str.lower()))
    return out


def subset_mask(df: pd.DataFrame, subset: str) -> np.ndarray:
    """Rows of a subset: SUBSETS (the ones every score table reports), or `repeated` (the entity
    string occurs again in the sentence as a whole word, counted over the whole sentence)."""
    if subset == "all":
        return np.ones(len(df), dtype=bool)
    if subset == "repeated":  # the entity string occurs again in the sentence (what `mask_mentions` is about)
        from .model import mention_spans

        return np.array(
            [len(mention_spans(s, a, b)) > 1 for s, a, b in zip(df["sentence"], df["start"], df["end"])], dtype=bool
        )
    seen = df["sentence_seen_in_train"].to_numpy(bool)
    if subset == "seen":
        return seen
    if subset == "unseen":
        return ~seen
    raise ValueError(f"unknown subset {subset!r}; choose one of {SUBSETS + ('repeated',)}")


def prepare(profile, data_dir=None) -> dict[str, pd.DataFrame]:
    """Load the profile's rows, add `fold` to train and overlap flags to every split; save them.

    The tables land in data/processed/<profile>/ (tab-separated); later chapters read them with
    `load_prepared`, so every notebook sees the same rows and folds.
    """
    from .config import RAW_DIR, RunPaths
    from .data import load_all

    data_dir = Path(data_dir or RAW_DIR).resolve()
    splits = load_all(data_dir, max_rows=profile.max_rows)
    train = splits["train"]
    train["fold"] = make_folds(train, profile.n_folds, profile.fold_seed)
    out = {name: add_overlap_flags(df, train) for name, df in splits.items()}
    folder = RunPaths(profile.name).processed
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # tables being rewritten are never trusted
    for name, df in out.items():
        df.to_csv(folder / f"{name}.tsv", sep="\t", index=False)
    (folder / META).write_text(json.dumps({"data_dir": str(data_dir), "key": prepared_key(profile, data_dir)}))
    return out


META = "prepared.json"


def prepared_key(profile, data_dir) -> str:
    """Everything the prepared tables depend on: the raw files' bytes, the profile's row cap, fold
    count and fold seed, and the code that loads, validates and splits them."""
    import hashlib

    from . import data
    from .backbones import source_digest

    h = hashlib.sha256()
    for name in sorted(data.SPLIT_FILES.values()):
        f = Path(data_dir) / name
        h.update(f.read_bytes() if f.is_file() else b"missing")
    h.update(json.dumps([profile.max_rows, profile.n_folds, profile.fold_seed]).encode())
    h.update(source_digest(data, make_folds, add_overlap_flags, prepare).encode())
    return h.hexdigest()[:16]


def load_prepared(profile) -> dict[str, pd.DataFrame]:
    """The tables notebook 01 saved; prepared on the spot if 01 has not run for this profile."""
    from .config import RAW_DIR, RunPaths
    from .data import SPLIT_FILES

    folder = RunPaths(profile.name).processed
    meta = json.loads((folder / META).read_text()) if (folder / META).is_file() else {}
    data_dir = meta.get("data_dir")
    if data_dir and not Path(data_dir).is_dir():
        data_dir = None  # prepared elsewhere (another checkout): the vendored data
    if meta.get("key") != prepared_key(profile, data_dir or RAW_DIR) or not all(
        (folder / f"{s}.tsv").is_file() for s in SPLIT_FILES
    ):
        return prepare(profile, data_dir)  # missing or stale: the raw files, the profile's folds or the code changed
    return {s: pd.read_csv(folder / f"{s}.tsv", sep="\t", keep_default_na=False) for s in SPLIT_FILES}
