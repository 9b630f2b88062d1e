"""SBERT (bi-encoder) baselines over the same backbone as the cross-encoder, with sentence-transformers.

Each text is encoded on its own (Transformer + mean Pooling); the entity is made visible to the
sentence encoder by marker tokens around its span. Objectives come from sentence-transformers:
- SoftmaxLoss: a linear classifier over (u, v, |u - v|), v = the entity, a fixed dummy text, or
  (cacheable variant) u = the plain sentence without markers;
- CosineSimilarityLoss: pull a sentence towards a 'positive' / 'negative' anchor text (retrieval);
and the best-F1 threshold search is BinaryClassificationEvaluator's. Fold models are trained on the
same folds and seeds as lib.train and their outputs cached like its fold artifacts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import column_merging_disabled
from sentence_transformers.sentence_transformer.evaluation import BinaryClassificationEvaluator
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, SoftmaxLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from sentence_transformers.util import batch_to_device, cos_sim
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import model as hm
from .config import RunPaths, TrainConfig
from .train import batches, data_digest, param_groups, seed_everything

MARKERS = ("<e>", "</e>")
DUMMY = "<dummy>"  # the fixed second text of the 'pair with a dummy token' trick
ANCHORS = {-1: "плохо", 1: "хорошо"}  # 'bad' / 'good': ordinary words, so pretrained vectors carry meaning
POLAR = (-1, 1)  # column order of every (n, 2) per-class score matrix
# variant -> (objective, what the two texts are)
VARIANTS = {
    "softmax-entity": ("softmax", "entity"),  # u = marked sentence, v = entity string
    "softmax-dummy": ("softmax", "dummy"),  # u = marked sentence, v = DUMMY
    "softmax-plain": ("softmax", "plain"),  # u = sentence without markers (cacheable), v = entity
    "cosine-anchors": ("cosine", "anchors"),  # u = marked sentence, v = ANCHORS[-1] / ANCHORS[1]
}


# --- texts --------------------------------------------------------------------------------------


def mark(sentence: str, start: int, end: int) -> str:
    """The sentence with marker tokens around [start, end): by offsets, so a repeated word is marked
    only at the row's occurrence."""
    if not 0 <= start < end <= len(sentence):
        raise ValueError(f"span [{start}, {end}) outside a sentence of {len(sentence)} characters")
    return f"{sentence[:start]}{MARKERS[0]}{sentence[start:end]}{MARKERS[1]}{sentence[end:]}"


def marked(df: pd.DataFrame) -> list[str]:
    return [mark(s, int(a), int(b)) for s, a, b in zip(df["sentence"], df["start"], df["end"])]


def pair_texts(df: pd.DataFrame, second: str) -> tuple[list[str], list[str]]:
    """(u texts, v texts) per row for the SoftmaxLoss variants."""
    if second == "entity":
        return marked(df), list(df["entity"])
    if second == "dummy":
        return marked(df), [DUMMY] * len(df)
    if second == "plain":
        return list(df["sentence"]), list(df["entity"])
    raise ValueError(f"unknown second text {second!r}")


