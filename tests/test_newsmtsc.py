import hashlib
import json
import re
import time

import pytest

from lib import newsmtsc
from lib.data import DataError
from lib.metrics import sentence_groups

SOURCE = newsmtsc.RAW_DIR / "SOURCE.md"


def _documented() -> tuple[dict, dict]:
    """SOURCE.md's counts table (file -> lines, targets, -1, 0, 1) and sha256 list (file -> hash)."""
    text = SOURCE.read_text(encoding="utf-8")
    counts = {
        m[1]: tuple(int(x) for x in m.groups()[1:])
        for m in re.finditer(r"^\| `(\w+)\.jsonl` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M)
    }
    hashes = {m[2]: m[1] for m in re.finditer(r"^([0-9a-f]{64})  (\w+)\.jsonl$", text, re.M)}
    return counts, hashes


def _sha256s() -> dict:
    return {s: hashlib.sha256((newsmtsc.RAW_DIR / f"{s}.jsonl").read_bytes()).hexdigest() for s in newsmtsc.SPLITS}


@pytest.fixture(scope="module")
def data():
    before = _sha256s()
    tables, sents = newsmtsc.load_all(), newsmtsc.sentences()
    return tables, sents, before


def test_source_documents_every_split():
    counts, hashes = _documented()
    assert set(counts) == set(hashes) == set(newsmtsc.SPLITS)


def test_real_files_match_source_hashes_and_are_unchanged_by_loading(data):
    _, _, before = data
    assert before == _documented()[1]
    assert _sha256s() == before


def test_real_files_load_with_the_documented_counts(data):
    tables, _, _ = data
    counts, _ = _documented()
    assert list(tables) == list(newsmtsc.SPLITS)
    for name, df in tables.items():
        labels = df["label"].value_counts().reindex([-1, 0, 1], fill_value=0).tolist()
        assert (df["line"].nunique(), len(df), *labels) == counts[name], name


def test_rows_have_the_study_columns_and_round_trip(data):
    tables, _, _ = data
    for name, df in tables.items():
        assert list(df.columns) == newsmtsc.COLUMNS
        assert (df["split"] == name).all() and df["row"].tolist() == list(range(len(df)))
        assert all(s[a:b] == e for s, e, a, b in zip(df["sentence"], df["entity"], df["start"], df["end"]))
        assert set(df["label"]) == {-1, 0, 1} and (df["entity_tag"] == newsmtsc.ENTITY_TAG).all()
        assert df["gid"].is_unique
        # sentence_id partitions rows exactly as the bootstrap's clusters (sentence text) do
        assert (sentence_groups(df) == sentence_groups(df.assign(sentence=df["sentence_id"]))).all()
        assert (df["n_targets"] == df.groupby("sentence")["entity"].transform("size")).all()
    assert (tables["dev_mt"]["n_targets"] >= 2).all() and (tables["test_mt"]["n_targets"] >= 2).all()


def test_sentences_are_distinct_in_file_order_and_cover_every_row(data):
    tables, sents, _ = data
    assert len(sents) == len(set(sents)) == 9519
    assert sents[0] == tables["train"]["sentence"].iloc[0]
    covered = set(sents)
    assert all(set(df["sentence"]) <= covered for df in tables.values())


# --- validation: bad copies in tmp_path, one line naming file, line and rule ---------------------------------


def _bad_copy(tmp_path, line: int, edit) -> object:
    """train.jsonl in tmp_path: the real file's first 6 lines, line `line` replaced by edit(obj) (a dict, or a
    str written as is)."""
    lines = (newsmtsc.RAW_DIR / "train.jsonl").read_bytes().decode("utf-8").split("\n")[:6]
    new = edit(json.loads(lines[line - 1]))
    lines[line - 1] = new if isinstance(new, str) else json.dumps(new, ensure_ascii=False)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _target(**changes):
    def edit(obj):
        obj["targets"][0].update(changes)
        return obj

    return edit


def _drop(field, in_target=True):
    def edit(obj):
        del (obj["targets"][0] if in_target else obj)[field]
        return obj

    return edit


def _dup_gid(obj):
    obj["targets"][0]["Input.gid"] = "allsides_1000_401_25_Reality Leigh Winner_0_6"  # line 1's target
    return obj


RULES = [
    (lambda obj: json.dumps(obj)[:-1], "bad JSON"),
    (lambda obj: "[1, 2]", "bad JSON"),
    (lambda obj: "", "empty line"),
    (_drop("polarity"), "missing field 'polarity'"),
    (_drop("from"), "missing field 'from'"),
    (_drop("sentence_normalized", in_target=False), "missing field 'sentence_normalized'"),
    (_target(**{"from": "0"}), "field 'from' has type str"),
    (_target(**{"to": 10_000}), "0 <= from < to <= len(sentence)"),
    (_target(**{"from": -1}), "0 <= from < to <= len(sentence)"),
    (_target(**{"from": 3, "to": 3, "mention": ""}), "0 <= from < to <= len(sentence)"),
    (_target(mention="Someone else"), "sentence[from:to] = "),
    (_target(polarity=5.0), "polarity 5.0 not in [2.0, 4.0, 6.0]"),
    (_target(polarity=True), "field 'polarity' has type bool"),
    (_dup_gid, "duplicate Input.gid"),
]


@pytest.mark.parametrize("edit, rule", RULES, ids=[rule.split(" (")[0] for _, rule in RULES])
def test_each_rule_names_file_line_and_rule(tmp_path, edit, rule):
    path = _bad_copy(tmp_path, 3, edit)
    with pytest.raises(DataError) as e:
        newsmtsc.read_split("train", tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: line 3: ") and rule in msg, msg
    assert "\n" not in msg


def test_duplicate_gid_names_its_first_line(tmp_path):
    with pytest.raises(DataError, match=r"line 3: target 1: duplicate Input.gid .* \(first on line 1\)"):
        newsmtsc.read_split("train", _bad_copy(tmp_path, 3, _dup_gid).parent)


def test_an_unedited_copy_loads_and_missing_or_empty_files_fail(tmp_path):
    df = newsmtsc.read_split("train", _bad_copy(tmp_path, 1, lambda obj: obj).parent)
    assert df["line"].max() == 6 and df["label"].isin([-1, 0, 1]).all()
    with pytest.raises(DataError, match="dev_rw.jsonl: file not found"):
        newsmtsc.read_split("dev_rw", tmp_path)
    (tmp_path / "dev_rw.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match="dev_rw.jsonl: file is empty"):
        newsmtsc.read_split("dev_rw", tmp_path)
    with pytest.raises(ValueError, match="unknown NewsMTSC split"):
        newsmtsc.read_split("devtest_rw", tmp_path)


def test_command_line_reports_one_line_and_fails(tmp_path, capsys):
    _bad_copy(tmp_path, 2, _target(polarity=3.0))
    assert newsmtsc.main(["--raw-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("DataError: ") and "line 2" in err and "\n" not in err


# --- the trimmed e5-small vocabulary covers English ----------------------------------------------------------


@pytest.fixture(scope="module")
def e5_tokenizers(tmp_path_factory):
    """The trimmed and the full e5-small built from the corpus the study builds on (lib.plan.sentences over
    every RuSentNE-23 split) plus every NewsMTSC sentence; ~17 s of builds, ~25 s in all on 2 cores. (A trim
    from the RuSentNE sentences alone keeps Latin single characters only: every English sentence then splits
    into other, about twice as many, pieces.)"""
    from transformers import AutoTokenizer

    from lib import backbones, plan
    from lib.data import load_all

    russian = plan.sentences("e5-small", load_all())
    english = newsmtsc.sentences()
    out = tmp_path_factory.mktemp("e5")
    t0 = time.perf_counter()
    stats = backbones.build_e5_small(russian + english, out / "trim", trim=True)
    backbones.build_e5_small_full(russian + english, out / "full")
    print(f"e5-small builds (trimmed + full): {time.perf_counter() - t0:.1f} s")
    trim, full = (AutoTokenizer.from_pretrained(out / d) for d in ("trim", "full"))
    return trim, full, stats, russian, english


def _pieces(tok, sentences) -> list[list[str]]:
    return [e.tokens for e in tok.backend_tokenizer.encode_batch(sentences, add_special_tokens=False)]


def test_trimmed_e5_tokenises_english_and_russian_as_the_full_one(e5_tokenizers):
    trim, full, stats, russian, english = e5_tokenizers
    assert stats["unk_in_corpus"] == 0 and stats["vocab_trimmed"] < stats["pieces_full"] // 5
    for corpus in (english, russian):
        got, want = _pieces(trim, corpus), _pieces(full, corpus)
        bad = [s for s, a, b in zip(corpus, got, want) if a != b]
        assert not bad, f"{len(bad)} sentences differ, first: {bad[0][:120]!r}"
        assert not any("<unk>" in p for p in got)
    # the study's own call path gives the same pieces as the backend
    assert trim.tokenize(english[0]) == full.tokenize(english[0]) == _pieces(full, english[:1])[0]
