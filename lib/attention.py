"""Where the encoder looks (notebook 06): key-token groups, attention mass per layer x head, a
sentiment lexicon from the training data, and input x gradient as an attention-free check.

Every key token falls in exactly one group, in this order of precedence:
  entity    - the tokens `lib.model.encode` marks (same offset mapping, same window as the model)
  special   - [CLS], [SEP] (or the tokenizer's equivalents); padding belongs to no group
  sentiment - tokens whose word is in the lexicon
  other     - everything else
Queries: the first token ([CLS]) and the entity tokens (their attention rows averaged).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from . import model as hm
from .backbones import WORD_PATTERN
from .train import batches, collate

GROUPS = ("entity", "special", "sentiment", "other")
QUERIES = ("cls", "entity")
WORD = re.compile(WORD_PATTERN)  # the navec tokenizer's word definition, so "word" means one thing here
PAD_GROUP = -1


# --- sentiment lexicon --------------------------------------------------------------------------


def context_words(sentence: str, start: int, end: int) -> list[str]:
    """Lowercased words of the sentence outside the entity span (the entity itself carries no sentiment)."""
    return [m.group().lower() for m in WORD.finditer(sentence) if (m.end() <= start or m.start() >= end) and m.group()[0].isalpha()]


def sentiment_lexicon(train: pd.DataFrame, k: int = 100, min_count: int = 3, alpha: float = 0.5) -> pd.DataFrame:
    """Top-k words per polar label by smoothed log-odds of that label vs neutral.

    Counts are word occurrences in the rows of each label (context words only). The log-odds ratio
    uses add-`alpha` smoothing and is divided by its approximate standard error (Monroe et al. 2008,
    "Fightin' Words"), so a word seen three times in negative rows and never in neutral ones does not
    outrank a frequent, consistently negative word. Returns one row per (word, label), best first.
    """
    counts = {lab: Counter() for lab in (-1, 0, 1)}
    for s, a, b, lab in zip(train["sentence"], train["start"], train["end"], train["label"]):
        counts[int(lab)].update(context_words(s, int(a), int(b)))
    vocab = sorted(set().union(*counts.values()))
    n0 = np.array([counts[0][w] for w in vocab], dtype=float)
    out = []
    for lab in (-1, 1):
        n1 = np.array([counts[lab][w] for w in vocab], dtype=float)
        a0 = alpha * len(vocab)
        odds = lambda n: np.log((n + alpha) / (n.sum() + a0 - n - alpha))
        log_odds = odds(n1) - odds(n0)
        z = log_odds / np.sqrt(1 / (n1 + alpha) + 1 / (n0 + alpha))
        df = pd.DataFrame({"word": vocab, "label": lab, "count": n1.astype(int), "neutral_count": n0.astype(int), "log_odds": log_odds, "z": z})
        df = df[(df["count"] >= min_count) & (df["log_odds"] > 0)]
        out.append(df.sort_values(["z", "word"], ascending=[False, True]).head(k))
    return pd.concat(out, ignore_index=True)


# --- token groups -------------------------------------------------------------------------------


def encode_groups(tokenizer, df: pd.DataFrame, max_length: int, lexicon) -> list[dict]:
    """`lib.model.encode` examples plus `groups` (index into GROUPS per token).

    The entity group *is* the model's entity mask. Words come from the same offsets; when encode
    cut a window out of a long sentence, the same window (`lib.model.window`) is cut here too.
    """
    lexicon = set(lexicon)
    sents, starts, ends = list(df["sentence"]), list(df["start"]), list(df["end"])
    encoded = hm.encode(tokenizer, sents, starts, ends, max_length)
    full = tokenizer(sents, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=False)
    for i, ex in enumerate(encoded):
        offsets, special = full["offset_mapping"][i], full["special_tokens_mask"][i]
        keep = list(range(len(offsets)))
        if len(keep) > len(ex["input_ids"]):
            ent_full = hm.entity_token_mask(offsets, special, int(starts[i]), int(ends[i]))
            keep = hm.window(ent_full, special, max_length)
        assert [full["input_ids"][i][j] for j in keep] == ex["input_ids"], "token groups out of step with lib.model.encode"
        # character -> its word (lowercased); a sub-word token takes the word its first character is in
        word_at = [None] * (len(sents[i]) + 1)
        for m in WORD.finditer(sents[i]):
            word_at[m.start() : m.end()] = [m.group().lower()] * (m.end() - m.start())
        groups = []
        for j, ent in zip(keep, ex["entity_mask"]):
            a, b = offsets[j]
            if ent:
                g = 0
            elif special[j]:
                g = 1
            elif b > a and word_at[a] in lexicon:
                g = 2
            else:
                g = 3
            groups.append(g)
        ex["groups"] = groups
    return encoded


def collate_groups(examples: list[dict], pad_id: int) -> dict:
    """`lib.train.collate` plus the group ids, padded with PAD_GROUP."""
    x = collate(examples, pad_id)
    g = torch.full(x["input_ids"].shape, PAD_GROUP, dtype=torch.long)
    for i, e in enumerate(examples):
        g[i, : len(e["groups"])] = torch.tensor(e["groups"])
    x["groups"] = g
    return x


# --- attention and attribution ------------------------------------------------------------------


def forward_attentions(model: hm.HamamModel, x: dict, mode: str):
    """(logits, attentions as (B, L, H, T, T)) for one of the two single-copy modes, on the model's device."""
    if mode not in ("unmasked", "masked"):
        raise ValueError("attention is read per copy: mode must be 'unmasked' or 'masked'")
    dev = next(model.parameters()).device
    ids, att_mask, ent = (x[k].to(dev) for k in ("input_ids", "attention_mask", "entity_mask"))
    logits, att = model(ids, att_mask, ent, mode=mode, output_attentions=True)
    if not att:  # sdpa/flash kernels return no weights (transformers 5 returns an empty tuple)
        raise RuntimeError("no attention weights: load the model with attn_implementation='eager'")
    return logits, torch.stack(att, 1)


