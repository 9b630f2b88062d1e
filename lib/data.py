"""Load and validate RuSentNE-23 files. Raw files are only ever read.

Every rule broken gives one `DataError` naming the file, the 1-based data rows (first few) and the
rule, so a bad copy of the data fails with one readable line instead of a traceback deep in a model.
Command line: `python -m lib.data FILE [FILE ...]` validates files and exits 1 on the first error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from .config import LABELS, RAW_DIR

TEXT_COLUMNS = ["sentence", "entity", "entity_tag", "entity_pos_start_rel", "entity_pos_end_rel"]
SPLIT_FILES = {
    "train": "train_data.csv",
    "validation": "validation_data_labeled.csv",
    "final": "final_data.csv",  # unlabeled: the test labels were never published
}
MAX_SHOWN = 5


class DataError(ValueError):
    """A data file breaks a rule. The message names file, rows and rule."""


def _rows(mask: pd.Series) -> str:
    # data row i (0-based) is row i+1 of the data and line i+2 of the file (after the header)
    idx = [int(i) + 1 for i in mask[mask].index[:MAX_SHOWN]]
    more = int(mask.sum()) - len(idx)
    shown = ", ".join(map(str, idx)) + (f" (+{more} more)" if more > 0 else "")
    return f"row{'s' if len(idx) > 1 else ''} {shown}"


def _fail(path: Path, rows: str, rule: str) -> None:
    raise DataError(f"{path}: {rows}: {rule}")


def read_split_file(path: str | Path, labeled: bool = True) -> pd.DataFrame:
    """Read one tab-separated RuSentNE file and check every rule; returns typed columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable tab-separated file ({str(e).splitlines()[0]})") from None
    if len(df) == 0:
        raise DataError(f"{path}: file has a header but no data rows")
    required = TEXT_COLUMNS + (["label"] if labeled else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: header: missing column(s) {missing}; found {list(df.columns)}")

    for col in ("sentence", "entity"):
        _check(path, df[col].str.len() == 0, f"empty {col}")
    start = pd.to_numeric(df["entity_pos_start_rel"], errors="coerce")
    end = pd.to_numeric(df["entity_pos_end_rel"], errors="coerce")
    not_int = start.isna() | end.isna() | (start % 1 != 0) | (end % 1 != 0)
    _check(path, not_int, "entity offsets must be integers")
    start, end = start.astype(int), end.astype(int)
    n = df["sentence"].str.len()
    _check(path, ~((start >= 0) & (start < end) & (end <= n)), "offsets must satisfy 0 <= start < end <= len(sentence)")
    span = pd.Series([s[a:b] for s, a, b in zip(df["sentence"], start, end)], index=df.index)
    _check(path, span != df["entity"], "sentence[start:end] does not equal entity")

    out = df[TEXT_COLUMNS].copy()
    out["start"], out["end"] = start, end
    out = out.drop(columns=["entity_pos_start_rel", "entity_pos_end_rel"])
    if labeled:
        label = pd.to_numeric(df["label"], errors="coerce")
        _check(path, ~label.isin(LABELS), f"label must be one of {list(LABELS)}")
        out["label"] = label.astype(int)
    return out


def _check(path: Path, bad: pd.Series, rule: str) -> None:
    if bad.any():
        _fail(path, _rows(bad), rule)


def load_split(split: str, data_dir: str | Path = RAW_DIR, max_rows: int | None = None) -> pd.DataFrame:
    """One split as a DataFrame with `row` (position in the file) kept for submissions."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLIT_FILES)}")
    df = read_split_file(Path(data_dir) / SPLIT_FILES[split], labeled=split != "final")
    df.insert(0, "row", range(len(df)))
    if max_rows is not None and len(df) > max_rows:
        df = _take_sentences(df, max_rows)
    return df.reset_index(drop=True)


def _take_sentences(df: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    # keep whole sentences so a subset never splits a sentence's rows; first-come order is seeded by the file
    order = df.drop_duplicates("sentence")["sentence"]
    sizes = df.groupby("sentence").size()
    keep = order[(sizes.loc[order].cumsum() <= max_rows).to_numpy()]
    return df[df["sentence"].isin(set(keep))]


def load_all(data_dir: str | Path = RAW_DIR, max_rows: int | None = None) -> dict[str, pd.DataFrame]:
    return {split: load_split(split, data_dir, max_rows) for split in SPLIT_FILES}


def validate_all(checks) -> int:
    """Run each (name, check) pair, printing "ok  name: <what check returns>"; at the first bad file, one line
    naming file, row and rule on stderr and exit status 1 (the command lines of lib.data and lib.newsmtsc)."""
    try:
        for name, check in checks:
            print(f"ok  {name}: {check()}")
    except DataError as e:
        print(f"DataError: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lib.data", description="Validate RuSentNE-23 files.")
    ap.add_argument("files", nargs="*", help="files to check (default: the three splits in --data-dir)")
    ap.add_argument("--data-dir", default=str(RAW_DIR))
    args = ap.parse_args(argv)
    paths = args.files or [str(Path(args.data_dir) / f) for f in SPLIT_FILES.values()]
    return validate_all(
        (p, lambda p=p: f"{len(read_split_file(p, labeled=Path(p).name != SPLIT_FILES['final']))} rows") for p in paths
    )


if __name__ == "__main__":
    sys.exit(main())
