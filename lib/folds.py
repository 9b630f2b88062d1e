"""Sentence-grouped stratified folds and the seen/unseen subsets every evaluation is split by."""
from __future__ import annotations

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
    if subset == "all":
        return np.ones(len(df), dtype=bool)
    seen = df["sentence_seen_in_train"].to_numpy(bool)
    if subset == "seen":
        return seen
    if subset == "unseen":
        return ~seen
    raise ValueError(f"unknown subset {subset!r}; choose one of {SUBSETS}")


def prepare(profile, data_dir=None) -> dict[str, pd.DataFrame]:
    """Load the profile's rows, add `fold` to train and overlap flags to every split; save them.

    The tables land in data/processed/<profile>/ (tab-separated); later chapters read them with
    `load_prepared`, so every notebook sees the same rows and folds.
    """
    from .config import RAW_DIR, RunPaths
    from .data import load_all

    splits = load_all(data_dir or RAW_DIR, max_rows=profile.max_rows)
    train = splits["train"]
    train["fold"] = make_folds(train, profile.n_folds, profile.fold_seed)
    out = {name: add_overlap_flags(df, train) for name, df in splits.items()}
    folder = RunPaths(profile.name).processed
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in out.items():
        df.to_csv(folder / f"{name}.tsv", sep="\t", index=False)
    return out


def load_prepared(profile) -> dict[str, pd.DataFrame]:
    """The tables notebook 01 saved; prepared on the spot if 01 has not run for this profile."""
    from .config import RunPaths
    from .data import SPLIT_FILES

    folder = RunPaths(profile.name).processed
    if not all((folder / f"{s}.tsv").is_file() for s in SPLIT_FILES):
        return prepare(profile)
    return {s: pd.read_csv(folder / f"{s}.tsv", sep="\t", keep_default_na=False) for s in SPLIT_FILES}
