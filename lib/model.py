"""The HAlf-MAsked Model (HAMAM; Kabaev, Podberezko, Kaznacheev, Abdullayeva, Dialogue 2023,
arXiv 2308.15793) over any transformers encoder.

sentence + entity span -> encoder -> concat(mean, max) over the entity's tokens -> Linear -> Tanh
-> multi-sample dropout (K masks, logits averaged) -> Linear -> 3 logits.
`hamam` mode runs every example twice in one forward pass of 2B rows, as is and with the entity's
tokens replaced by `tokenizer.mask_token`, and averages the two logit vectors.
"""

from __future__ import annotations

import dataclasses
import json
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from . import losses
from .config import LABEL2ID, LABELS, TrainConfig  # noqa: F401  (LABEL2ID re-exported: defined in config)

hf_logging.disable_progress_bar()  # per-checkpoint "Loading weights" bars drown the notebooks' own progress

HEAD_FILE, CONFIG_FILE = "hamam_head.safetensors", "hamam_config.json"


# --- inputs -------------------------------------------------------------------------------------


def entity_token_mask(offsets, special, start: int, end: int) -> list[int]:
    """1 for every non-special token whose character span overlaps [start, end), else 0.

    Offsets come from the fast tokenizer, so a word that occurs twice in the sentence is marked
    only where the span says, never by string search.
    """
    return [int(not sp and a < end and b > start) for (a, b), sp in zip(offsets, special)]


def mention_spans(sentence: str, start: int, end: int) -> list[tuple[int, int]]:
    """Every whole-word occurrence of sentence[start:end] in the sentence, the labelled span included."""
    pattern = r"(?<!\w)" + re.escape(sentence[start:end]) + r"(?!\w)"
    return sorted({(m.start(), m.end()) for m in re.finditer(pattern, sentence)} | {(start, end)})


def encode(
    tokenizer, sentences, starts, ends, max_length: int = 128, entities=None, mask_mentions: bool = False
) -> list[dict]:
    """Token ids and entity masks per example; long sentences keep a window around the entity.

    With `entities` given, each example is a pair (sentence, entity text): the entity mask stays
    on the sentence segment (used by the CLS-pooled baseline). With `mask_mentions` each example
    also gets a `mention_mask` (tokens of every mention of the entity string), which the masked
    copy hides instead of the labelled span alone; pooling still reads the labelled span.
    """
    sentences = list(sentences)
    args = (sentences, list(entities)) if entities is not None else (sentences,)
    enc = tokenizer(*args, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=False)
    out = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        special = enc["special_tokens_mask"][i]
        if entities is not None:  # only tokens of the first segment can be the entity
            seq = enc.sequence_ids(i)
            special = [int(sp or sid != 0) for sp, sid in zip(special, seq)]
        ex = {
            "input_ids": enc["input_ids"][i],
            "entity_mask": entity_token_mask(enc["offset_mapping"][i], special, int(s), int(e)),
        }
        if mask_mentions:
            spans = [
                entity_token_mask(enc["offset_mapping"][i], special, a, b)
                for a, b in mention_spans(sentences[i], int(s), int(e))
            ]
            ex["mention_mask"] = [int(any(col)) for col in zip(*spans)]
        if "token_type_ids" in enc:  # BERT-style pairs need their segment ids
            ex["token_type_ids"] = enc["token_type_ids"][i]
        if not any(ex["entity_mask"]):
            raise ValueError(f"example {i}: no token covers the entity span [{s}, {e}) of {sentences[i]!r}")
        if len(ex["input_ids"]) > max_length:
            keep = window(ex["entity_mask"], special, max_length)
            ex = {k: [v[j] for j in keep] for k, v in ex.items()}
        out.append(ex)
    return out


