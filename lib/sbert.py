"""SBERT (bi-encoder) baselines over the same backbone as the cross-encoder, with sentence-transformers.

Each text is encoded on its own (Transformer + mean Pooling); the entity is made visible to the
sentence encoder by marker tokens around its span. Objectives come from sentence-transformers:
- SoftmaxLoss: a linear classifier over (u, v, |u - v|), v = the entity, a fixed dummy text, or
  (cacheable variant) u = the plain sentence without markers;
- CosineSimilarityLoss: pull a sentence towards a 'positive' / 'negative' anchor text (retrieval);
and the best-F1 threshold search is BinaryClassificationEvaluator's. Fold models are trained on the
same folds, seed and frozen layers as lib.training and their outputs cached like its fold artifacts.

Beside them, a pretrained bi-encoder used as its model card prescribes, without fine-tuning:
multilingual-e5-small with the "query: " prefix on every text, mean pooling over all tokens and L2
normalisation, as frozen features for a logistic regression (`e5_encoder`, `frozen_lr_folds`).
Then the chapter's bookkeeping: predictions per variant (`collect`), scores and the OOF choice of
the best bi-encoder, the budget plan of which variants to fine-tune, figures and the answer text.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import column_merging_disabled
from sentence_transformers.sentence_transformer.evaluation import BinaryClassificationEvaluator
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, SoftmaxLoss
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from sentence_transformers.util import batch_to_device, cos_sim
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import backbones, cache
from . import model as hm
from .backbones import backbone_sentences
from .config import LABEL2ID, LABELS, TrainConfig
from .training import batches, data_digest, param_groups, pick_device, seed_everything

MARKERS = ("<e>", "</e>")
DUMMY = "<dummy>"  # the fixed second text of the 'pair with a dummy token' trick
ANCHORS = {-1: "плохо", 1: "хорошо"}  # 'bad' / 'good': ordinary words, so pretrained vectors carry meaning
POLAR = (-1, 1)  # column order of every (n, 2) per-class score matrix
# variant -> (objective, what the two texts are), in priority order: where the time budget allows
# fewer fine-tuned variants, the first ones are kept (`plan`)
VARIANTS = {
    "softmax-entity": ("softmax", "entity"),  # u = marked sentence, v = entity string: the standard SBERT set-up
    "softmax-plain": (
        "softmax",
        "plain",
    ),  # u = sentence without markers (cacheable), v = entity: what bi-encoders are for
    "softmax-dummy": ("softmax", "dummy"),  # u = marked sentence, v = DUMMY: the trick reported for reviews
    "cosine-anchors": ("cosine", "anchors"),  # u = marked sentence, v = ANCHORS[-1] / ANCHORS[1]: two pairs per row
}
PAIRS_PER_ROW = {"softmax": 1, "cosine": len(POLAR)}


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


def tokens(model: SentenceTransformer, text: str) -> list[str]:
    """The model's tokens of `text`, special tokens included, untruncated."""
    return model[0].tokenizer.backend_tokenizer.encode(text).tokens


def marking_examples(model: SentenceTransformer, df: pd.DataFrame, n: int = 3, show: int = 30) -> pd.DataFrame:
    """Up to n rows of the sentence with the most entities: label, marked text, its first tokens."""
    ex = df[df["sentence"] == df["sentence"].value_counts().index[0]].head(n)
    return pd.DataFrame(
        {
            "label": ex["label"].to_numpy(),
            "marked": marked(ex),
            "tokens": [" ".join(tokens(model, t)[:show]) for t in marked(ex)],
        }
    )


def truncated_share(model: SentenceTransformer, df: pd.DataFrame, max_length: int) -> float:
    """Share of rows whose closing marker falls beyond `max_length` tokens (truncated away)."""
    return float(np.mean([MARKERS[1] not in tokens(model, t)[: max_length - 1] for t in marked(df)]))


# --- model --------------------------------------------------------------------------------------


def build(backbone_path: str, cfg: TrainConfig, device="cpu") -> SentenceTransformer:
    """Transformer + mean Pooling over the backbone, with MARKERS and DUMMY added to the vocabulary;
    `cfg.freeze_embeddings` / `cfg.freeze_layers` freeze what they freeze in the cross-encoder."""
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
    # as HamamModel does: same backbone, same trainable parameters, so the same cost per token. With
    # frozen layers the embeddings are frozen too, so the marker vectors stay as drawn above
    if cfg.freeze_embeddings:
        emb.weight.requires_grad_(False)
    if cfg.freeze_layers:
        hm.freeze_lower(tr.auto_model, cfg.freeze_layers)
    return SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean")], device=str(device))


