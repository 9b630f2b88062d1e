import hashlib
import subprocess
import sys

import pytest

from lib.config import RAW_DIR, ROOT
from lib.data import DataError, load_all, load_split, read_split_file

from .conftest import read_raw, write_raw

TRAIN = "train_data.csv"


def test_real_files_load_with_their_documented_sizes():
    data = load_all()
    assert {k: len(v) for k, v in data.items()} == {"train": 6637, "validation": 2845, "final": 1947}
    assert "label" not in data["final"]
    assert data["train"]["label"].value_counts().to_dict() == {0: 4774, -1: 1007, 1: 856}
    for df in data.values():
        assert all(s[a:b] == e for s, e, a, b in zip(df["sentence"], df["entity"], df["start"], df["end"]))


def _broken(raw_copy, row: int, **changes):
    df = read_raw(raw_copy / TRAIN)
    for col, value in changes.items():
        df.loc[row - 1, col] = value
    return write_raw(df, raw_copy / TRAIN)


@pytest.mark.parametrize(
    "changes, rule",
    [
        ({"label": "2"}, "label must be one of"),
        ({"label": "positive"}, "label must be one of"),
        ({"entity_pos_start_rel": "x"}, "offsets must be integers"),
        ({"entity_pos_start_rel": "1.5"}, "offsets must be integers"),
        ({"entity_pos_start_rel": "-1"}, "0 <= start < end <= len(sentence)"),
        ({"entity_pos_end_rel": "0"}, "0 <= start < end <= len(sentence)"),
        ({"entity_pos_end_rel": "100000"}, "0 <= start < end <= len(sentence)"),
        ({"entity": "Несуществующая сущность"}, "sentence[start:end] does not equal entity"),
        ({"entity": ""}, "empty entity"),
    ],
)
def test_each_rule_names_file_row_and_rule(raw_copy, changes, rule):
    path = _broken(raw_copy, 7, **changes)
    with pytest.raises(DataError) as e:
        read_split_file(path)
    msg = str(e.value)
    assert str(path) in msg and "row 7" in msg and rule in msg
    assert "\n" not in msg


def test_first_few_rows_are_listed(raw_copy):
    df = read_raw(raw_copy / TRAIN)
    df.loc[[2, 4, 9], "label"] = "7"
    with pytest.raises(DataError, match=r"rows 3, 5, 10: label"):
        read_split_file(write_raw(df, raw_copy / TRAIN))


def test_missing_column(raw_copy):
    write_raw(read_raw(raw_copy / TRAIN).drop(columns="entity_tag"), raw_copy / TRAIN)
    with pytest.raises(DataError, match=r"train_data.csv: header: missing column\(s\) \['entity_tag'\]"):
        read_split_file(raw_copy / TRAIN)


def test_final_split_needs_no_label_but_train_does(raw_copy):
    assert "label" not in load_split("final", raw_copy)
    write_raw(read_raw(raw_copy / TRAIN).drop(columns="label"), raw_copy / TRAIN)
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        load_split("train", raw_copy)


def test_empty_missing_and_header_only_files(raw_copy):
    (raw_copy / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        read_split_file(raw_copy / "empty.csv")
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_split_file(raw_copy / "nope.csv")
    (raw_copy / "header.csv").write_text(
        "sentence\tentity\tentity_tag\tentity_pos_start_rel\tentity_pos_end_rel\tlabel\n"
    )
    with pytest.raises(DataError, match="header.csv: file has a header but no data rows"):
        read_split_file(raw_copy / "header.csv")


def test_cli_prints_one_error_line_and_exits_nonzero(raw_copy):
    _broken(raw_copy, 3, entity="Не та сущность")
    r = subprocess.run(
        [sys.executable, "-m", "lib.data", "--data-dir", str(raw_copy)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "train_data.csv: row 3: sentence[start:end] does not equal entity" in err[0]
    assert "Traceback" not in r.stderr


def test_smoke_subset_keeps_whole_sentences():
    full = load_split("train")
    sub = load_split("train", max_rows=200)
    assert 0 < len(sub) <= 200
    for s, n in sub.groupby("sentence").size().items():
        assert n == (full["sentence"] == s).sum()


def test_loading_never_writes_raw_data():
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in RAW_DIR.rglob("*") if p.is_file()}
    load_all()
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in RAW_DIR.rglob("*") if p.is_file()}
