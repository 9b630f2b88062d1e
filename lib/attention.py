"""Where the encoder looks (notebook 06): key-token groups, attention mass per layer x head, a
sentiment lexicon from the training data, and input x gradient as an attention-free check.

Every key token falls in exactly one group, in this order of precedence:
  entity    - the tokens `lib.model.encode` marks (same offset mapping, same window as the model)
  special   - [CLS], [SEP] (or the tokenizer's equivalents, <s> and </s>); padding belongs to no group
  sentiment - tokens whose word (the word their first non-space character lies in) is in the lexicon
  other     - everything else
Queries: the first token ([CLS]) and the entity tokens (their attention rows averaged).
Layers and heads are numbered from 1 in every table, figure and text this module makes.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from . import model as hm
from .backbones import WORD_PATTERN
from .metrics import draw_resamples, sentence_groups
from .train import batches, collate

GROUPS = ("entity", "special", "sentiment", "other")
QUERIES = ("cls", "entity")
MODELS = ("initial", "fine-tuned")
COPIES = ("unmasked", "masked")
CONDITIONS = tuple((m, c) for m in MODELS for c in COPIES)
CONTEXT = ("sentiment", "other")  # the words around the entity
WORD = re.compile(WORD_PATTERN)  # the navec tokenizer's word definition, so "word" means one thing here
PAD_GROUP = -1


# --- sentiment lexicon --------------------------------------------------------------------------


def context_words(sentence: str, start: int, end: int) -> list[str]:
    """Lowercased words of the sentence outside the entity span (the entity itself carries no sentiment)."""
    return [
        m.group().lower()
        for m in WORD.finditer(sentence)
        if (m.end() <= start or m.start() >= end) and m.group()[0].isalpha()
    ]


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
        df = pd.DataFrame(
            {
                "word": vocab,
                "label": lab,
                "count": n1.astype(int),
                "neutral_count": n0.astype(int),
                "log_odds": log_odds,
                "z": z,
            }
        )
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
        assert [full["input_ids"][i][j] for j in keep] == ex["input_ids"], (
            "token groups out of step with lib.model.encode"
        )
        # character -> its word (lowercased); a sub-word token takes the word its first non-space
        # character is in (sentencepiece offsets, as in XLM-R's, start at the space before a word)
        word_at = [None] * (len(sents[i]) + 1)
        for m in WORD.finditer(sents[i]):
            word_at[m.start() : m.end()] = [m.group().lower()] * (m.end() - m.start())
        groups = []
        for j, ent in zip(keep, ex["entity_mask"]):
            a, b = offsets[j]
            while a < b and sents[i][a].isspace():
                a += 1
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


def query_rows(att: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """The two query rows of attention maps (B, ..., T, T) -> (B, ..., 2, T): the first token's row,
    and the mean of the entity tokens' rows."""
    ent = entity_mask.to(att.dtype)
    ent = ent / ent.sum(1, keepdim=True)
    return torch.stack([att[..., 0, :], torch.einsum("b...qk,bq->b...k", att, ent)], dim=-2)