def make_loss(model: SentenceTransformer, objective: str, cfg: TrainConfig):
    if objective == "softmax":  # default features (u, v, |u - v|); the cross-encoder's class weights
        dim = model.get_embedding_dimension()
        return SoftmaxLoss(model, dim, num_labels=len(LABELS), loss_fct=hm.loss_fn(cfg.neutral_weight).to(model.device))
    if objective == "cosine":
        return CosineSimilarityLoss(model)
    raise ValueError(f"unknown objective {objective!r}")


def fit(
    loss, a: list[str], b: list[str], labels, cfg: TrainConfig, epochs: int, batch_size: int, desc: str = "sbert"
) -> list[float]:
    """AdamW + warm-up/linear decay + clipping over (a, b, label) batches; returns the step losses.

    A short loop instead of SentenceTransformerTrainer, which needs `datasets` and `accelerate`
    (not in requirements.txt); model, loss and preprocessing are sentence-transformers' own.
    """
    model = loss.model
    enc = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    own = [
        p for n, p in loss.named_parameters() if p.requires_grad and not n.startswith("model.")
    ]  # the loss's classifier
    opt = torch.optim.AdamW(param_groups(enc, own, cfg))
    rng = np.random.default_rng(cfg.seed)
    lengths = [len(t) for t in a]  # characters: a cheap proxy for token length when bucketing
    plan = list(
        itertools.chain.from_iterable(batches(lengths, batch_size, True, cfg.bucket, rng) for _ in range(epochs))
    )
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * len(plan)), len(plan))
    y = torch.as_tensor(np.asarray(labels))
    history = []
    loss.train()
    # one forward per column: merging pads the short second texts to the sentences' width
    with column_merging_disabled():
        for idx in tqdm(plan, desc=desc, leave=False, disable=None):
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
    f1, _, _, threshold = BinaryClassificationEvaluator.find_best_f1_and_threshold(
        np.asarray(scores), np.asarray(y_binary, dtype=int), True
    )
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


# the code that decides what an SBERT fold model outputs (lib.cache digests it without docstrings)
TRAINING_CODE = (
    "lib.sbert:mark",
    "lib.sbert:marked",
    "lib.sbert:pair_texts",
    "lib.sbert:anchor_pairs",
    "lib.sbert:build",
    "lib.sbert:make_loss",
    "lib.sbert:fit",
    "lib.sbert:embed",
    "lib.sbert:pair_features",
    "lib.sbert:softmax_logits",
    "lib.sbert:anchor_scores",
    "lib.sbert:train_fold",
    "lib.training:batches",
    "lib.training:param_groups",
    "lib.training:seed_everything",
    "lib.model:freeze_lower",
    "lib.model:loss_fn",
    "lib.model:label_weights",
    "lib.model:class_weights",
)
SBERT_FIELDS = (
    "backbone",
    "max_length",
    "neutral_weight",
    "freeze_layers",
    "lr",
    "head_lr",
    "weight_decay",
    "warmup_ratio",
    "grad_clip",
    "bucket",
    "seed",
)  # the TrainConfig fields an SBERT model reads


def sbert_key(cfg: TrainConfig, data: dict, variant: str, epochs: int, batch_size: int, backbone: str) -> str:
    """The fields it reads, the variant, the schedule, the texts' constants, the data, the backbone build's
    content digest and the training code."""
    fields = {f: getattr(cfg, f) for f in SBERT_FIELDS}
    consts = [variant, VARIANTS[variant], PAIRS_PER_ROW, epochs, batch_size, MARKERS, DUMMY, ANCHORS]
    return cache.key(
        fields, consts, data_digest(data), backbones.content_digest(backbone), cache.code_digest(*TRAINING_CODE)
    )


@dataclass(frozen=True)
class SbertJob:
    """One fold of one SBERT run of the plan (an executor job, like lib.training.FoldJob)."""

    cfg: TrainConfig
    variant: str
    backbone: str
    fold: int
    fold_dir: str
    key: str
    epochs: int
    batch_size: int
    force: bool = False

    def __str__(self) -> str:
        return f"fold {self.fold} (sbert {self.variant})"

    def is_done(self) -> bool:
        return not self.force and cache.is_complete(Path(self.fold_dir), self.key)

    def execute(self, data: dict, device: str) -> None:
        train_fold(self, data, pick_device(device))


def read_folds(root: Path, train: pd.DataFrame, folds) -> dict:
    """One SBERT run's folds: oof (NaN outside `folds`), validation outputs per fold model (n_folds, n, d), seconds
    and training pairs seen per fold; d = 3 logits or 2 anchor cosines."""
    oof, vals, seconds, examples = None, [], [], []
    for k in folds:
        z = np.load(Path(root) / f"fold{k}" / "outputs.npz")
        if oof is None:
            oof = np.full((len(train), z["oof"].shape[1]), np.nan, dtype=np.float32)
        oof[train["fold"].to_numpy() == k] = z["oof"]
        vals.append(z["validation"])
        seconds.append(float(z["seconds"]))
        examples.append(int(z["examples"]))
    return {"oof": oof, "validation": np.stack(vals), "seconds": seconds, "examples": examples, "root": root}


