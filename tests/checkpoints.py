"""Tiny random local checkpoints of three tokenizer families, built and saved like hub models.

WordPiece (BERT, [MASK]), SentencePiece unigram (XLM-RoBERTa, <mask>), SentencePiece with
[CLS]/[SEP]/[MASK] (RemBERT). Tokenizers are trained here on a few hundred training sentences.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import processors
from transformers import (
    RemBertConfig,
    RemBertModel,
    RemBertTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

from lib.backbones import build_tiny_random

FAMILIES = ("bert", "xlm-roberta", "rembert")


def _spm_pieces(sentences, **specials) -> list[tuple[str, float]]:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=600,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        **specials,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def build(family: str, sentences: list[str], out: Path) -> Path:
    torch.manual_seed(0)
    small = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256
    )
    if family == "bert":
        build_tiny_random(sentences, out, vocab_size=600)
        return out
    if family == "xlm-roberta":
        pieces = _spm_pieces(sentences, bos_id=0, pad_id=1, eos_id=2, unk_id=3) + [("<mask>", 0.0)]
        tok = XLMRobertaTokenizer(vocab=pieces)
        model = XLMRobertaModel(XLMRobertaConfig(vocab_size=len(pieces), pad_token_id=1, **small))
    elif family == "rembert":
        pieces = _spm_pieces(
            sentences, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"]
        )
        tok = RemBertTokenizer(vocab=pieces)
        # as in the hub's RemBERT tokenizer.json: [CLS] A [SEP]
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[
                ("[CLS]", tok.convert_tokens_to_ids("[CLS]")),
                ("[SEP]", tok.convert_tokens_to_ids("[SEP]")),
            ],
        )
        model = RemBertModel(
            RemBertConfig(
                vocab_size=len(pieces), input_embedding_size=16, output_embedding_size=16, pad_token_id=0, **small
            )
        )
    else:
        raise ValueError(family)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