def group_masses(att: torch.Tensor, groups: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """Attention mass per group: (B, L, H, T, T) -> (B, L, H, len(QUERIES), len(GROUPS)).

    A query row sums to 1 over the real (unpadded) keys, and every real key is in one group, so the
    masses of a query sum to 1.
    """
    return torch.einsum("blhqk,bkg->blhqg", query_rows(att, entity_mask), group_onehot(groups, att.dtype))


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


def analyse(
    model: hm.HamamModel,
    examples: list[dict],
    pad_id: int,
    mode: str,
    batch_size: int = 32,
    desc: str | None = None,
    attribution: bool = True,
) -> dict:
    """One pass over the examples (length-bucketed, dynamic padding). Per row:

    masses      (N, L, H, 2, 4)  attention mass from each query to each group, per layer and head
    attribution (N, 4)           share of |input x gradient| on each group
    tokens      (N, 4)           share of the row's tokens in each group (uniform-attention baseline)
    spearman    (N, 2)           last layer, head mean: rank correlation of the CLS / entity attention
                                 row with |input x gradient| over the context tokens (sentiment + other)
    pred        (N,)             predicted label of this copy

    `attribution=False` skips the backward pass (about 4x cheaper on a CPU): attribution and
    spearman are then NaN.
    """
    model.eval()
    order = batches([len(e["input_ids"]) for e in examples], batch_size, shuffle=False, bucket=True)
    out = None
    for b in tqdm(order, desc=desc or mode, leave=False):
        x = collate_groups([examples[i] for i in b], pad_id)
        if attribution:
            attr, logits, att = input_x_gradient(model, x, mode)
        else:
            with torch.no_grad():
                logits, att = (t.cpu() for t in forward_attentions(model, x, mode))
        groups = x["groups"]
        onehot = group_onehot(groups)
        part = {
            "masses": group_masses(att, groups, x["entity_mask"]).numpy(),
            "attribution": np.full((len(b), len(GROUPS)), np.nan, dtype=np.float32),
            "tokens": (onehot.sum(1) / onehot.sum((1, 2)).unsqueeze(-1)).numpy(),
            "spearman": np.full((len(b), len(QUERIES)), np.nan),
            "pred": np.asarray(hm.LABELS)[logits.argmax(-1).numpy()],
        }
        if attribution:
            rows = query_rows(att[:, -1].mean(1), x["entity_mask"])  # (B, 2, T): last layer, heads averaged
            context = groups >= GROUPS.index("sentiment")
            part["spearman"] = np.array(
                [
                    [_spearman(rows[i, q][context[i]], attr[i][context[i]]) for q in range(len(QUERIES))]
                    for i in range(len(b))
                ],
                dtype=float,
            )
            part["attribution"] = (
                torch.einsum("bt,btg->bg", attr, onehot) / attr.sum(1, keepdim=True).clamp(min=1e-12)
            ).numpy()
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
    """{(model, mode): analyse(...)} -> long table of mean mass per model, mode, query, layer, head, group
    (layers and heads numbered from 1)."""
    frames = []
    for (name, mode), r in results.items():
        m = r["masses"]  # (N, L, H, Q, G)
        _, L, H, _, _ = m.shape
        idx = pd.MultiIndex.from_product(
            [range(1, L + 1), range(1, H + 1), QUERIES, GROUPS], names=["layer", "head", "query", "group"]
        )
        frames.append(
            pd.DataFrame({"mass": m.mean(0).ravel(), "sd": m.std(0).ravel(), "n": len(m)}, index=idx)
            .reset_index()
            .assign(model=name, mode=mode)
        )
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


def pick_examples(
    df: pd.DataFrame, n_tokens, pred, score, min_tokens: int = 10, max_tokens: int = 32
) -> dict[str, int]:
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


def show(view, kind: str = "head", layers=None, decimals: int = 2, **kwargs):
    """Draw an `example_view` with bertviz: kind "head" (head_view, opened at the last layer shown)
    or "model" (model_view, layers x heads). `layers` (numbered from 1; all when None) limits what
    is embedded; weights are rounded to `decimals` in float64. Both keep the notebook's JSON short.
    bertviz itself numbers layers and heads from 0."""
    from bertviz import head_view, model_view

    att, tokens = view
    include = None if layers is None else [layer - 1 for layer in layers]
    att = tuple(torch.round(a.double(), decimals=decimals) for a in att)
    if kind == "head":
        return head_view(att, tokens, **{"layer": (include or [len(att) - 1])[-1], "include_layers": include, **kwargs})
    if kind == "model":
        return model_view(att, tokens, **{"display_mode": "light", "include_layers": include, **kwargs})
    raise ValueError(f"kind must be 'head' or 'model', got {kind!r}")


def token_table(model: hm.HamamModel, tokenizer, example: dict, mode: str) -> pd.DataFrame:
    """Per token of one example (with `groups`): the last layer's attention from the entity tokens
    (heads averaged) and |input x gradient|, each as a share of the row."""
    x = collate_groups([example], tokenizer.pad_token_id)
    attr, _, att = input_x_gradient(model, x, mode)
    row = query_rows(att[:, -1].mean(1), x["entity_mask"])[0, QUERIES.index("entity")]
    ids = hm.mask_entity(x["input_ids"], x["entity_mask"], model.mask_token_id) if mode == "masked" else x["input_ids"]
    return pd.DataFrame(
        {
            "token": tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            "group": [GROUPS[g] for g in example["groups"]],
            "attention (entity → token)": (row / row.sum()).numpy(),
            "|input x gradient|": (attr[0] / attr[0].sum().clamp(min=1e-12)).numpy(),
        }
    )


# --- the chapter's two models and the scan over validation rows ------------------------------------


def load_models(backbone_dir, checkpoint_dir, cfg, device="cpu") -> tuple[dict, object]:
    """({"initial": the backbone fine-tuning started from, "fine-tuned": the saved checkpoint},
    tokenizer), both models in eval mode with eager attention (the only kind that returns weights).

    The initial model's head is new and random (seeded with `cfg.seed`): it plays no part in
    attention, and its input x gradient would explain a random decision."""
    torch.manual_seed(cfg.seed)
    initial, tok0 = hm.build(str(backbone_dir), cfg, attn_implementation="eager")
    tuned, tok = hm.load(checkpoint_dir, attn_implementation="eager")
    if tok0.get_vocab() != tok.get_vocab():
        raise ValueError("initial and fine-tuned tokenizers differ")
    return {"initial": initial.to(device).eval(), "fine-tuned": tuned.to(device).eval()}, tok


def encoder_shape(model: hm.HamamModel) -> tuple[int, int]:
    cfg = model.encoder.config
    return cfg.num_hidden_layers, cfg.num_attention_heads


def sample_rows(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of `k` of `n` rows drawn without replacement (all rows when k is None)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def token_shares(examples: list[dict]) -> pd.DataFrame:
    """Share of each row's tokens per group: what uniform attention would put on each group."""
    return pd.DataFrame(
        [np.bincount(e["groups"], minlength=len(GROUPS)) / len(e["groups"]) for e in examples], columns=list(GROUPS)
    )


def show_layers(n_layers: int, freeze: int = 0) -> list[int]:
    """Layers for the static per-example maps: the last frozen one (if any), the middle of the
    trained ones, and the last."""
    return sorted({layer for layer in (freeze, (freeze + n_layers + 1) // 2, n_layers) if layer >= 1})


@dataclass
class Scan:
    """`analyse` results of every condition over the same validation rows.

    results: {(model, mode): analyse(...)}; rows: the analysed rows (for sentence clusters and
    labels); freeze: layers 1..freeze (and the embeddings) were frozen during fine-tuning."""

    results: dict
    rows: pd.DataFrame
    freeze: int = 0
    seconds: dict = field(default_factory=dict)

    def __post_init__(self):
        self.table = masses_frame(self.results)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.results.values()))["masses"].shape[1:3])

    @property
    def trained(self) -> list[int]:
        return list(range(self.freeze + 1, self.shape[0] + 1))

    @property
    def frozen(self) -> list[int]:
        return list(range(1, self.freeze + 1))

    @property
    def groups(self) -> np.ndarray:
        return sentence_groups(self.rows)

    def row_mass(self, model: str, mode: str, query: str, group, layers=None) -> np.ndarray:
        """(N,) per row: mass from `query` on `group` (a name or a tuple of names, summed), averaged
        over the given layers (numbered from 1; all when None) and every head."""
        m = self.results[model, mode]["masses"]
        if layers is not None:
            m = m[:, [layer - 1 for layer in layers]]
        gi = [GROUPS.index(g) for g in ((group,) if isinstance(group, str) else group)]
        return m[:, :, :, QUERIES.index(query)][..., gi].sum(-1).mean((1, 2))

    def grid(self, model: str, mode: str, query: str, group: str) -> pd.DataFrame:
        """Mean mass as a layer x head frame (both numbered from 1)."""
        t = self.table
        sub = t[(t["model"] == model) & (t["mode"] == mode) & (t["query"] == query) & (t["group"] == group)]
        return sub.pivot(index="layer", columns="head", values="mass").sort_index()

    def layer_profile(self) -> pd.DataFrame:
        """Mean mass per model, mode, query, group and layer (heads averaged)."""
        return self.table.groupby(["model", "mode", "query", "group", "layer"], sort=False)["mass"].mean().reset_index()


def run_scan(
    models: dict,
    examples: list[dict],
    pad_id: int,
    rows: pd.DataFrame,
    freeze: int = 0,
    attribution=("fine-tuned",),
    batch_size: int = 32,
) -> Scan:
    """`analyse` for every condition (model x copy). Input x gradient is computed only for the
    models in `attribution` (the initial model's head is random)."""
    results, seconds = {}, {}
    for name, mode in CONDITIONS:
        t0 = time.perf_counter()
        results[name, mode] = analyse(
            models[name], examples, pad_id, mode, batch_size, desc=f"{name} {mode}", attribution=name in attribution
        )
        seconds[f"{name} {mode}"] = round(time.perf_counter() - t0, 1)
    return Scan(results, rows.reset_index(drop=True), freeze, seconds)


# --- tables ---------------------------------------------------------------------------------------


def lexicon_top(lexicon: pd.DataFrame, k: int = 15) -> pd.DataFrame:
    """The top `k` words per polar label side by side."""
    names = {-1: "negative", 1: "positive"}
    cols = ["word", "count", "neutral_count", "z"]
    return pd.concat(
        {names[lab]: lexicon[lexicon["label"] == lab].head(k)[cols].reset_index(drop=True) for lab in (-1, 1)}, axis=1
    )


def mean_mass_table(scan: Scan, layers=None) -> pd.DataFrame:
    """Mean mass per condition and query (rows) and group (columns), over the given layers."""
    return pd.DataFrame(
        {
            (m, mode, q): {g: scan.row_mass(m, mode, q, g, layers).mean() for g in GROUPS}
            for m, mode in CONDITIONS
            for q in QUERIES
        }
    ).T.rename_axis(["model", "mode", "query"])


def mass_panels(scan: Scan, query: str) -> dict:
    """{(condition, "→ group"): layer x head frame} for one query: rows the four conditions."""
    return {(f"{m} · {mode}", f"→ {g}"): scan.grid(m, mode, query, g) for m, mode in CONDITIONS for g in GROUPS}


def diff_panels(scan: Scan, kind: str) -> dict:
    """Layer x head differences of mean mass. kind "finetuning": fine-tuned − initial, rows (query,
    copy); kind "masking": masked − unmasked, rows (query, model)."""
    out = {}
    for q in QUERIES:
        for part in COPIES if kind == "finetuning" else MODELS:
            for g in GROUPS:
                if kind == "finetuning":
                    d = scan.grid("fine-tuned", part, q, g) - scan.grid("initial", part, q, g)
                elif kind == "masking":
                    d = scan.grid(part, "masked", q, g) - scan.grid(part, "unmasked", q, g)
                else:
                    raise ValueError(f"kind must be 'finetuning' or 'masking', got {kind!r}")
                out[(f"from {'[CLS]' if q == 'cls' else 'entity'} · {part}", f"→ {g}")] = d
    return out


def head_gain(scan: Scan, query: str, group: str, mode: str = "unmasked", layers=None) -> dict:
    """Fine-tuned − initial mean mass per head of the given layers (the trained ones when None):
    how many heads gain, and the head that gains most, with its masses before and after."""
    layers = scan.trained if layers is None else layers
    before, after = (
        scan.grid("initial", mode, query, group).loc[layers],
        scan.grid("fine-tuned", mode, query, group).loc[layers],
    )
    d = after - before
    layer, head = d.stack().idxmax()
    return {
        "up": int((d > 0).to_numpy().sum()),
        "n": d.size,
        "layer": int(layer),
        "head": int(head),
        "before": float(before.loc[layer, head]),
        "after": float(after.loc[layer, head]),
        "gain": float(d.loc[layer, head]),
    }


def agreement(scan: Scan) -> pd.DataFrame:
    """Per condition and group: token share, last-layer attention from [CLS] and from the entity
    (heads averaged) and the input x gradient share (NaN where it was not computed)."""
    rows = []
    for (m, mode), r in scan.results.items():
        for gi, g in enumerate(GROUPS):
            rows.append(
                {
                    "model": m,
                    "mode": mode,
                    "group": g,
                    "token share": r["tokens"][:, gi].mean(),
                    "attention from [CLS], last layer": r["masses"][:, -1, :, 0, gi].mean(),
                    "attention from entity, last layer": r["masses"][:, -1, :, 1, gi].mean(),
                    "input x gradient": r["attribution"][:, gi].mean(),
                }
            )
    return pd.DataFrame(rows).set_index(["model", "mode", "group"])


def spearman_long(scan: Scan) -> pd.DataFrame:
    """Per row and query: Spearman(last-layer attention row, |input x gradient|) over context tokens."""
    parts = [
        pd.DataFrame({"model": m, "mode": mode, "query": q, "spearman": r["spearman"][:, qi]})
        for (m, mode), r in scan.results.items()
        for qi, q in enumerate(QUERIES)
    ]
    return pd.concat(parts, ignore_index=True).dropna()


def spearman_summary(scan: Scan) -> pd.DataFrame:
    sp = spearman_long(scan)
    return sp.groupby(["model", "mode", "query"], sort=False)["spearman"].agg(
        rows="size", median="median", share_positive=lambda s: (s > 0).mean()
    )


def sentiment_by_label(scan: Scan) -> pd.DataFrame:
    """Last-layer mass on sentiment words (heads averaged) by the row's true label, per condition and
    query, with the uniform-attention baseline (token share) as the last row."""
    names = {-1: "negative", 0: "neutral", 1: "positive"}
    labels = scan.rows["label"].to_numpy()
    present = [lab for lab in (-1, 0, 1) if (labels == lab).any()]
    last = [scan.shape[0]]
    out = {
        (m, mode, q): {
            names[lab]: scan.row_mass(m, mode, q, "sentiment", last)[labels == lab].mean() for lab in present
        }
        for m, mode in CONDITIONS
        for q in QUERIES
    }
    tokens = next(iter(scan.results.values()))["tokens"][:, GROUPS.index("sentiment")]
    out[("uniform attention", "", "(token share)")] = {names[lab]: tokens[labels == lab].mean() for lab in present}
    return pd.DataFrame(out).T.rename_axis(["model", "mode", "query"])


# --- headline numbers and the answer --------------------------------------------------------------


def cluster_mean(values, groups, n: int, seed: int = 0, alpha: float = 0.05) -> list[float]:
    """[mean, lo, hi]: the mean of per-row values with a percentile CI from resampling clusters
    (sentences) with replacement, as `lib.metrics.bootstrap_ci` does for F1pn."""
    values = np.asarray(values, dtype=float)
    counts, inverse = draw_resamples(groups, len(values), n, seed)
    k = counts.shape[1]
    stats = (counts @ np.bincount(inverse, weights=values, minlength=k)) / (counts @ np.bincount(inverse, minlength=k))
    return [float(values.mean()), float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))]