def train_fold(job: SbertJob, data: dict, device) -> None:
    objective, second = VARIANTS[job.variant]
    cfg, k = job.cfg, job.fold
    train, val = data["train"], data["validation"]
    held = train["fold"].to_numpy() == k
    path = Path(job.fold_dir)
    path.mkdir(parents=True, exist_ok=True)
    cache.invalidate(path)
    t0 = time.perf_counter()
    model = build(job.backbone, cfg, device)
    loss = make_loss(model, objective, cfg)
    desc = f"{job.variant} fold {k}"
    if objective == "softmax":
        a, b = pair_texts(train[~held], second)
        y = [LABEL2ID[int(v)] for v in train[~held]["label"]]
        history = fit(loss, a, b, y, cfg, job.epochs, job.batch_size, desc=desc)
        out = {
            s: softmax_logits(loss, *pair_texts(df, second)) for s, df in (("oof", train[held]), ("validation", val))
        }
    else:
        a, b, y = anchor_pairs(train[~held])
        history = fit(loss, a, b, y, cfg, job.epochs, job.batch_size, desc=desc)
        out = {s: anchor_scores(model, marked(df)) for s, df in (("oof", train[held]), ("validation", val))}
    seconds = time.perf_counter() - t0
    np.savez(path / "outputs.npz", **out, history=np.asarray(history), seconds=seconds, examples=job.epochs * len(a))
    cache.write_meta(path, job.key, variant=job.variant, fold=k, seconds=seconds)


# --- a pretrained bi-encoder, used as its model card prescribes ----------------------------------

E5_PROMPT = "query: "  # multilingual-e5's card: prefix "query: " to every text for classification and symmetric tasks
E5_MAX_LENGTH = 512  # the card's max_length


def e5_corpus(data: dict) -> list[str]:
    """What the prescribed e5-small build is trimmed to: the corpus (as for fine-tuning) plus every
    sentence and entity with the prompt in front. The trimmed vocabulary keeps every piece the full
    vocabulary uses on these texts, so they tokenise exactly as with the full one; the fine-tuning
    build, trimmed to the corpus only, would split "query:" into single letters."""
    return backbone_sentences("e5-small", data) + [
        E5_PROMPT + t for df in data.values() for col in ("sentence", "entity") for t in df[col]
    ]


def e5_encoder(path: str, device="cpu", max_length: int = E5_MAX_LENGTH) -> SentenceTransformer:
    """Transformer + mean Pooling over all tokens (prompt included) + L2 normalisation, with
    "query: " as the default prompt: `encode`/`embed` put it in front of every text."""
    import logging

    tr = Transformer(path, max_seq_length=max_length)
    # the default prompt is the point here: its "Default prompt name is set to ..." warning says nothing new
    log = logging.getLogger("sentence_transformers.base.model")
    level, _ = log.level, log.setLevel(logging.ERROR)
    try:
        return SentenceTransformer(
            modules=[tr, Pooling(tr.get_embedding_dimension(), "mean"), Normalize()],
            device=str(device),
            prompts={"query": E5_PROMPT},
            default_prompt_name="query",
        )
    finally:
        log.setLevel(level)


def pair_matrix(model: SentenceTransformer, df: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """(u, v, |u - v|) per row with u = the plain sentence, v = the entity string: a pretrained
    encoder has no marker tokens, and a plain sentence's embedding can be cached."""
    u, v = pair_texts(df, "plain")
    return pair_features(embed(model, u, batch_size), embed(model, v, batch_size)).cpu().numpy()


def frozen_lr_folds(
    x_train: np.ndarray, train: pd.DataFrame, x_val: np.ndarray, folds, neutral_weight: float, seed: int = 0
) -> dict:
    """One `frozen_logreg` per fold, fitted on the other folds' rows: OOF probabilities (NaN outside
    `folds`) and validation probabilities averaged over the fold models. Columns are LABELS."""
    y, fold = train["label"].to_numpy(), train["fold"].to_numpy()
    oof, vals = np.full((len(train), len(LABELS)), np.nan), []
    for k in folds:
        clf = frozen_logreg(x_train[fold != k], y[fold != k], neutral_weight, seed)
        assert tuple(clf.classes_) == tuple(LABELS)
        oof[fold == k] = clf.predict_proba(x_train[fold == k])
        vals.append(clf.predict_proba(x_val))
    return {"oof": oof, "validation": np.mean(vals, axis=0)}


# --- predictions per model ----------------------------------------------------------------------