def anchor_pairs(df: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """Every row against both anchors; target cosine 1 for its own sentiment's anchor, else 0."""
    u, y = marked(df), df["label"].to_numpy()
    a = [t for _ in POLAR for t in u]
    b = [ANCHORS[c] for c in POLAR for _ in u]
    target = np.concatenate([(y == c).astype(np.float32) for c in POLAR])
    return a, b, target


# --- model --------------------------------------------------------------------------------------


def build(backbone_path: str, cfg: TrainConfig, device="cpu") -> SentenceTransformer:
    """Transformer + mean Pooling over the backbone, with MARKERS and DUMMY added to the vocabulary."""
    seed_everything(cfg.seed)
    tr = Transformer(backbone_path, max_seq_length=cfg.max_length)
    n_old = len(tr.tokenizer)
    tr.tokenizer.add_tokens([*MARKERS, DUMMY])
    emb = tr.auto_model.resize_token_embeddings(len(tr.tokenizer), mean_resizing=False)
    with torch.no_grad():
        # transformers initialises new rows (near-)identically; markers must differ from each other
        # and from words, at the scale of the existing vectors (they stay fixed if embeddings are frozen)
        old = emb.weight[:n_old]
        emb.weight[n_old:] = torch.randn(len(tr.tokenizer) - n_old, old.shape[1]) * old.std() + old.mean(0)
    if cfg.freeze_embeddings:  # as HamamModel does: same backbone, same trainable parameters
        emb.weight.requires_grad_(False)
    return SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean")], device=str(device))


def make_loss(model: SentenceTransformer, objective: str, cfg: TrainConfig):
    if objective == "softmax":  # default features (u, v, |u - v|); the cross-encoder's class weights
        dim = model.get_embedding_dimension()
        return SoftmaxLoss(model, dim, num_labels=len(hm.LABELS), loss_fct=hm.loss_fn(cfg.neutral_weight).to(model.device))
    if objective == "cosine":
        return CosineSimilarityLoss(model)
    raise ValueError(f"unknown objective {objective!r}")


def fit(loss, a: list[str], b: list[str], labels, cfg: TrainConfig, epochs: int, batch_size: int, desc: str = "sbert") -> list[float]:
    """AdamW + warm-up/linear decay + clipping over (a, b, label) batches; returns the step losses.

    A short loop instead of SentenceTransformerTrainer, which needs `datasets` and `accelerate`
    (not in requirements.txt); model, loss and preprocessing are sentence-transformers' own.
    """
    model = loss.model
    enc = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    own = [p for n, p in loss.named_parameters() if p.requires_grad and not n.startswith("model.")]  # the loss's classifier
    opt = torch.optim.AdamW(param_groups(enc, own, cfg))
    rng = np.random.default_rng(cfg.seed)
    lengths = [len(t) for t in a]  # characters: a cheap proxy for token length when bucketing
    plan = list(itertools.chain.from_iterable(batches(lengths, batch_size, True, cfg.bucket, rng) for _ in range(epochs)))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * len(plan)), len(plan))
    y = torch.as_tensor(np.asarray(labels))
    history = []
    loss.train()
    # one forward per column: merging pads the short second texts to the sentences' width
    with column_merging_disabled():
        for idx in tqdm(plan, desc=desc, leave=False):
            feats = [batch_to_device(model.preprocess([t[i] for i in idx]), model.device) for t in (a, b)]
            value = loss(feats, y[idx].to(model.device))
            opt.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(loss.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            history.append(value.item())
    loss.eval()
    return history


# --- outputs ------------------------------------------------------------------------------------


@torch.no_grad()
def embed(model: SentenceTransformer, texts, batch_size: int = 64) -> torch.Tensor:
    """Embeddings per text; each distinct text is encoded once (repeated sentences, the dummy)."""
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    emb = model.encode(list(uniq), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return emb[torch.as_tensor(inverse, device=emb.device)]


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(u, v, |u - v|): SoftmaxLoss's classifier input with its default flags."""
    return torch.cat([u, v, (u - v).abs()], dim=1)


@torch.no_grad()
def softmax_logits(loss: SoftmaxLoss, a, b, batch_size: int = 64) -> np.ndarray:
    u, v = embed(loss.model, a, batch_size), embed(loss.model, b, batch_size)
    return loss.classifier(pair_features(u, v)).float().cpu().numpy()


@torch.no_grad()
def anchor_scores(model: SentenceTransformer, texts, batch_size: int = 64) -> np.ndarray:
    """(n, 2) cosine of each text to the POLAR anchors."""
    return cos_sim(embed(model, texts, batch_size), embed(model, [ANCHORS[c] for c in POLAR])).cpu().numpy()


def best_f1_threshold(scores, y_binary) -> tuple[float, float]:
    """(best F1, threshold) over every cut of the sorted scores; predict positive where score >= threshold."""
    f1, _, _, threshold = BinaryClassificationEvaluator.find_best_f1_and_threshold(np.asarray(scores), np.asarray(y_binary, dtype=int), True)
    return float(f1), float(threshold)


def polar_predict(scores: np.ndarray, thresholds) -> np.ndarray:
    """Three-class labels from per-class scores: a class fires at or above its threshold; if both
    fire, the larger margin wins; if none, neutral."""
    margin = np.asarray(scores) - np.asarray(thresholds)[None, :]
    pred = np.asarray(POLAR)[margin.argmax(1)]
    return np.where(margin.max(1) >= 0, pred, 0)


def frozen_logreg(x_train, y_train, neutral_weight: float, seed: int = 0):
    """Logistic regression on fixed embedding features, with the cross-encoder's neutral weight."""
    clf = LogisticRegression(C=1.0, max_iter=3000, class_weight=hm.label_weights(neutral_weight), random_state=seed)
    return make_pipeline(StandardScaler(), clf).fit(x_train, y_train)


# --- k folds with a cache -----------------------------------------------------------------------


def run_dir(profile, cfg: TrainConfig, data: dict, variant: str, epochs: int, batch_size: int) -> Path:
    blob = json.dumps([dataclasses.asdict(cfg), variant, epochs, batch_size, MARKERS, DUMMY, ANCHORS], sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return RunPaths(profile.name).models / f"sbert-{variant}-{key}-{data_digest(data)}"


def run_folds(profile, cfg: TrainConfig, data: dict, variant: str, backbone: str, folds, epochs: int, batch_size: int, force: bool = False, device="cpu") -> dict:
    """Train (or reuse) one SBERT model per fold; returns oof (NaN outside `folds`), validation
    outputs per fold model (n_folds, n, d) and seconds per fold. d = 3 logits or 2 anchor cosines."""
    objective, second = VARIANTS[variant]
    train, val = data["train"], data["validation"]
    root = run_dir(profile, cfg, data, variant, epochs, batch_size)
    oof, vals, seconds = None, [], []
    for k in tqdm(list(folds), desc=f"sbert {variant} folds", leave=False):
        path = root / f"fold{k}.npz"
        held = train["fold"].to_numpy() == k
        if force or not path.is_file():
            t0 = time.perf_counter()
            model = build(backbone, cfg, device)
            loss = make_loss(model, objective, cfg)
            if objective == "softmax":
                a, b = pair_texts(train[~held], second)
                y = [hm.LABEL2ID[int(v)] for v in train[~held]["label"]]
                history = fit(loss, a, b, y, cfg, epochs, batch_size, desc=f"{variant} fold {k}")
                out = {s: softmax_logits(loss, *pair_texts(df, second)) for s, df in (("oof", train[held]), ("validation", val))}
            else:
                a, b, y = anchor_pairs(train[~held])
                history = fit(loss, a, b, y, cfg, epochs, batch_size, desc=f"{variant} fold {k}")
                out = {s: anchor_scores(model, marked(df)) for s, df in (("oof", train[held]), ("validation", val))}
            root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.tmp.npz")
            np.savez(tmp, **out, history=np.asarray(history), seconds=time.perf_counter() - t0)
            os.replace(tmp, path)  # atomic: a half-written fold is never picked up
        z = np.load(path)
        if oof is None:
            oof = np.full((len(train), z["oof"].shape[1]), np.nan, dtype=np.float32)
        oof[held] = z["oof"]
        vals.append(z["validation"])
        seconds.append(float(z["seconds"]))
    return {"oof": oof, "validation": np.stack(vals), "seconds": seconds}