FLOWS = {"entity_to_sentiment": ("entity", "sentiment"), "cls_to_entity": ("cls", "entity")}


def headline(scan: Scan, n_boot: int) -> dict:
    """The numbers the answer cites, {name: [value, lo, hi] or [value]}, CIs over sentence clusters.

    Fine-tuning effects are read on the unmasked copy in the trained layers (frozen ones cannot
    change); masking effects from the entity positions over all layers."""
    g, T, ft, init = scan.groups, scan.trained, "fine-tuned", "initial"
    num = {}
    for key, (q, grp) in FLOWS.items():
        a, b = scan.row_mass(init, "unmasked", q, grp, T), scan.row_mass(ft, "unmasked", q, grp, T)
        num[f"06.{key}.trained_layers.initial"] = cluster_mean(a, g, n_boot)
        num[f"06.{key}.trained_layers.finetuned"] = cluster_mean(b, g, n_boot)
        num[f"06.{key}.trained_layers.finetuned_minus_initial"] = cluster_mean(b - a, g, n_boot)
    if scan.frozen:
        d = scan.table[scan.table["layer"] <= scan.freeze].set_index(
            ["model", "mode", "query", "group", "layer", "head"]
        )["mass"]
        num["06.frozen_layers.max_abs_change"] = [float((d[ft] - d[init]).abs().max())]
    shift = {
        m: scan.row_mass(m, "masked", "entity", CONTEXT) - scan.row_mass(m, "unmasked", "entity", CONTEXT)
        for m in MODELS
    }
    num["06.masked_minus_unmasked.entity_to_context.finetuned"] = cluster_mean(shift[ft], g, n_boot)
    num["06.masked_minus_unmasked.entity_to_context.initial"] = cluster_mean(shift[init], g, n_boot)
    num["06.masked_minus_unmasked.entity_to_context.finetuned_minus_initial"] = cluster_mean(
        shift[ft] - shift[init], g, n_boot
    )
    sent = scan.row_mass(ft, "masked", "entity", "sentiment") - scan.row_mass(ft, "unmasked", "entity", "sentiment")
    num["06.masked_minus_unmasked.entity_to_sentiment.finetuned"] = cluster_mean(sent, g, n_boot)
    attr = scan.results[ft, "unmasked"]["attribution"]
    if np.isfinite(attr).all():
        for grp in ("entity", "sentiment"):
            num[f"06.attribution.{grp}_share.finetuned"] = cluster_mean(attr[:, GROUPS.index(grp)], g, n_boot)
        rho = scan.results[ft, "unmasked"]["spearman"][:, QUERIES.index("entity")]
        num["06.spearman_entity_last_layer.finetuned.median"] = [float(np.nanmedian(rho))]
    num["06.uniform.sentiment_share"] = [
        float(scan.results[ft, "unmasked"]["tokens"][:, GROUPS.index("sentiment")].mean())
    ]
    return num


