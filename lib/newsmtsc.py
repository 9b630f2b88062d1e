"""Load and validate NewsMTSC (English political news, Hamborg & Donnay, EACL 2021). Raw files are only read.

Each JSON line of a file is one sentence with one or more targets; the reader gives one row per target, in
the study's row format (`sentence`, `entity`, `start`, `end` with `sentence[start:end] == entity`, `label` in
{-1, 0, 1}), so `lib.training.encode_df`, `lib.metrics.sentence_groups` and `lib.folds` take the tables as
they take RuSentNE-23's. Every rule broken gives one `lib.data.DataError` naming the file, the 1-based line
and the rule. Command line: `python -m lib.newsmtsc [--raw-dir DIR]` validates the five files.
Where the files come from, their counts and checksums: data/raw/newsmtsc/SOURCE.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from .config import RAW_DIR as STUDY_RAW_DIR
from .data import DataError, validate_all

RAW_DIR = STUDY_RAW_DIR / "newsmtsc"
SPLITS = ("train", "dev_rw", "test_rw", "dev_mt", "test_mt")  # file <split>.jsonl; the paper reports test_*
POLARITY = {2.0: -1, 4.0: 0, 6.0: 1}  # NewsMTSC's polarity -> the study's label
ENTITY_TAG = "UNKNOWN"  # NewsMTSC has no entity types; one constant keeps entity_tag-aware code working
SENTENCE_FIELDS = {"primary_gid": str, "sentence_normalized": str, "targets": list}
TARGET_FIELDS = {"Input.gid": str, "from": int, "to": int, "mention": str, "polarity": (int, float)}
COLUMNS = [
    "split",
    "row",  # 0-based position of the target in its file (targets in file order), as lib.data's `row`
    "line",  # 1-based line of the file
    "primary_gid",
    "gid",  # the target's Input.gid (unique within NewsMTSC)
    "sentence_id",  # sha1 of the sentence text: same text -> same id, in every split
    "sentence",
    "entity",
    "entity_tag",
    "start",
    "end",
    "label",
    "n_targets",  # rows of this split with the same sentence
]


def sentence_id(sentence: str) -> str:
    """Stable id of a sentence text (the cluster of lib.metrics.sentence_groups, which groups by text)."""
    return hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:12]


def _type_ok(value, kind) -> bool:
    # bool is an int in Python; JSON true/false is never a valid offset or polarity
    return isinstance(value, kind) and not isinstance(value, bool)


def _fields(path: Path, n: int, obj: dict, spec: dict, where: str) -> None:
    for name, kind in spec.items():
        if name not in obj:
            raise DataError(f"{path}: line {n}: {where}missing field {name!r}")
        if not _type_ok(obj[name], kind):
            raise DataError(f"{path}: line {n}: {where}field {name!r} has type {type(obj[name]).__name__}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line; the file's final newline ends the last line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open("rb") as f:  # read-only
        raw = f.read()
    if not raw:
        raise DataError(f"{path}: file is empty")
    chunks = raw.split(b"\n")
    if chunks[-1] == b"":
        chunks.pop()
    out = []
    for n, chunk in enumerate(chunks, start=1):
        try:
            out.append((n, chunk.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {n}: not valid UTF-8 (byte {e.start})") from None
    return out


def _parse(path: Path, n: int, text: str) -> dict:
    if not text.strip():
        raise DataError(f"{path}: line {n}: empty line (each line must be one JSON object)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {n}: bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: line {n}: bad JSON (a {type(obj).__name__}, not an object)")
    return obj


def _targets(path: Path, n: int, obj: dict, seen: dict) -> list[dict]:
    """The line's targets, each checked: fields, offsets, mention, polarity, a gid new to the file."""
    _fields(path, n, obj, SENTENCE_FIELDS, "")
    sentence, targets = obj["sentence_normalized"], obj["targets"]
    if not sentence:
        raise DataError(f"{path}: line {n}: empty sentence_normalized")
    if not targets:
        raise DataError(f"{path}: line {n}: no targets")
    for i, t in enumerate(targets, start=1):
        where = f"target {i}: "
        if not isinstance(t, dict):
            raise DataError(f"{path}: line {n}: {where}not a JSON object")
        _fields(path, n, t, TARGET_FIELDS, where)
        a, b, gid = t["from"], t["to"], t["Input.gid"]
        if not 0 <= a < b <= len(sentence):
            raise DataError(
                f"{path}: line {n}: {where}offsets from={a} to={b} must satisfy "
                f"0 <= from < to <= len(sentence) = {len(sentence)}"
            )
        if sentence[a:b] != t["mention"]:
            raise DataError(
                f"{path}: line {n}: {where}sentence[from:to] = {sentence[a:b]!r} "
                f"does not equal mention {t['mention']!r}"
            )
        if t["polarity"] not in POLARITY:
            raise DataError(f"{path}: line {n}: {where}polarity {t['polarity']!r} not in {sorted(POLARITY)}")
        if gid in seen:
            raise DataError(f"{path}: line {n}: {where}duplicate Input.gid {gid!r} (first on line {seen[gid]})")
        seen[gid] = n
    return targets


