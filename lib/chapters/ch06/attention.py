"""Where the encoder looks (notebook 06), the computation: a sentiment lexicon from the training data,
key-token groups, attention mass per layer x head, input × gradient as an attention-free check, the
scan over validation rows and its statistics. The chapter's figures, tables and answer text are in
`lib.chapters.ch06.report`.

Every key token falls in exactly one group, in this order of precedence:
  entity    - the tokens `lib.model.encode` marks (same offset mapping, same window as the model)
  special   - [CLS], [SEP] (or the tokenizer's equivalents, <s> and </s>); padding belongs to no group
  sentiment - tokens whose word (the word their first non-space character lies in), lowercased, is in
              the lexicon
  other     - everything else
Queries: the first token ([CLS]) and the entity tokens (their attention rows averaged).
Layers and heads are numbered from 1 in every table, figure and text this module and the report make.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ... import model as hm
from ...metrics import draw_resamples, sentence_groups
from ...training import batches, collate
from .lexicon import WORD, context_words, pos_tags, sentiment_lexicon  # noqa: F401  (re-exported)

GROUPS = ("entity", "special", "sentiment", "other")
QUERIES = ("cls", "entity")
MODELS = ("initial", "fine-tuned")
COPIES = ("unmasked", "masked")
CONDITIONS = tuple((m, c) for m in MODELS for c in COPIES)
CONTEXT = ("sentiment", "other")  # the words around the entity
PAD_GROUP = -1


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
            keep = hm.window(hm.entity_token_mask(offsets, special, int(starts[i]), int(ends[i])), special, max_length)
        if [full["input_ids"][i][j] for j in keep] != ex["input_ids"]:
            raise AssertionError("token groups out of step with lib.model.encode")
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
            groups.append(0 if ent else 1 if special[j] else 2 if b > a and word_at[a] in lexicon else 3)
        ex["groups"] = groups
    return encoded


def collate_groups(examples: list[dict], pad_id: int) -> dict:
    """`lib.training.collate` plus the group ids, padded with PAD_GROUP."""
    x = collate(examples, pad_id)
    g = torch.full(x["input_ids"].shape, PAD_GROUP, dtype=torch.long)
    for i, e in enumerate(examples):
        g[i, : len(e["groups"])] = torch.tensor(e["groups"])
    x["groups"] = g
    return x


# --- attention and attribution ------------------------------------------------------------------


def forward_attentions(model: hm.HamamModel, x: dict, mode: str):
    """(logits, attentions as (B, L, H, T, T)) for one of the two single-copy modes, on the model's device."""
    if mode not in COPIES:
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
    """Attention mass per group: (B, L, H, T, T) -> (B, L, H, len(QUERIES), len(GROUPS)). A query row
    sums to 1 over the real (unpadded) keys and every real key is in one group, so a query's masses sum to 1."""
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


def analyse(model, examples: list[dict], pad_id: int, mode: str, batch_size=32, desc=None, attribution=True) -> dict:
    """One pass over the examples (length-bucketed, dynamic padding). Per row:

    masses      (N, L, H, 2, 4)  attention mass from each query to each group, per layer and head
    attribution (N, 4)           share of |input × gradient| on each group
    tokens      (N, 4)           share of the row's tokens in each group (uniform-attention baseline)
    spearman    (N, 2)           last layer, head mean: rank correlation of the CLS / entity attention
                                 row with |input × gradient| over the context tokens (sentiment + other)
    pred        (N,)             predicted label of this copy

    `attribution=False` skips the backward pass (about 4x cheaper on a CPU): attribution and
    spearman are then NaN.
    """
    model.eval()
    order = batches([len(e["input_ids"]) for e in examples], batch_size, shuffle=False, bucket=True)
    out = None
    for b in tqdm(order, desc=desc or mode, leave=False, disable=None):
        x = collate_groups([examples[i] for i in b], pad_id)
        if attribution:
            attr, logits, att = input_x_gradient(model, x, mode)
        else:
            with torch.no_grad():
                logits, att = (t.cpu() for t in forward_attentions(model, x, mode))
        groups, onehot = x["groups"], group_onehot(x["groups"])
        part = {
            "masses": group_masses(att, groups, x["entity_mask"]).numpy(),
            "attribution": np.full((len(b), len(GROUPS)), np.nan, dtype=np.float32),
            "tokens": (onehot.sum(1) / onehot.sum((1, 2)).unsqueeze(-1)).numpy(),
            "spearman": np.full((len(b), len(QUERIES)), np.nan),
            "pred": np.asarray(hm.LABELS)[logits.argmax(-1).numpy()],
        }
        if attribution:
            rows = query_rows(att[:, -1].mean(1), x["entity_mask"])  # (B, 2, T): last layer, heads averaged
            ctx = groups >= GROUPS.index("sentiment")
            part["spearman"] = np.array(
                [[rank_corr(rows[i, q][ctx[i]], attr[i][ctx[i]]) for q in range(len(QUERIES))] for i in range(len(b))]
            )
            share = torch.einsum("bt,btg->bg", attr, onehot) / attr.sum(1, keepdim=True).clamp(min=1e-12)
            part["attribution"] = share.numpy()
        if out is None:
            out = {k: np.zeros((len(examples),) + v.shape[1:], dtype=v.dtype) for k, v in part.items()}
        for k, v in part.items():
            out[k][b] = v
    return out


