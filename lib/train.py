"""Training: one fold (AdamW, warm-up + linear decay, clipping, early stopping on held-out F1pn),
and the k-fold driver with its artifact cache (a fold whose artifacts match the config is reused).
"""
from __future__ import annotations

import copy
import hashlib
import json
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

from . import backbones
from . import model as hm
from .config import Profile, RunPaths, TrainConfig
from .metrics import f1pn, to_labels

SPLITS_PREDICTED = ("validation", "final")
ARTIFACT_VERSION = 2  # bump when what a fold directory holds changes: older folds are retrained


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- batches ------------------------------------------------------------------------------------


def batches(lengths, batch_size: int, shuffle: bool, bucket: bool, rng: np.random.Generator | None = None):
    """Index lists. Bucketing sorts by length inside shuffled chunks of 50 batches, so a batch pads
    to similar lengths yet the order of batches stays random."""
    idx = np.arange(len(lengths))
    if shuffle:
        rng.shuffle(idx)
    if bucket:
        chunk = batch_size * 50
        lengths = np.asarray(lengths)
        idx = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(idx, max(1, -(-len(idx) // chunk)))])
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
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], att[i, :n], ent[i, :n] = torch.tensor(e["input_ids"]), 1, torch.tensor(e["entity_mask"])
    out = {"input_ids": ids, "attention_mask": att, "entity_mask": ent}
    if labels is not None:
        out["labels"] = torch.tensor([hm.LABEL2ID[int(y)] for y in labels], dtype=torch.long)
    return out


def encode_df(tokenizer, df: pd.DataFrame, cfg: TrainConfig) -> list[dict]:
    ents = df["entity"] if cfg.pooling == "cls" else None
    return hm.encode(tokenizer, df["sentence"], df["start"], df["end"], cfg.max_length, entities=ents)


@torch.no_grad()
def predict(model: hm.HamamModel, encoded: list[dict], pad_id: int, device, batch_size: int = 64, mode=None) -> np.ndarray:
    model.eval()
    order = batches([len(e["input_ids"]) for e in encoded], batch_size, shuffle=False, bucket=True)
    out = np.zeros((len(encoded), len(hm.LABELS)), dtype=np.float32)
    for b in order:
        x = {k: v.to(device) for k, v in collate([encoded[i] for i in b], pad_id).items()}
        out[b] = model(**x, mode=mode).float().cpu().numpy()
    return out


# --- one fold -----------------------------------------------------------------------------------


def param_groups(encoder: list[tuple[str, torch.nn.Parameter]], head: list[torch.nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """AdamW groups: the encoder at `lr` (no weight decay on biases and norms), the new head at `head_lr`."""
    no_decay = {n for n, _ in encoder if n.endswith("bias") or "norm" in n.lower()}
    groups = [
        {"params": [p for n, p in encoder if n not in no_decay], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in encoder if n in no_decay], "lr": cfg.lr, "weight_decay": 0.0},
        {"params": list(head), "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
    ]
    return [g for g in groups if g["params"]]


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


def train_model(cfg: TrainConfig, backbone_path: str, train_df, held_df, device, desc: str = "train", pad_to=None, max_steps=None):
    """Fine-tune one HAMAM model; returns (best model, tokenizer, FoldRun)."""
    seed_everything(cfg.seed)
    model, tok = hm.build(backbone_path, cfg)
    model.to(device)
    tr, held = encode_df(tok, train_df, cfg), encode_df(tok, held_df, cfg)
    y_tr, y_held = train_df["label"].to_numpy(), held_df["label"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = -(-len(tr) // cfg.batch_size)
    total = max_steps or steps_per_epoch * cfg.epochs
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = param_groups([(n, p) for n, p in named if n.startswith("encoder.")], [p for n, p in named if n.startswith("head.")], cfg)
    opt = torch.optim.AdamW(groups)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    loss_fn = hm.loss_fn(cfg.neutral_weight).to(device)

    run, best_state, bad, step, t0, running = FoldRun(), None, 0, 0, time.perf_counter(), []
    bar = tqdm(total=total, desc=desc, leave=False)
    while step < total and bad < cfg.patience:
        for b in batches([len(e["input_ids"]) for e in tr], cfg.batch_size, True, cfg.bucket, rng):
            model.train()
            x = {k: v.to(device) for k, v in collate([tr[i] for i in b], tok.pad_token_id, pad_to, y_tr[b]).items()}
            y = x.pop("labels")
            loss = loss_fn(model(**x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            run.train_examples += len(b)
            run.step_loss.append(loss.item())
            running.append(run.step_loss[-1])
            bar.update(1)
            if step % eval_every == 0 or step == total:
                t_eval = time.perf_counter()
                score = f1pn(y_held, to_labels(predict(model, held, tok.pad_token_id, device)))
                run.history.append({"step": step, "epoch": step / steps_per_epoch, "train_loss": float(np.mean(running)), "held_f1pn": score, "seconds": time.perf_counter() - t0})
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
    run.seconds, run.steps = time.perf_counter() - t0, step
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), tok, run


# --- k folds with an artifact cache --------------------------------------------------------------


def backbone_sentences(name: str, data: dict) -> list[str]:
    """navec-bert covers the words of every split (no labels used); tiny-random learns WordPiece on train."""
    if name == "navec-bert":
        return [s for df in data.values() for s in df["sentence"]]
    return list(data["train"]["sentence"])


def data_digest(data: dict) -> str:
    h = hashlib.sha1()
    for name in ("train", *SPLITS_PREDICTED):
        cols = [c for c in ("sentence", "entity", "start", "end", "label", "fold") if c in data[name]]
        h.update(pd.util.hash_pandas_object(data[name][cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:8]


def run_dir(paths: RunPaths, cfg: TrainConfig, data: dict) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.backbone).name if Path(cfg.backbone).is_dir() else cfg.backbone).strip("-")
    return paths.models / f"{slug}-{cfg.mode}-{cfg.key()}-{data_digest(data)}"


@dataclass
class KFoldResult:
    cfg: TrainConfig
    folds: list[int]
    oof: np.ndarray  # (n_train, 3); NaN rows for folds not run
    logits: dict[str, np.ndarray]  # split -> (n_folds_run, n_rows, 3)
    runs: list[dict]  # per fold: history, step_loss, seconds, steps, ... from done.json
    root: Path

    def ensemble(self, split: str) -> np.ndarray:
        """Mean of the fold models' logits."""
        return self.logits[split].mean(0)


def run_kfold(profile: Profile, cfg: TrainConfig, data: dict, folds=None, save_checkpoints: bool = True, force: bool = False, device=None) -> KFoldResult:
    """Train (or reuse) every fold; write checkpoint, OOF logits and validation/final logits per fold."""
    paths = RunPaths(profile.name).make()
    device = device or pick_device(profile.device)
    folds = list(range(profile.n_folds)) if folds is None else list(folds)
    train = data["train"]
    root = run_dir(paths, cfg, data)
    oof = np.full((len(train), len(hm.LABELS)), np.nan, dtype=np.float32)
    logits = {s: [] for s in SPLITS_PREDICTED}
    runs = []
    backbone = backbones.resolve(cfg.backbone, backbone_sentences(cfg.backbone, data), paths.cache)
    for k in tqdm(folds, desc=f"{cfg.backbone} {cfg.mode} folds", leave=False):
        fold_dir = root / f"fold{k}"
        done = fold_dir / "done.json"
        if force or not _cached(done, cfg, need_checkpoint=save_checkpoints, backbone=backbone):
            _train_fold(cfg, backbone, data, k, fold_dir, device, save_checkpoints)
        meta = json.loads(done.read_text())
        held = train["fold"].to_numpy() == k
        oof[held] = np.load(fold_dir / "logits_oof.npy")
        for s in SPLITS_PREDICTED:
            logits[s].append(np.load(fold_dir / f"logits_{s}.npy"))
        runs.append(meta)
    return KFoldResult(cfg, folds, oof, {s: np.stack(v) for s, v in logits.items()}, runs, root)


def is_cached(profile: Profile, cfg: TrainConfig, data: dict, fold: int, need_checkpoint: bool = False) -> bool:
    """Whether `run_kfold` would reuse this fold instead of training it."""
    paths = RunPaths(profile.name)
    backbone = backbones.resolve(cfg.backbone, backbone_sentences(cfg.backbone, data), paths.cache)
    return _cached(run_dir(paths, cfg, data) / f"fold{fold}" / "done.json", cfg, need_checkpoint, backbone)


def _cached(done: Path, cfg: TrainConfig, need_checkpoint: bool = False, backbone: str | None = None) -> bool:
    if not done.is_file():
        return False
    if need_checkpoint and not (done.parent / "checkpoint" / hm.CONFIG_FILE).is_file():
        return False  # trained by a chapter that kept no checkpoint (04); a later reader needs one
    meta = json.loads(done.read_text())
    if backbone is not None and meta.get("backbone_path") != backbone:
        return False  # a built backbone whose corpus changed lives in another directory
    return meta.get("config") == asdict(cfg) and meta.get("version") == ARTIFACT_VERSION


def _train_fold(cfg, backbone, data, k, fold_dir: Path, device, save_checkpoint: bool) -> None:
    train = data["train"]
    held = train["fold"].to_numpy() == k
    model, tok, run = train_model(cfg, backbone, train[~held], train[held], device, desc=f"fold {k}")
    fold_dir.mkdir(parents=True, exist_ok=True)
    np.save(fold_dir / "logits_oof.npy", predict(model, encode_df(tok, train[held], cfg), tok.pad_token_id, device))
    for s in SPLITS_PREDICTED:
        np.save(fold_dir / f"logits_{s}.npy", predict(model, encode_df(tok, data[s], cfg), tok.pad_token_id, device))
    if save_checkpoint:
        hm.save(model, tok, fold_dir / "checkpoint")
    meta = {"version": ARTIFACT_VERSION, "config": asdict(cfg), "fold": k, "backbone_path": backbone, **asdict(run)}
    (fold_dir / "done.json").write_text(json.dumps(meta))  # written last: its presence means the fold is complete