def read_file(path: str | Path, split: str | None = None) -> pd.DataFrame:
    """One NewsMTSC JSON-lines file, every rule checked, as one row per target (columns: COLUMNS)."""
    path = Path(path)
    rows, seen = [], {}
    for n, text in _lines(path):
        obj = _parse(path, n, text)
        sentence = obj.get("sentence_normalized")
        for t in _targets(path, n, obj, seen):
            rows.append(
                {
                    "split": split or path.stem,
                    "row": len(rows),
                    "line": n,
                    "primary_gid": obj["primary_gid"],
                    "gid": t["Input.gid"],
                    "sentence_id": sentence_id(sentence),
                    "sentence": sentence,
                    "entity": t["mention"],
                    "entity_tag": ENTITY_TAG,
                    "start": t["from"],
                    "end": t["to"],
                    "label": POLARITY[t["polarity"]],
                }
            )
    df = pd.DataFrame(rows, columns=COLUMNS[:-1])
    df = df.astype({"row": "int64", "line": "int64", "start": "int64", "end": "int64", "label": "int64"})
    df["n_targets"] = df.groupby("sentence")["sentence"].transform("size").astype("int64")
    return df


def read_split(name: str, raw_dir: str | Path = RAW_DIR) -> pd.DataFrame:
    """One split (`SPLITS`) of `raw_dir`, read from `<name>.jsonl`."""
    if name not in SPLITS:
        raise ValueError(f"unknown NewsMTSC split {name!r}; choose one of {list(SPLITS)}")
    return read_file(Path(raw_dir) / f"{name}.jsonl", split=name)


def load_all(raw_dir: str | Path = RAW_DIR) -> dict[str, pd.DataFrame]:
    return {name: read_split(name, raw_dir) for name in SPLITS}


def sentences(raw_dir: str | Path = RAW_DIR) -> list[str]:
    """Every distinct sentence of the five files, first occurrence first (files in SPLITS order): the corpus
    a trimmed backbone vocabulary must cover."""
    out: dict[str, None] = {}
    for df in load_all(raw_dir).values():
        out.update(dict.fromkeys(df["sentence"]))
    return list(out)


# a fold run's roles (lib.training predicts "validation" and "final"): the paper's test parts. The dev parts are
# not used: model selection is on an inner split of train, as everywhere in this study
ROLES = {"train": "train", "validation": "test_rw", "final": "test_mt"}
_PREPARED: dict = {}


def prepared(profile, raw_dir: str | Path = RAW_DIR) -> dict[str, pd.DataFrame]:
    """NewsMTSC in the layout of a fold run (`ROLES`): train with sentence-grouped stratified folds (the profile's
    count and seed), overlap flags on every part, each part capped at `profile.max_rows` (smoke). Built in memory
    (a fraction of a second) and kept per process; fold runs key it by content like any data."""
    from .folds import prepare_tables

    key = (str(Path(raw_dir).resolve()), profile.max_rows, profile.n_folds, profile.fold_seed)
    if key not in _PREPARED:
        parts = {role: read_split(name, raw_dir) for role, name in ROLES.items()}
        if profile.max_rows:
            parts = {role: df.head(profile.max_rows).reset_index(drop=True) for role, df in parts.items()}
        _PREPARED[key] = prepare_tables(parts, profile.n_folds, profile.fold_seed)
    return _PREPARED[key]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lib.newsmtsc", description="Validate the NewsMTSC files.")
    ap.add_argument("--raw-dir", default=str(RAW_DIR))
    args = ap.parse_args(argv)

    def summary(name: str) -> str:
        df = read_split(name, args.raw_dir)
        counts = df["label"].value_counts().reindex([-1, 0, 1], fill_value=0).to_dict()
        return f"{df['line'].nunique()} lines, {len(df)} targets, labels {counts}"

    return validate_all((name, lambda name=name: summary(name)) for name in SPLITS)


if __name__ == "__main__":
    sys.exit(main())