def window(mask, special, max_length) -> list[int]:
    """Positions to keep: leading/trailing special tokens and a body window centred on the entity."""
    body = [i for i, sp in enumerate(special) if not sp]
    lead, tail = list(range(body[0])), list(range(body[-1] + 1, len(mask)))
    width = max_length - len(lead) - len(tail)
    ent = [j for j, i in enumerate(body) if mask[i]]
    lo = max(0, min(ent[0] - (width - (ent[-1] - ent[0] + 1)) // 2, len(body) - width))
    return lead + body[lo : lo + width] + tail


def mask_entity(input_ids: torch.Tensor, entity_mask: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """The half-masked copy: entity tokens -> mask token, same length, everything else untouched."""
    return input_ids.masked_fill(entity_mask.bool(), mask_token_id)


# --- model --------------------------------------------------------------------------------------


def pool_entity(hidden: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """concat(mean, max) of the hidden states over the entity's tokens: (B, T, H) -> (B, 2H)."""
    m = entity_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    mx = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
    return torch.cat([mean, mx], dim=-1)


class MultiSampleDropoutHead(nn.Module):
    """Linear -> Tanh -> K dropout masks over the same vector -> shared Linear; logits averaged.

    K=1 is plain dropout. At eval time dropout is the identity, so one pass suffices.
    """

    def __init__(self, in_dim: int, hidden: int, k: int = 5, rate: float = 0.3, n_labels: int = len(LABELS)):
        super().__init__()
        self.dense, self.dropout, self.out, self.k = (
            nn.Linear(in_dim, hidden),
            nn.Dropout(rate),
            nn.Linear(hidden, n_labels),
            k,
        )

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.dense(rep))
        if not self.training:
            return self.out(h)
        return torch.stack([self.out(self.dropout(h)) for _ in range(self.k)]).mean(0)


class _Replay(nn.Module):
    """Stands in for the embeddings: hands the encoder the cached output of its frozen lower layers."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, **_):
        return self.hidden


@contextmanager
def _swapped(encoder: nn.Module, embeddings: nn.Module, layers: nn.ModuleList):
    """Run `encoder` with other embeddings and layers; the encoder's own forward still builds the attention mask."""
    old = encoder.embeddings, encoder.encoder.layer
    encoder.embeddings, encoder.encoder.layer = embeddings, layers
    try:
        yield
    finally:
        encoder.embeddings, encoder.encoder.layer = old


def prefix_cacheable(encoder: nn.Module) -> bool:
    """BERT-style layout: embeddings, then encoder.layer and nothing else with weights in between (RemBERT's
    embedding projection sits inside its encoder, so its lower-layer outputs cannot be replayed this way)."""
    inner = getattr(encoder, "encoder", None)
    if not hasattr(encoder, "embeddings") or not isinstance(getattr(inner, "layer", None), nn.ModuleList):
        return False
    return all(name == "layer" for name, _ in inner.named_children())


class HamamModel(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: TrainConfig, mask_token_id: int):
        super().__init__()
        self.encoder, self.cfg, self.mask_token_id = encoder, cfg, mask_token_id
        # distinct input row -> output of the frozen embeddings + lowest `freeze_layers` layers (cache_frozen)
        self.prefix_cache: dict[bytes, torch.Tensor] | None = None
        h = encoder.config.hidden_size
        in_dim = 2 * h if cfg.pooling == "entity" else h
        self.head = MultiSampleDropoutHead(in_dim, h, cfg.msd_k, cfg.msd_rate, losses.head_outputs(cfg.loss))
        if cfg.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)
        if cfg.freeze_layers:
            freeze_lower(encoder, cfg.freeze_layers)
        if cfg.gradient_checkpointing:  # recompute layer activations in backward: less memory, ~1/3 more compute
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            if (
                cfg.freeze_layers or cfg.freeze_embeddings
            ):  # else it turns on input gradients: backward through frozen layers
                encoder.disable_input_require_grads()

    def frozen_modules(self) -> list[nn.Module]:
        return frozen_part(self.encoder, self.cfg.freeze_layers) if self.cfg.freeze_layers else []

    def train(self, mode: bool = True):
        """Frozen lower layers stay in eval mode (no dropout): a fixed feature extractor, whose output
        for an input is the same at every step, so `cache_frozen` may compute it once."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def cache_frozen(self, on: bool = True) -> bool:
        """Compute the frozen layers' output once per distinct input row and replay it at later steps
        (training and evaluation alike: the frozen part is in eval mode in both). Returns whether it is on:
        only with `freeze_layers` and a BERT-style encoder. Off clears the cache."""
        on = on and bool(self.cfg.freeze_layers) and prefix_cacheable(self.encoder)
        self.prefix_cache = {} if on else None
        return on

    def forward(
        self,
        input_ids,
        attention_mask,
        entity_mask,
        mode: str | None = None,
        output_attentions=False,
        token_type_ids=None,
        mention_mask=None,
        raw: bool = False,
    ):
        """(B, 3) logits in LABELS order; `raw`: the head's own outputs, what the training loss reads (they differ
        only for loss="two_head", whose two sigmoid outputs become 3-class log-probabilities)."""
        mode = mode or self.cfg.mode
        b = input_ids.shape[0]
        hide = entity_mask if mention_mask is None else mention_mask  # what the masked copy replaces
        if mode == "masked":
            input_ids = mask_entity(input_ids, hide, self.mask_token_id)
        elif mode == "hamam":  # both copies in one forward pass of 2B rows
            input_ids = torch.cat([input_ids, mask_entity(input_ids, hide, self.mask_token_id)])
            attention_mask, entity_mask = attention_mask.repeat(2, 1), entity_mask.repeat(2, 1)
            token_type_ids = None if token_type_ids is None else token_type_ids.repeat(2, 1)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self.cfg.group_sentences and not output_attentions:
            # entities of one sentence give identical unmasked rows: encode each distinct row once
            rows = torch.cat([input_ids, attention_mask] + list(extra.values()), dim=1)
            uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
            if len(uniq) < len(rows):
                t = input_ids.shape[1]
                extra = {k: uniq[:, 2 * t :] for k in extra}
                hidden = self._last_hidden(uniq[:, :t], uniq[:, t : 2 * t], extra)[inverse]
                return self._head(hidden, entity_mask, mode, b, raw)
        if self.prefix_cache is not None and not output_attentions:
            return self._head(self._last_hidden(input_ids, attention_mask, extra), entity_mask, mode, b, raw)
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions, **extra
        )
        logits = self._head(out.last_hidden_state, entity_mask, mode, b, raw)
        return (logits, out.attentions) if output_attentions else logits

    def _last_hidden(self, input_ids, attention_mask, extra):
        if self.prefix_cache is None:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        layers = self.encoder.encoder.layer
        hidden = self._frozen_output(input_ids, attention_mask, extra)
        with _swapped(self.encoder, _Replay(hidden), layers[self.cfg.freeze_layers :]):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    def _frozen_output(self, input_ids, attention_mask, extra) -> torch.Tensor:
        """(B, T, H) output of the frozen part: cached rows replayed, new ones computed once (padding after a
        row's length stays 0: the attention mask hides those positions from every real token)."""
        lengths = attention_mask.sum(1).tolist()
        cols = [c.cpu().numpy() for c in (input_ids, *extra.values())]  # one device sync a batch, not a row
        keys = [b"".join(c[i, :n].tobytes() for c in cols) for i, n in enumerate(lengths)]
        new = {k: i for i, k in enumerate(keys) if k not in self.prefix_cache}
        if new:
            idx = torch.tensor(list(new.values()), device=input_ids.device)
            lower = nn.ModuleList(frozen_part(self.encoder, self.cfg.freeze_layers)[1:])
            with torch.no_grad(), _swapped(self.encoder, self.encoder.embeddings, lower):
                rows = {"input_ids": input_ids[idx], "attention_mask": attention_mask[idx]}
                out = self.encoder(**rows, **{k: v[idx] for k, v in extra.items()}).last_hidden_state
            for j, (k, i) in enumerate(new.items()):
                self.prefix_cache[k] = out[j, : lengths[i]].clone()  # a copy: a view would keep the batch alive
        first = self.prefix_cache[keys[0]]
        hidden = first.new_zeros(input_ids.shape[0], input_ids.shape[1], first.shape[-1])
        for i, (k, n) in enumerate(zip(keys, lengths)):
            hidden[i, :n] = self.prefix_cache[k]
        return hidden

    def _head(self, hidden, entity_mask, mode, b, raw=False):
        rep = pool_entity(hidden, entity_mask) if self.cfg.pooling == "entity" else hidden[:, 0]
        out = self.head(rep)
        if mode == "hamam":  # the two copies' outputs averaged (for two_head: before the sigmoids)
            out = (out[:b] + out[b:]) / 2
        return out if raw else losses.as_logits(self.cfg.loss, out)


def frozen_part(encoder: nn.Module, n_layers: int) -> list[nn.Module]:
    """The embeddings and the lowest `n_layers` transformer layers (BERT/XLM-R/RemBERT naming): what
    `freeze_layers` keeps fixed, what runs in eval mode and what the frozen-output cache replays."""
    layers = encoder.encoder.layer
    if n_layers > len(layers):
        raise ValueError(f"freeze_layers={n_layers} but the encoder has {len(layers)} layers")
    return [encoder.embeddings, *layers[:n_layers]]


def freeze_lower(encoder: nn.Module, n_layers: int) -> None:
    """No gradients for the frozen part (`frozen_part`)."""
    for module in frozen_part(encoder, n_layers):
        module.requires_grad_(False)


def label_weights(neutral_weight: float) -> dict[int, float]:
    """Weight per label: neutral down-weighted, the two sentiment classes at 1 (also for sklearn's class_weight)."""
    return {lab: (neutral_weight if lab == 0 else 1.0) for lab in LABELS}


def class_weights(neutral_weight: float) -> torch.Tensor:
    """`label_weights` in logit-column order, for the cross-entropy."""
    return torch.tensor([label_weights(neutral_weight)[lab] for lab in LABELS])


def loss_fn(neutral_weight: float) -> nn.CrossEntropyLoss:
    """The paper's class-weighted cross-entropy (SBERT's SoftmaxLoss uses it too)."""
    return nn.CrossEntropyLoss(weight=class_weights(neutral_weight))


# --- checkpoints --------------------------------------------------------------------------------


def build(backbone_path: str, cfg: TrainConfig, **model_kwargs):
    """Encoder + tokenizer from anything `from_pretrained` accepts, wrapped in HamamModel."""
    tokenizer = AutoTokenizer.from_pretrained(backbone_path)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{backbone_path}: tokenizer has no mask token; HAMAM needs one")
    encoder = AutoModel.from_pretrained(backbone_path, **model_kwargs)
    return HamamModel(encoder, cfg, tokenizer.mask_token_id), tokenizer


def save(model: HamamModel, tokenizer, out_dir: str | Path) -> None:
    """A directory `AutoModel`/`AutoTokenizer` load as is, with the head and its config beside."""
    out_dir = Path(out_dir)
    model.encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, out_dir / HEAD_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.cfg), indent=2))


def load(path: str | Path, device: str = "cpu", **model_kwargs):
    """Reload a saved HAMAM directory for prediction: (model in eval mode, tokenizer)."""
    path = Path(path)
    cfg = TrainConfig(**json.loads((path / CONFIG_FILE).read_text()))
    model, tokenizer = build(str(path), cfg, **model_kwargs)
    model.head.load_state_dict(load_file(path / HEAD_FILE))
    return model.to(device).eval(), tokenizer
