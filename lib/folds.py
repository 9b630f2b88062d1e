"""Sentence-grouped stratified folds and the seen/unseen subsets every evaluation is split by."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from . import cache

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


def prepare_tables(splits: dict[str, pd.DataFrame], n_folds: int, fold_seed: int) -> dict[str, pd.DataFrame]:
    """`fold` on train, overlap flags on every split."""
    train = splits["train"].copy()
    train["fold"] = make_folds(train, n_folds, fold_seed)
    return {name: add_overlap_flags(train if name == "train" else df, train) for name, df in splits.items()}


def prepared_key(profile, data_dir) -> str:
    """Everything the prepared tables depend on: the raw files' bytes, the profile's row cap, fold
    count and fold seed, and the code that loads, validates and splits them."""
    import hashlib

    from . import data

    raw = hashlib.sha256()
    for name in sorted(data.SPLIT_FILES.values()):
        f = Path(data_dir) / name
        raw.update(f.read_bytes() if f.is_file() else b"missing")
    code = cache.code_digest("lib.data", make_folds, add_overlap_flags, prepare_tables)
    return cache.key(raw.hexdigest(), profile.max_rows, profile.n_folds, profile.fold_seed, code)


def prepared_dir(profile, data_dir=None) -> Path:
    """data/processed/<profile>/<key>/: another copy of the data gets its own tables."""
    from .config import RAW_DIR, RunPaths

    return RunPaths(profile.name).processed / prepared_key(profile, Path(data_dir or RAW_DIR))


class Tables(dict):
    """split -> prepared table, remembering the directory they were prepared from and their cache folder."""

    def __init__(self, tables: dict, folder: Path, data_dir: Path):
        super().__init__(tables)
        self.folder, self.data_dir = folder, data_dir


def load_prepared(profile, data_dir=None) -> Tables:
    """The profile's rows of `data_dir` (default data/raw) with folds and overlap flags, prepared on first use
    (validating every file: a DataError names file, row and rule) and read from the cache after."""
    from .config import RAW_DIR
    from .data import SPLIT_FILES, load_all

    data_dir = Path(data_dir or RAW_DIR).resolve()
    folder = prepared_dir(profile, data_dir)
    k = folder.name
    if not cache.is_complete(folder, k):
        tables = prepare_tables(load_all(data_dir, max_rows=profile.max_rows), profile.n_folds, profile.fold_seed)
        with cache.building(folder) as tmp:
            for name, df in tables.items():
                df.to_csv(tmp / f"{name}.tsv", sep="\t", index=False)
            cache.write_meta(tmp, k, data_dir=str(data_dir))
    tables = {s: pd.read_csv(folder / f"{s}.tsv", sep="\t", keep_default_na=False) for s in SPLIT_FILES}
    return Tables(tables, folder, data_dir)