def group_onehot(groups: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(B, T) group ids -> (B, T, len(GROUPS)) indicators; padding rows are all zero."""
    onehot = torch.nn.functional.one_hot(groups.clamp(min=0), len(GROUPS)).to(dtype)
    return onehot * (groups >= 0).unsqueeze(-1).to(dtype)


def group_masses(att: torch.Tensor, groups: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """Attention mass per group: (B, L, H, T, T) -> (B, L, H, len(QUERIES), len(GROUPS)).

    A query row sums to 1 over the real (unpadded) keys, and every real key is in one group, so the
    masses of a query sum to 1.
    """
    onehot = group_onehot(groups, att.dtype)
    ent = entity_mask.to(att.dtype)
    ent = ent / ent.sum(1, keepdim=True)
    queries = torch.stack([att[..., 0, :], torch.einsum("blhqk,bq->blhk", att, ent)], dim=3)
    return torch.einsum("blhqk,bkg->blhqg", queries, onehot)


def input_x_gradient(model: hm.HamamModel, x: dict, mode: str):
    """|input embedding . its gradient| per token w.r.t. each row's predicted logit.

    Returns (attribution (B, T), logits, attentions (B, L, H, T, T)), all on the CPU. Rows do not
    interact in eval mode, so the gradient of the summed predicted logits gives each row's own
    gradient. The embedding output is swapped for a leaf tensor, so frozen embeddings work.
    """
    store = {}

    def hook(_module, _inputs, out):
        store["emb"] = out.detach().requires_grad_(True)
        return store["emb"]

    handle = model.encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits, att = forward_attentions(model, x, mode)
            (grad,) = torch.autograd.grad(logits.max(-1).values.sum(), store["emb"])
    finally:
        handle.remove()
    attr = (store["emb"] * grad).sum(-1).abs().cpu() * x["attention_mask"]
    return attr.detach(), logits.detach().cpu(), att.detach().cpu()


def analyse(model: hm.HamamModel, examples: list[dict], pad_id: int, mode: str, batch_size: int = 32, desc: str | None = None) -> dict:
    """One pass over the examples (length-bucketed, dynamic padding). Per row:

    masses      (N, L, H, 2, 4)  attention mass from each query to each group, per layer and head
    attribution (N, 4)           share of |input x gradient| on each group
    tokens      (N, 4)           share of the row's tokens in each group (uniform-attention baseline)
    spearman    (N, 2)           last layer, head mean: rank correlation of the CLS / entity attention
                                 row with |input x gradient| over the context tokens (sentiment + other)
    pred        (N,)             predicted label of this copy
    """
    model.eval()
    order = batches([len(e["input_ids"]) for e in examples], batch_size, shuffle=False, bucket=True)
    out = None
    for b in tqdm(order, desc=desc or mode, leave=False):
        x = collate_groups([examples[i] for i in b], pad_id)
        attr, logits, att = input_x_gradient(model, x, mode)
        groups = x["groups"]
        onehot = group_onehot(groups)
        masses = group_masses(att, groups, x["entity_mask"])
        last = att[:, -1].mean(1)  # (B, T, T)
        ent = x["entity_mask"].float()
        rows = torch.stack([last[:, 0], torch.einsum("bqk,bq->bk", last, ent / ent.sum(1, keepdim=True))], 1)
        context = groups >= 2
        rho = [[_spearman(rows[i, q][context[i]], attr[i][context[i]]) for q in range(len(QUERIES))] for i in range(len(b))]
        part = {
            "masses": masses.numpy(),
            "attribution": (torch.einsum("bt,btg->bg", attr, onehot) / attr.sum(1, keepdim=True).clamp(min=1e-12)).numpy(),
            "tokens": (onehot.sum(1) / onehot.sum((1, 2)).unsqueeze(-1)).numpy(),
            "spearman": np.array(rho, dtype=float),
            "pred": np.asarray(hm.LABELS)[logits.argmax(-1).numpy()],
        }
        if out is None:
            out = {k: np.zeros((len(examples),) + v.shape[1:], dtype=v.dtype) for k, v in part.items()}
        for k, v in part.items():
            out[k][b] = v
    return out


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def masses_frame(results: dict) -> pd.DataFrame:
    """{(model, mode): analyse(...)} -> long table of mean mass per model, mode, query, layer, head, group."""
    frames = []
    for (name, mode), r in results.items():
        m = r["masses"]  # (N, L, H, Q, G)
        _, L, H, _, _ = m.shape
        idx = pd.MultiIndex.from_product([range(L), range(H), QUERIES, GROUPS], names=["layer", "head", "query", "group"])
        frames.append(pd.DataFrame({"mass": m.mean(0).ravel(), "sd": m.std(0).ravel(), "n": len(m)}, index=idx).reset_index().assign(model=name, mode=mode))
    cols = ["model", "mode", "query", "group", "layer", "head", "mass", "sd", "n"]
    return pd.concat(frames, ignore_index=True)[cols]


# --- single examples (bertviz, static maps) ------------------------------------------------------


@torch.no_grad()
def example_view(model: hm.HamamModel, tokenizer, example: dict, mode: str, decimals: int | None = None):
    """(attention tuple of (1, H, T, T) per layer, token strings) as bertviz wants them.

    Tokens are the ids the model saw, so the masked copy shows the mask token at the entity's
    positions. With `decimals`, weights are rounded in float64 so bertviz's JSON stays short.
    """
    x = collate([example], tokenizer.pad_token_id)
    att = forward_attentions(model, x, mode)[1].cpu()
    ids = hm.mask_entity(x["input_ids"], x["entity_mask"], model.mask_token_id) if mode == "masked" else x["input_ids"]
    if decimals is not None:
        att = torch.round(att.double(), decimals=decimals)
    return tuple(att[:, layer] for layer in range(att.shape[1])), tokenizer.convert_ids_to_tokens(ids[0].tolist())


def pick_examples(df: pd.DataFrame, n_tokens, pred, score, min_tokens: int = 10, max_tokens: int = 32) -> dict[str, int]:
    """Row positions of one negative, positive and neutral example and one whose entity string occurs
    again in the sentence: readable (length, and not boilerplate such as "Фото: Reuters Фото: Reuters")
    and correctly predicted where possible, then the most confident. Constraints are dropped one by
    one when nothing fits (small smoke sets)."""
    n_tokens, pred, score = np.asarray(n_tokens), np.asarray(pred), np.asarray(score, dtype=float)
    label = df["label"].to_numpy()
    words = [[w.lower() for w in WORD.findall(s)] for s in df["sentence"]]
    varied = np.array([len(set(w)) >= 0.6 * len(w) for w in words])
    readable = (n_tokens >= min_tokens) & (n_tokens <= max_tokens) & varied
    correct = pred == label
    repeated = np.array([s.lower().count(e.lower()) >= 2 for s, e in zip(df["sentence"], df["entity"])])
    # the rarest kind first, so it is not taken by another; returned in the display order
    wanted = {"repeated entity": repeated, "negative": label == -1, "positive": label == 1, "neutral": label == 0}
    picked: dict[str, int] = {}
    for name, want in wanted.items():
        free = ~np.isin(np.arange(len(df)), list(picked.values()))
        for cond in (want & readable & correct, want & readable, want, readable):
            cand = np.flatnonzero(cond & free)
            if len(cand):
                picked[name] = int(cand[np.argmax(score[cand])])
                break
    return {k: picked[k] for k in ("negative", "positive", "neutral", "repeated entity") if k in picked}