def _fmt(*values, signed: bool = False) -> list[str]:
    """The values with 3 decimals, or 4 when all are below 0.01 (sentiment words hold ~1% of tokens)."""
    d = 4 if max(abs(float(v)) for v in values) < 0.01 else 3
    return [f"{float(v):{'+' if signed else ''}.{d}f}" for v in values]


def _ci(v, signed: bool = False) -> str:
    """ "v [lo, hi]"; signed differences also say whether the CI excludes 0 (or is too small to show)."""
    s = _fmt(*v, signed=signed)
    if len(v) == 1:
        return s[0]
    text = f"{s[0]} [{s[1]}, {s[2]}]"
    if not signed:
        return text
    if max(abs(v[1]), abs(v[2])) < 5e-5:
        return text + " (negligible: the whole CI is within ±0.00005)"
    return text + (" (CI excludes 0)" if v[1] > 0 or v[2] < 0 else " (CI includes 0)")


def _moved(scan: Scan, query: str, group: str, mode: str = "unmasked") -> str:
    h, T, last = head_gain(scan, query, group, mode), scan.trained, [scan.shape[0]]
    m = [scan.row_mass(k, mode, query, group, T).mean() for k in MODELS]
    e = [scan.row_mass(k, mode, query, group, last).mean() for k in MODELS]
    hb, ha = _fmt(h["before"], h["after"])
    which = "heads of the trained layers" if scan.freeze else "heads"
    return (
        f"{h['up']}/{h['n']} {which} gain; the most, layer {h['layer']} head {h['head']}: {hb} → {ha} ({_fmt(h['gain'], signed=True)[0]}); "
        f"mean over {'the trained' if scan.freeze else 'all'} layers {' → '.join(_fmt(*m))}, last layer {' → '.join(_fmt(*e))}"
    )