def rank_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two token vectors; NaN under 3 tokens or when either is constant."""
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def masses_frame(results: dict) -> pd.DataFrame:
    """{(model, mode): analyse(...)} -> long table of mean mass per model, mode, query, layer, head, group
    (layers and heads numbered from 1)."""
    frames = []
    for (name, mode), r in results.items():
        m = r["masses"]  # (N, L, H, Q, G)
        names = ["layer", "head", "query", "group"]
        idx = pd.MultiIndex.from_product(
            [range(1, m.shape[1] + 1), range(1, m.shape[2] + 1), QUERIES, GROUPS], names=names
        )
        data = {"mass": m.mean(0).ravel(), "sd": m.std(0).ravel(), "n": len(m)}
        frames.append(pd.DataFrame(data, index=idx).reset_index().assign(model=name, mode=mode))
    return pd.concat(frames, ignore_index=True)[["model", "mode", "query", "group", "layer", "head", "mass", "sd", "n"]]


# --- the chapter's two models and the scan over validation rows ------------------------------------


def load_models(backbone_dir, checkpoint_dir, cfg, device="cpu") -> tuple[dict, object]:
    """({"initial": the backbone fine-tuning started from, "fine-tuned": the saved checkpoint},
    tokenizer), both models in eval mode with eager attention (the only kind that returns weights).

    The initial model's head is new and random (seeded with `cfg.seed`): it plays no part in
    attention, and its input × gradient would explain a random decision."""
    torch.manual_seed(cfg.seed)
    initial, tok0 = hm.build(str(backbone_dir), cfg, attn_implementation="eager")
    tuned, tok = hm.load(checkpoint_dir, attn_implementation="eager")
    if tok0.get_vocab() != tok.get_vocab():
        raise ValueError("initial and fine-tuned tokenizers differ")
    return {"initial": initial.to(device).eval(), "fine-tuned": tuned.to(device).eval()}, tok


def encoder_shape(model: hm.HamamModel) -> tuple[int, int]:
    """(layers, heads per layer) of the model's encoder."""
    cfg = model.encoder.config
    return cfg.num_hidden_layers, cfg.num_attention_heads


