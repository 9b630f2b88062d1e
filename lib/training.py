"""Training: one model (AdamW, warm-up + linear decay, clipping, early stopping on held-out F1pn), one fold
job with its cached directory (`lib.cache`), and reading k folds back. Which runs exist is `lib.plan`'s.
"""

from __future__ import annotations

import copy
import hashlib
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import backbones, cache, losses
from . import model as hm
from .config import LABEL2ID, LABELS, TrainConfig
from .device import autocast, hardware, pick_device, resolve_precision, versions  # noqa: F401  (re-exported)
from .metrics import f1pn, to_labels

SPLITS_PREDICTED = ("validation", "final")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- batches ------------------------------------------------------------------------------------


def batches(lengths, batch_size: int, shuffle: bool, bucket: bool, rng: np.random.Generator | None = None, groups=None):
    """Index lists. Bucketing sorts by length inside shuffled chunks of 50 batches, so a batch pads
    to similar lengths yet the order of batches stays random. With `groups` (sentence ids) the
    shuffle moves whole groups, so rows of one sentence sit side by side and mostly share a batch."""
    idx = np.arange(len(lengths))
    if groups is not None:
        codes, _ = pd.factorize(pd.Series(list(groups)))
        order = rng.permutation(codes.max() + 1) if shuffle else np.arange(codes.max() + 1)
        idx = np.lexsort((idx, order[codes]))  # groups in (random) order, rows of a group together
    elif shuffle:
        rng.shuffle(idx)
    if bucket:
        chunk = batch_size * 50
        lengths = np.asarray(lengths)
        idx = np.concatenate(
            [c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(idx, max(1, -(-len(idx) // chunk)))]
        )
    out = [idx[i : i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    if shuffle and bucket:
        rng.shuffle(out)
    return out


def collate(examples: list[dict], pad_id: int, pad_to: int | None = None, labels=None) -> dict:
    """Dynamic padding to the longest example, or to `pad_to` (the fixed-length baseline)."""
    width = pad_to or max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    ent = torch.zeros((len(examples), width), dtype=torch.long)
    tt = torch.zeros((len(examples), width), dtype=torch.long) if "token_type_ids" in examples[0] else None
    men = torch.zeros((len(examples), width), dtype=torch.long) if "mention_mask" in examples[0] else None
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], att[i, :n], ent[i, :n] = torch.tensor(e["input_ids"]), 1, torch.tensor(e["entity_mask"])
        if tt is not None:
            tt[i, :n] = torch.tensor(e["token_type_ids"])
        if men is not None:
            men[i, :n] = torch.tensor(e["mention_mask"])
    out = {"input_ids": ids, "attention_mask": att, "entity_mask": ent}
    if tt is not None:
        out["token_type_ids"] = tt
    if men is not None:
        out["mention_mask"] = men
    if labels is not None:
        out["labels"] = torch.tensor([LABEL2ID[int(y)] for y in labels], dtype=torch.long)
    return out


def encode_df(tokenizer, df: pd.DataFrame, cfg: TrainConfig) -> list[dict]:
    ents = df["entity"] if cfg.pooling == "cls" else None
    return hm.encode(
        tokenizer,
        df["sentence"],
        df["start"],
        df["end"],
        cfg.max_length,
        entities=ents,
        mask_mentions=cfg.mask_mentions,
    )


@torch.no_grad()
def predict(
    model: hm.HamamModel,
    encoded: list[dict],
    pad_id: int,
    device,
    batch_size: int = 64,
    mode=None,
    precision: str = "fp32",
) -> np.ndarray:
    model.eval()
    same = (
        [tuple(e["input_ids"]) for e in encoded] if model.cfg.group_sentences else None
    )  # identical rows side by side
    order = batches([len(e["input_ids"]) for e in encoded], batch_size, shuffle=False, bucket=True, groups=same)
    out = np.zeros((len(encoded), len(hm.LABELS)), dtype=np.float32)
    for b in order:
        x = {k: v.to(device) for k, v in collate([encoded[i] for i in b], pad_id).items()}
        with autocast(device, precision):
            out[b] = model(**x, mode=mode).float().cpu().numpy()
    return out


# --- one fold -----------------------------------------------------------------------------------


def param_groups(
    encoder: list[tuple[str, torch.nn.Parameter]], head: list[torch.nn.Parameter], cfg: TrainConfig
) -> list[dict]:
    """AdamW groups: the encoder at `lr` (no weight decay on biases and norms), the new head at `head_lr`."""
    no_decay = {n for n, _ in encoder if n.endswith("bias") or "norm" in n.lower()}
    groups = [
        {"params": [p for n, p in encoder if n not in no_decay], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in encoder if n in no_decay], "lr": cfg.lr, "weight_decay": 0.0},
        {"params": list(head), "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
    ]
    return [g for g in groups if g["params"]]


def optimiser_step(model, opt, scaler, parts, loss_fn, row_weight, device, precision, grad_clip, forward=None) -> float:
    """One optimiser step over one batch given as micro-batches (collated, on `device`, with "labels"); returns
    its loss. Autocast wraps each forward only. A weighted mean is a ratio of sums, so each micro-batch's loss
    is scaled by its share of the batch's row weight: k pieces give the update of one batch."""
    forward = model if forward is None else forward  # not `or`: a compiled module refuses bool()
    opt.zero_grad(set_to_none=True)
    total = sum(row_weight[x["labels"]].sum() for x in parts)
    step_loss = 0.0
    for x in parts:
        inputs = {k: v for k, v in x.items() if k != "labels"}
        with autocast(device, precision):
            out = forward(**inputs, raw=True)
        loss = loss_fn(out.float(), x["labels"]) * (row_weight[x["labels"]].sum() / total)
        scaler.scale(loss).backward()
        step_loss += loss.item()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return step_loss


def step_objective(cfg: TrainConfig, device):
    """(loss_fn, row_weight): the training loss and the per-class row weights that scale each micro-batch's
    share of the step (uniform for the two heads, whose loss weighs its own rows)."""
    loss_fn = losses.make(cfg.loss, cfg.neutral_weight, cfg.focal_gamma, polar_weight=cfg.polar_weight)
    row_weight = (losses.class_weights(cfg.neutral_weight) if cfg.loss != "two_head" else torch.ones(3)).to(device)
    return loss_fn, row_weight


def step_parts(enc, rows, y, pad_id, micro: int, device, pad_to=None) -> list[dict]:
    """One optimiser step's batch `rows`, as collated micro-batches of at most `micro` rows on `device`."""
    rows = np.asarray(rows)
    return [
        {k: v.to(device) for k, v in collate([enc[i] for i in part], pad_id, pad_to, y[part]).items()}
        for part in (rows[i : i + micro] for i in range(0, len(rows), micro))
    ]


@dataclass
class FoldRun:
    history: list[dict] = field(default_factory=list)  # one row per held-out evaluation
    step_loss: list[float] = field(default_factory=list)  # training loss at every optimisation step
    best_step: int = 0
    best_f1pn: float = -1.0
    seconds: float = 0.0  # wall time of the whole run, held-out evaluations included
    eval_seconds: float = 0.0
    steps: int = 0
    train_examples: int = 0
    precision: str = "fp32"  # what `auto` resolved to on the machine that trained it
    frozen_cached: bool = False  # frozen layers' outputs computed once per distinct input (HamamModel.cache_frozen)


def selection_score(cfg: TrainConfig, y, logits) -> float:
    """Held-out F1pn that early stopping maximises, under the model's own decision rule: argmax for the
    three-class losses; for the two heads, the identify head's rule (polar when p(polar) > t) at its best t
    on these rows (argmax over their 3-class log-probabilities calls a row polar only above t = 0.5-0.67)."""
    if cfg.loss != "two_head":
        return f1pn(y, to_labels(logits))
    return max(f1pn(y, losses.polar_rule(logits, t)) for t in np.linspace(0.05, 0.95, 19))


def inner_split(df: pd.DataFrame, share: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows held back for early stopping: whole sentences, seeded, ~`share` of rows."""
    sentences = df["sentence"].unique()
    rng = np.random.default_rng(seed)
    n = int(round(share * len(sentences)))
    return (
        df["sentence"].isin(set(rng.choice(sentences, size=n, replace=False))).to_numpy()
        if n
        else np.zeros(len(df), bool)
    )


def train_model(
    cfg: TrainConfig, backbone_path: str, train_df, held_df, device, desc: str = "train", pad_to=None, max_steps=None
):
    """Fine-tune one HAMAM model, early-stopped on `held_df`; returns (best model, tokenizer, FoldRun).

    `held_df` decides the checkpoint, so its scores are optimistic: k-fold training passes an inner
    split of the training part here and keeps the fold's own held-out rows for one clean prediction.
    """
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    model, tok = hm.build(backbone_path, cfg)
    model.to(device)
    cached = model.cache_frozen(True)  # epochs after the first skip the frozen layers (same outputs every step)
    tr, held = encode_df(tok, train_df, cfg), encode_df(tok, held_df, cfg)
    y_tr, y_held = train_df["label"].to_numpy(), held_df["label"].to_numpy()
    groups = train_df["sentence"].to_numpy() if cfg.group_sentences else None
    rng = np.random.default_rng(cfg.seed)
    micro = cfg.batch_size // cfg.grad_accum_steps  # the paper's batch, reached in grad_accum_steps pieces
    steps_per_epoch = -(-len(tr) // cfg.batch_size)
    total = max_steps or steps_per_epoch * cfg.epochs
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups_opt = param_groups(
        [(n, p) for n, p in named if n.startswith("encoder.")], [p for n, p in named if n.startswith("head.")], cfg
    )
    opt = torch.optim.AdamW(groups_opt)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    loss_fn, row_weight = step_objective(cfg, device)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")

    run = FoldRun(precision=precision, frozen_cached=cached)
    best_state, bad, step, t0, running = None, 0, 0, time.perf_counter(), []
    bar = tqdm(total=total, desc=desc, leave=False, disable=None)  # terminals only, never on a page
    while step < total and bad < cfg.patience:
        for b in batches([len(e["input_ids"]) for e in tr], cfg.batch_size, True, cfg.bucket, rng, groups):
            model.train()
            parts = step_parts(tr, b, y_tr, tok.pad_token_id, micro, device, pad_to)
            step_loss = optimiser_step(model, opt, scaler, parts, loss_fn, row_weight, device, precision, cfg.grad_clip)
            sched.step()
            step += 1
            run.train_examples += len(b)
            run.step_loss.append(step_loss)
            running.append(step_loss)
            bar.update(1)
            if len(held) and (step % eval_every == 0 or step == total):
                t_eval = time.perf_counter()
                z_held = predict(model, held, tok.pad_token_id, device, precision=precision)
                score = selection_score(cfg, y_held, z_held)
                run.history.append(
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "train_loss": float(np.mean(running)),
                        "held_f1pn": score,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                running = []
                bar.set_postfix(f1pn=f"{score:.3f}")
                if score > run.best_f1pn:
                    run.best_f1pn, run.best_step, bad = score, step, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                run.eval_seconds += time.perf_counter() - t_eval
            if step >= total or bad >= cfg.patience:
                break
    bar.close()
    model.cache_frozen(False)  # free the cached outputs: predictions after training see each input once
    run.seconds, run.steps = time.perf_counter() - t0, step
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), tok, run


# --- k folds with an artifact cache --------------------------------------------------------------


def data_digest(data: dict) -> str:
    h = hashlib.sha1()
    for name in ("train", *SPLITS_PREDICTED):
        cols = [c for c in ("sentence", "entity", "start", "end", "label", "fold") if c in data[name]]
        h.update(pd.util.hash_pandas_object(data[name][cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:8]


# the code that decides what a fold model becomes (lib.cache digests it without docstrings)
TRAINING_CODE = (
    "lib.model",
    "lib.losses",
    "lib.training:seed_everything",
    "lib.training:batches",
    "lib.training:collate",
    "lib.training:encode_df",
    "lib.device:resolve_precision",
    "lib.device:autocast",
    "lib.training:predict",
    "lib.training:param_groups",
    "lib.training:inner_split",
    "lib.training:selection_score",
    "lib.training:step_objective",
    "lib.training:step_parts",
    "lib.training:train_model",
    "lib.training:optimiser_step",
    "lib.training:train_fold",
    "lib.metrics:f1pn",
    "lib.metrics:to_labels",
    "lib.metrics:_checked_logits",
    "lib.config:LABELS",  # the column order of every saved logit file
    "lib.config:LABEL2ID",
    "lib.training:SPLITS_PREDICTED",  # which splits a fold run predicts
)


def fold_key(cfg: TrainConfig, data: dict, backbone_path: str, device="auto") -> str:
    """The config, the precision it resolves to on `device` (`auto` is bf16 on one machine and fp32 on another:
    different models), the data (rows, labels, folds), the backbone's content digest and the training code.
    Library versions are recorded in done.json, not keyed (README, "Caching")."""
    precision = resolve_precision(cfg.precision, pick_device(str(device)))
    return cache.key(
        asdict(cfg),
        precision,
        data_digest(data),
        backbones.content_digest(backbone_path),
        cache.code_digest(*TRAINING_CODE),
    )


def run_dir(models: Path, cfg: TrainConfig, key: str) -> Path:
    """<models>/<backbone>-<mode>-<key>/fold<k>/."""
    name = Path(cfg.backbone).name if Path(cfg.backbone).is_dir() else cfg.backbone
    return Path(models) / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}-{cfg.mode}-{key}"


def fold_complete(fold_dir: Path, key: str, need_checkpoint: bool = False) -> bool:
    if need_checkpoint and not (Path(fold_dir) / "checkpoint" / hm.CONFIG_FILE).is_file():
        return False  # trained without a checkpoint (logits only); a later reader needs one
    return cache.is_complete(fold_dir, key)


@dataclass(frozen=True)
class FoldJob:
    """One fold of one HAMAM run: what an executor trains (in this process or as a Ray task)."""

    cfg: TrainConfig
    backbone: str  # resolved path or hub id
    fold: int
    fold_dir: str
    key: str
    save_checkpoint: bool = True
    force: bool = False  # retrain even if the fold directory is complete

    def __str__(self) -> str:
        return f"fold {self.fold} ({Path(self.cfg.backbone).name} {self.cfg.mode})"

    def is_done(self) -> bool:
        return not self.force and fold_complete(Path(self.fold_dir), self.key, self.save_checkpoint)

    def execute(self, data: dict, device: str) -> None:
        where, dev = Path(self.fold_dir), pick_device(device)
        train_fold(self.cfg, self.backbone, data, self.fold, where, dev, self.save_checkpoint, self.key)


@dataclass
class KFoldResult:
    cfg: TrainConfig
    folds: list[int]
    oof: np.ndarray  # (n_train, 3); NaN rows for folds not run
    logits: dict[str, np.ndarray]  # split -> (n_folds_run, n_rows, 3)
    runs: list[dict]  # per fold: history, step_loss, seconds, steps, ... from done.json
    root: Path

    def ensemble(self, split: str, folds=None) -> np.ndarray:
        """Mean of the fold models' logits (of `folds` only, when given)."""
        if folds is None:
            return self.logits[split].mean(0)
        missing = set(folds) - set(self.folds)
        if missing:
            raise ValueError(f"folds {sorted(missing)} were not run for {self.cfg.backbone} {self.cfg.mode}")
        return self.logits[split][[self.folds.index(k) for k in folds]].mean(0)

    def oof_rows(self, train: pd.DataFrame) -> np.ndarray:
        """Train rows whose fold was run (the rows `oof` covers)."""
        return np.isin(train["fold"].to_numpy(), self.folds)

    def checkpoint(self, fold: int) -> Path:
        return self.root / f"fold{fold}" / "checkpoint"


def read_kfold(cfg: TrainConfig, data: dict, root: Path, folds) -> KFoldResult:
    """Gather the fold directories under `root` (written by this process or by any worker)."""
    train = data["train"]
    oof = np.full((len(train), len(LABELS)), np.nan, dtype=np.float32)
    logits = {s: [] for s in SPLITS_PREDICTED}
    runs = []
    for k in folds:
        fold_dir = root / f"fold{k}"
        held = train["fold"].to_numpy() == k
        oof[held] = np.load(fold_dir / "logits_oof.npy")
        for s in SPLITS_PREDICTED:
            logits[s].append(np.load(fold_dir / f"logits_{s}.npy"))
        runs.append(cache.read_meta(fold_dir))
    return KFoldResult(cfg, list(folds), oof, {s: np.stack(v) for s, v in logits.items()}, runs, root)


def train_fold(cfg, backbone, data, k, fold_dir: Path, device, save_checkpoint: bool, key: str) -> None:
    """Early stopping looks only at an inner split of the training part; the held-out fold is
    predicted once by the chosen checkpoint, so OOF logits are really out of sample."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    cache.invalidate(fold_dir)
    train = data["train"]
    held = train["fold"].to_numpy() == k
    part = train[~held]
    inner = inner_split(part, cfg.inner_val, cfg.seed + k)
    model, tok, run = train_model(cfg, backbone, part[~inner], part[inner], device, desc=f"fold {k}")
    prec = run.precision
    np.save(
        fold_dir / "logits_oof.npy",
        predict(model, encode_df(tok, train[held], cfg), tok.pad_token_id, device, precision=prec),
    )
    for s in SPLITS_PREDICTED:
        enc = encode_df(tok, data[s], cfg)
        np.save(fold_dir / f"logits_{s}.npy", predict(model, enc, tok.pad_token_id, device, precision=prec))
    if save_checkpoint:
        hm.save(model, tok, fold_dir / "checkpoint")
    cache.write_meta(
        fold_dir,
        key,
        config=asdict(cfg),
        fold=k,
        backbone_path=backbone,
        backbone_digest=backbones.content_digest(backbone),
        inner_rows=int(inner.sum()),
        hardware=hardware(),
        **versions(),
        **asdict(run),
    )