def answer(scan: Scan, nums: dict, *, profile: str, backbone: str, lexicon_size: int) -> str:
    """The chapter's answer as Markdown, every number computed from `scan` and `nums` (`headline`)."""
    L, H = scan.shape
    f, ft = scan.freeze, "fine-tuned"
    share = scan.results[ft, "unmasked"]["tokens"].mean(0)
    trained = f"layers {f + 1}–{L}" if f else f"all {L} layers"
    intro = f"**Where the model looks ({profile} profile, {backbone}: {L} layers × {H} heads, {len(scan.rows)} validation rows; layers and heads numbered from 1).**"
    if f:
        intro += (
            f" Fine-tuning kept the embeddings and layers 1–{f} frozen, so in those layers both models compute the same attention "
            f"(largest difference of a head's mean mass there: {nums['06.frozen_layers.max_abs_change'][0]:.1e}). Every fine-tuning effect "
            f"below is therefore read in the trained {trained}, and what masking changes in layers 1–{f} is the pre-trained model's response to the mask token."
        )
    else:
        intro += " All layers were fine-tuned."
    k = "06.{}.trained_layers.{}"
    out = [
        intro,
        f"Uniform attention would put {share[0]:.3f} of a query's mass on the entity, {share[1]:.3f} on special tokens and {_fmt(share[2])[0]} "
        f"on the {lexicon_size} lexicon words (mean token shares).",
        f"*Toward the entity after fine-tuning* (unmasked copy, {trained}): from [CLS] — {_moved(scan, 'cls', 'entity')}; change of the mean "
        f"{_ci(nums[k.format('cls_to_entity', 'finetuned_minus_initial')], True)}. From the entity tokens — {_moved(scan, 'entity', 'entity')}.",
        f"*Toward sentiment words after fine-tuning* (unmasked copy, {trained}): from the entity tokens — {_moved(scan, 'entity', 'sentiment')}; "
        f"change of the mean {_ci(nums[k.format('entity_to_sentiment', 'finetuned_minus_initial')], True)}. From [CLS] — {_moved(scan, 'cls', 'sentiment')}. "
        f"In the masked copy, from the entity positions — {_moved(scan, 'entity', 'sentiment', 'masked')}.",
        f"*Special tokens* (unmasked copy, {trained}): from the entity tokens {_span(scan, 'entity', 'special')}; from [CLS] {_span(scan, 'cls', 'special')}.",
    ]
    shift = {
        g: (scan.row_mass(ft, "masked", "entity", g) - scan.row_mass(ft, "unmasked", "entity", g)).mean()
        for g in GROUPS
    }
    cls_shift = {
        g: (scan.row_mass(ft, "masked", "cls", g) - scan.row_mass(ft, "unmasked", "cls", g)).mean() for g in GROUPS
    }
    trained_shift = {
        m: (
            scan.row_mass(m, "masked", "entity", CONTEXT, scan.trained)
            - scan.row_mass(m, "unmasked", "entity", CONTEXT, scan.trained)
        ).mean()
        for m in MODELS
    }
    m = "06.masked_minus_unmasked.entity_to_context.{}"
    ts = _fmt(trained_shift["fine-tuned"], trained_shift["initial"], signed=True)
    alone = f" (in the trained {trained} alone: {ts[0]} fine-tuned vs {ts[1]} initial)" if f else ""
    out.append(
        f"*What masking the entity changes* (masked − unmasked copy, mean over all layers and heads). Fine-tuned model, from the entity "
        f"positions: {_groups(shift)}; onto the context words (sentiment + other) {_ci(nums[m.format('finetuned')], True)}, of which sentiment words "
        f"{_ci(nums['06.masked_minus_unmasked.entity_to_sentiment.finetuned'], True)}. From [CLS]: {_groups(cls_shift)}. The initial backbone moves "
        f"{_ci(nums[m.format('initial')], True)} onto the context, so fine-tuning changed this shift by {_ci(nums[m.format('finetuned_minus_initial')], True)}{alone}."
    )
    bl = sentiment_by_label(scan)
    row, base = bl.loc[(ft, "unmasked", "entity")], bl.loc[("uniform attention", "", "(token share)")]
    vals = _fmt(*row, *base)
    out.append(
        "*Polar vs neutral rows* (fine-tuned, unmasked, last layer, from the entity): mass on sentiment words "
        + ", ".join(f"{lab} {vals[i]} (uniform {vals[len(row) + i]})" for i, lab in enumerate(row.index))
        + "."
    )
    if "06.attribution.entity_share.finetuned" in nums:
        ag, rh = agreement(scan), spearman_summary(scan)
        rho_e = rh.loc[(ft, "unmasked", "entity")]
        masked_rho = (
            rh.loc[(ft, "masked", "entity"), "median"] if (ft, "masked", "entity") in rh.index else float("nan")
        )
        out.append(
            f"*Attention vs attribution* (fine-tuned, unmasked copy): input x gradient puts {_ci(nums['06.attribution.sentiment_share.finetuned'])} of its mass "
            f"on sentiment words and {_ci(nums['06.attribution.entity_share.finetuned'])} on the entity, against "
            f"{_fmt(ag.loc[(ft, 'unmasked', 'sentiment'), 'attention from entity, last layer'])[0]} and {ag.loc[(ft, 'unmasked', 'entity'), 'attention from entity, last layer']:.3f} "
            f"for the last layer's attention from the entity. Per row, over context tokens, the median Spearman correlation between last-layer attention from the entity "
            f"and |input x gradient| is {rho_e['median']:.2f} (positive in {rho_e['share_positive']:.0%} of {int(rho_e['rows'])} rows; from [CLS] "
            f"{rh.loc[(ft, 'unmasked', 'cls'), 'median']:.2f}; masked copy, from the entity: {masked_rho:.2f}). "
            + (
                "Attention and attribution rank context words alike more often than not, but loosely."
                if rho_e["median"] > 0.2
                else "Attention is a weak guide to which context words drive the prediction."
            )
        )
    if profile == "smoke":
        out.append(
            "*Smoke profile: a tiny random backbone trained for one epoch on a few hundred rows; the numbers test the pipeline, not the hypothesis.*"
        )
    return "\n\n".join(out)


def _span(scan: Scan, query: str, group: str) -> str:
    return " → ".join(_fmt(*(scan.row_mass(m, "unmasked", query, group, scan.trained).mean() for m in MODELS)))


def _groups(d: dict) -> str:
    return ", ".join(f"{g} {v}" for g, v in zip(d, _fmt(*d.values(), signed=True)))