def sample_rows(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of `k` of `n` rows drawn without replacement (all rows when k is None)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


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
        self.shape: tuple[int, int] = tuple(next(iter(self.results.values()))["masses"].shape[1:3])
        self.trained = list(range(self.freeze + 1, self.shape[0] + 1))  # layers fine-tuning could change
        self.frozen = list(range(1, self.freeze + 1))
        self.groups = sentence_groups(self.rows)  # sentence clusters, for the bootstrap

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


def run_scan(models: dict, examples, pad_id: int, rows, freeze=0, attribution=("fine-tuned",), batch_size=32) -> Scan:
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


# --- statistics ------------------------------------------------------------------------------------


def head_gain(scan: Scan, query: str, group: str, mode: str = "unmasked", layers=None) -> dict:
    """Fine-tuned − initial mean mass per head of the given layers (the trained ones when None): how
    many of the `n` heads gain, the head that gains most (the maximum of `n` changes, so it overstates a
    typical head) with its masses before and after, and the head whose mass changed most in either direction."""
    layers = scan.trained if layers is None else layers
    before = scan.grid("initial", mode, query, group).loc[layers]
    after = scan.grid("fine-tuned", mode, query, group).loc[layers]
    d = after - before
    layer, head = d.stack().idxmax()
    up, n, gain = int((d > 0).to_numpy().sum()), d.size, float(d.loc[layer, head])
    b, a = float(before.loc[layer, head]), float(after.loc[layer, head])
    big_layer, big_head = d.abs().stack().idxmax()  # the largest change in either direction
    return {
        "up": up,
        "n": n,
        "layer": int(layer),
        "head": int(head),
        "before": b,
        "after": a,
        "gain": gain,
        "abs_layer": int(big_layer),
        "abs_head": int(big_head),
        "abs_change": float(d.loc[big_layer, big_head]),
    }


def agreement(scan: Scan) -> pd.DataFrame:
    """Per condition and group: token share, last-layer attention from [CLS] and from the entity
    (heads averaged) and the input × gradient share (NaN where it was not computed)."""
    rows = []
    for (m, mode), r in scan.results.items():
        last = r["masses"][:, -1].mean((0, 1))  # (query, group): every row has all heads
        for gi, g in enumerate(GROUPS):
            rows.append((m, mode, g, r["tokens"][:, gi].mean(), *last[:, gi], r["attribution"][:, gi].mean()))
    cols = ["model", "mode", "group", "token share", "attention from [CLS], last layer"]
    cols += ["attention from entity, last layer", "input × gradient"]
    return pd.DataFrame(rows, columns=cols).set_index(cols[:3])


def spearman_long(scan: Scan) -> pd.DataFrame:
    """Per row and query: Spearman(last-layer attention row, |input × gradient|) over context tokens."""
    parts = [
        pd.DataFrame({"model": m, "mode": mode, "query": q, "spearman": r["spearman"][:, qi]})
        for (m, mode), r in scan.results.items()
        for qi, q in enumerate(QUERIES)
    ]
    return pd.concat(parts, ignore_index=True).dropna()


def spearman_summary(scan: Scan) -> pd.DataFrame:
    """`spearman_long` per model, copy and query: rows, median, share of positive correlations."""
    sp = spearman_long(scan)
    return sp.groupby(["model", "mode", "query"], sort=False)["spearman"].agg(
        rows="size", median="median", share_positive=lambda s: (s > 0).mean()
    )


def sentiment_by_label(scan: Scan) -> pd.DataFrame:
    """Last-layer mass on sentiment words (heads averaged) by the row's true label, per condition and
    query, with the uniform-attention baseline (token share) as the last row."""
    names = {-1: "negative", 0: "neutral", 1: "positive"}
    labels = scan.rows["label"].to_numpy()
    present, last = [lab for lab in (-1, 0, 1) if (labels == lab).any()], [scan.shape[0]]
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
        keys = ["model", "mode", "query", "group", "layer", "head"]
        d = scan.table[scan.table["layer"] <= scan.freeze].set_index(keys)["mass"]
        num["06.frozen_layers.max_abs_change"] = [float((d[ft] - d[init]).abs().max())]
    shift = {
        m: scan.row_mass(m, "masked", "entity", CONTEXT) - scan.row_mass(m, "unmasked", "entity", CONTEXT)
        for m in MODELS
    }
    key = "06.masked_minus_unmasked.entity_to_context"
    num[f"{key}.finetuned"] = cluster_mean(shift[ft], g, n_boot)
    num[f"{key}.initial"] = cluster_mean(shift[init], g, n_boot)
    num[f"{key}.finetuned_minus_initial"] = cluster_mean(shift[ft] - shift[init], g, n_boot)
    sent = scan.row_mass(ft, "masked", "entity", "sentiment") - scan.row_mass(ft, "unmasked", "entity", "sentiment")
    num["06.masked_minus_unmasked.entity_to_sentiment.finetuned"] = cluster_mean(sent, g, n_boot)
    attr = scan.results[ft, "unmasked"]["attribution"]
    if np.isfinite(attr).all():
        for grp in ("entity", "sentiment"):
            num[f"06.attribution.{grp}_share.finetuned"] = cluster_mean(attr[:, GROUPS.index(grp)], g, n_boot)
        rho = scan.results[ft, "unmasked"]["spearman"][:, QUERIES.index("entity")]
        num["06.spearman_entity_last_layer.finetuned.median"] = [float(np.nanmedian(rho))]
    share = scan.results[ft, "unmasked"]["tokens"][:, GROUPS.index("sentiment")]
    num["06.uniform.sentiment_share"] = [float(share.mean())]
    return num | head_numbers(scan)


# the flows whose heads the answer reads (query, group, copy): fine-tuned - initial per head of the trained layers
HEAD_FLOWS = (
    ("cls", "entity", "unmasked"),
    ("entity", "entity", "unmasked"),
    ("entity", "sentiment", "unmasked"),
    ("cls", "sentiment", "unmasked"),
    ("entity", "sentiment", "masked"),
)


def head_numbers(scan: Scan) -> dict:
    """Head-level results.json entries for every flow the answer reads: heads that gain (of how many), the
    largest gain and the largest change in either direction, each with its layer and head (1-based)."""
    num = {}
    for query, group, mode in HEAD_FLOWS:
        h = head_gain(scan, query, group, mode)
        key = f"06.heads.{query}_to_{group}" + ("" if mode == "unmasked" else f".{mode}")
        num |= {
            f"{key}.gaining": [h["up"]],
            f"{key}.of": [h["n"]],
            f"{key}.largest_gain": [h["gain"]],
            f"{key}.largest_gain_at": [h["layer"], h["head"]],
            f"{key}.largest_change": [h["abs_change"]],
            f"{key}.largest_change_at": [h["abs_layer"], h["abs_head"]],
        }
    return num
