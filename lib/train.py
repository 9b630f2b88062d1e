"""Training: one fold (AdamW, warm-up + linear decay, clipping, early stopping on held-out F1pn),
and the k-fold driver with its artifact cache (a fold whose artifacts match the config is reused).
"""

from __future__ import annotations

import copy
import functools
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

from . import backbones, executors
from . import model as hm
from .config import Profile, RunPaths, TrainConfig
from .metrics import f1pn, to_labels

SPLITS_PREDICTED = ("validation", "final")
ARTIFACT_VERSION = 3  # bump when what a fold directory holds changes: older folds are retrained


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        out["labels"] = torch.tensor([hm.LABEL2ID[int(y)] for y in labels], dtype=torch.long)
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


def resolve_precision(precision: str, device) -> str:
    """`auto` -> bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32.

    On a CPU without bf16 units autocast emulates bf16 and runs many times slower than fp32."""
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast(device, precision: str):
    """Mixed precision around one forward (never around the optimiser step: autocast caches its
    low-precision weight copies for the life of the context, so a context around the whole loop
    would keep serving the weights of the first step)."""
    device = torch.device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


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
    loss_fn = hm.loss_fn(cfg.neutral_weight).to(device)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")

    run, best_state, bad, step, t0, running = FoldRun(precision=precision), None, 0, 0, time.perf_counter(), []
    bar = tqdm(total=total, desc=desc, leave=False)
    while step < total and bad < cfg.patience:
        for b in batches([len(e["input_ids"]) for e in tr], cfg.batch_size, True, cfg.bucket, rng, groups):
            model.train()
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            batch_weight = loss_fn.weight[torch.as_tensor([hm.LABEL2ID[int(v)] for v in y_tr[b]])].sum()
            for part in (b[i : i + micro] for i in range(0, len(b), micro)):
                x = {
                    k: v.to(device)
                    for k, v in collate([tr[i] for i in part], tok.pad_token_id, pad_to, y_tr[part]).items()
                }
                y = x.pop("labels")
                with autocast(device, precision):
                    logits = model(**x)
                # weighted CE is a ratio of sums: scale each piece by its share of the batch's weight
                w = loss_fn.weight[y].sum() / batch_weight
                loss = loss_fn(logits.float(), y) * w
                scaler.scale(loss).backward()
                step_loss += loss.item()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            run.train_examples += len(b)
            run.step_loss.append(step_loss)
            running.append(step_loss)
            bar.update(1)
            if len(held) and (step % eval_every == 0 or step == total):
                t_eval = time.perf_counter()
                score = f1pn(y_held, to_labels(predict(model, held, tok.pad_token_id, device, precision=precision)))
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
    run.seconds, run.steps = time.perf_counter() - t0, step
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), tok, run


# --- k folds with an artifact cache --------------------------------------------------------------


def backbone_sentences(name: str, data: dict) -> list[str]:
    """navec-bert's words and e5-small's kept pieces cover every split (no labels used); tiny-random
    learns WordPiece on train."""
    if name in ("navec-bert", "e5-small", "e5-small-full"):
        return [s for df in data.values() for s in df["sentence"]]
    return list(data["train"]["sentence"])


def data_digest(data: dict) -> str:
    h = hashlib.sha1()
    for name in ("train", *SPLITS_PREDICTED):
        cols = [c for c in ("sentence", "entity", "start", "end", "label", "fold") if c in data[name]]
        h.update(pd.util.hash_pandas_object(data[name][cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:8]


@functools.cache
def training_source() -> str:
    """Digest of the code that decides what a fold model becomes: editing the loop or the model
    retrains; editing a notebook's plotting does not."""
    return backbones.source_digest(
        hm,
        inner_split,
        train_model,
        _train_fold,
        batches,
        collate,
        encode_df,
        predict,
        autocast,
        resolve_precision,
        param_groups,
        seed_everything,
    )


def run_dir(paths: RunPaths, cfg: TrainConfig, data: dict, backbone_path: str | None = None) -> Path:
    """runs/<profile>/models/<backbone>-<mode>-<key>: the key hashes the config, the data (rows,
    labels, folds), the backbone build's content digest and the training code."""
    slug = re.sub(
        r"[^A-Za-z0-9]+", "-", Path(cfg.backbone).name if Path(cfg.backbone).is_dir() else cfg.backbone
    ).strip("-")
    ingredients = [
        cfg.key(),
        data_digest(data),
        backbones.content_digest(backbone_path or cfg.backbone),
        training_source(),
        str(ARTIFACT_VERSION),
    ]
    key = hashlib.sha1("|".join(ingredients).encode()).hexdigest()[:12]
    return paths.models / f"{slug}-{cfg.mode}-{key}"


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


def fold_jobs(
    profile: Profile, cfg: TrainConfig, data: dict, folds, save_checkpoints: bool = True, force: bool = False
) -> tuple[Path, list]:
    """The run directory of (profile, cfg, data) and a job for each fold it lacks."""
    paths = RunPaths(profile.name).make()
    backbone = backbones.resolve(cfg.backbone, backbone_sentences(cfg.backbone, data), paths.cache)
    root = run_dir(paths, cfg, data, backbone)
    todo = [
        k for k in folds if force or not _cached(root / f"fold{k}" / "done.json", cfg, need_checkpoint=save_checkpoints)
    ]
    return root, [executors.FoldJob(cfg, backbone, k, str(root / f"fold{k}"), save_checkpoints, force) for k in todo]


def run_kfold(
    profile: Profile,
    cfg: TrainConfig,
    data: dict,
    folds=None,
    save_checkpoints: bool = True,
    force: bool = False,
    device=None,
    executor=None,
) -> KFoldResult:
    """Train (or reuse) every fold; write checkpoint, OOF logits and validation/final logits per fold.

    Folds run in this process or as Ray tasks (`executor`, default the profile's; see lib.executors)."""
    folds = list(range(profile.n_folds)) if folds is None else list(folds)
    root, jobs = fold_jobs(profile, cfg, data, folds, save_checkpoints, force)
    executors.run(
        jobs, data, executors.resolve(executor, profile.executor), device or profile.device, profile.executor_cpus
    )
    return read_kfold(cfg, data, root, folds)


def read_kfold(cfg: TrainConfig, data: dict, root: Path, folds) -> KFoldResult:
    """Gather the fold directories under `root` (written by this process or by any worker)."""
    train = data["train"]
    oof = np.full((len(train), len(hm.LABELS)), np.nan, dtype=np.float32)
    logits = {s: [] for s in SPLITS_PREDICTED}
    runs = []
    for k in folds:
        fold_dir = root / f"fold{k}"
        meta = json.loads((fold_dir / "done.json").read_text())
        held = train["fold"].to_numpy() == k
        oof[held] = np.load(fold_dir / "logits_oof.npy")
        for s in SPLITS_PREDICTED:
            logits[s].append(np.load(fold_dir / f"logits_{s}.npy"))
        runs.append(meta)
    return KFoldResult(cfg, folds, oof, {s: np.stack(v) for s, v in logits.items()}, runs, root)


def is_cached(profile: Profile, cfg: TrainConfig, data: dict, fold: int, need_checkpoint: bool = False) -> bool:
    """Whether `run_kfold` would reuse this fold instead of training it."""
    return not fold_jobs(profile, cfg, data, [fold], need_checkpoint)[1]


def _cached(done: Path, cfg: TrainConfig, need_checkpoint: bool = False) -> bool:
    if not done.is_file():
        return False
    if need_checkpoint and not (done.parent / "checkpoint" / hm.CONFIG_FILE).is_file():
        return False  # trained by a chapter that kept no checkpoint (04); a later reader needs one
    meta = json.loads(done.read_text())
    return meta.get("config") == asdict(cfg) and meta.get("version") == ARTIFACT_VERSION


def _train_fold(cfg, backbone, data, k, fold_dir: Path, device, save_checkpoint: bool) -> None:
    """Early stopping looks only at an inner split of the training part; the held-out fold is
    predicted once by the chosen checkpoint, so OOF logits are really out of sample."""
    train = data["train"]
    held = train["fold"].to_numpy() == k
    part = train[~held]
    inner = inner_split(part, cfg.inner_val, cfg.seed + k)
    model, tok, run = train_model(cfg, backbone, part[~inner], part[inner], device, desc=f"fold {k}")
    fold_dir.mkdir(parents=True, exist_ok=True)
    prec = run.precision
    np.save(
        fold_dir / "logits_oof.npy",
        predict(model, encode_df(tok, train[held], cfg), tok.pad_token_id, device, precision=prec),
    )
    for s in SPLITS_PREDICTED:
        np.save(
            fold_dir / f"logits_{s}.npy",
            predict(model, encode_df(tok, data[s], cfg), tok.pad_token_id, device, precision=prec),
        )
    if save_checkpoint:
        hm.save(model, tok, fold_dir / "checkpoint")
    meta = {
        "version": ARTIFACT_VERSION,
        "config": asdict(cfg),
        "fold": k,
        "backbone_path": backbone,
        "backbone_digest": backbones.content_digest(backbone),
        "inner_rows": int(inner.sum()),
        **asdict(run),
    }
    (fold_dir / "done.json").write_text(json.dumps(meta))  # written last: its presence means the fold is complete


# --- one job from the command line --------------------------------------------------------------

CLI_EPILOG = """Trains exactly the fold directories the notebooks read (same keys, same cache), so a Slurm array
or any scheduler can fill the cache and the notebooks then only read it. Example:
  python -m lib.train --profile paper --backbone xlm-roberta-large --mode hamam --folds 0,1 --lr 1e-5
Every TrainConfig field below defaults to the profile's value. --backbone and --mode take comma-separated
lists: every (backbone, mode, fold) becomes one job, so with --executor ray they all run at once:
  python -m lib.train --profile paper --backbone xlm-roberta-large,google/rembert --mode hamam,masked,unmasked --executor ray"""


def _cli_parser():
    import argparse
    import dataclasses
    import typing

    from .config import PROFILES

    ap = argparse.ArgumentParser(
        prog="python -m lib.train",
        description="Train (or reuse) k-fold HAMAM models for one (profile, backbone, mode).",
        epilog=CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--folds", default=None, help="comma-separated fold ids (default: the profile's main folds)")
    ap.add_argument("--force", action="store_true", help="retrain even when a matching fold is cached")
    ap.add_argument("--no-checkpoints", action="store_true", help="keep logits only")
    ap.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        default=None,
        help="where fold jobs run (default: the profile's; RAY_ADDRESS picks a Ray cluster)",
    )
    cfg = ap.add_argument_group("TrainConfig fields (override the profile's)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        conv = (lambda s: s.lower() in ("1", "true", "yes")) if kind is bool else kind
        cfg.add_argument(
            f"--{f.name}",
            type=conv,
            default=argparse.SUPPRESS,
            metavar=kind.__name__.upper(),
            help=f"default: the profile's ({f.default!r} in TrainConfig)",
        )
    return ap


def main(argv=None) -> int:
    import sys

    from .config import get_profile
    from .folds import load_prepared

    ap = _cli_parser()
    args = vars(ap.parse_args(argv))  # unknown options exit 2, naming them
    profile, folds, force, no_ckpt, executor = (
        args.pop(k) for k in ("profile", "folds", "force", "no_checkpoints", "executor")
    )
    try:
        prof = get_profile(profile)
        names, modes = (
            list(dict.fromkeys(args.pop(k, getattr(prof.train, k)).split(","))) for k in ("backbone", "mode")
        )  # no job twice
        cfgs = [prof.config_for(b, **args, mode=m) for b in names for m in modes]
        fold_ids = prof.main_folds if folds is None else [int(k) for k in folds.split(",")]
        bad = [k for k in fold_ids if not 0 <= k < prof.n_folds]
        if bad:
            raise ValueError(f"--folds: {bad} not in 0..{prof.n_folds - 1}")
        executor = executors.resolve(executor, prof.executor)
    except ValueError as e:
        print(f"python -m lib.train: {e}", file=sys.stderr)
        return 2
    data = load_prepared(prof)
    planned = [(cfg, *fold_jobs(prof, cfg, data, fold_ids, not no_ckpt, force)) for cfg in cfgs]
    try:
        executors.run([j for _, _, jobs in planned for j in jobs], data, executor, prof.device, prof.executor_cpus)
    except executors.FoldJobsFailed as e:
        print(f"python -m lib.train: {e}", file=sys.stderr)
        return 1
    for cfg, root, _ in planned:
        for r in read_kfold(cfg, data, root, fold_ids).runs:
            print(
                f"{cfg.backbone} {cfg.mode} fold {r['fold']}: {r['steps']} steps, best early-stopping F1pn {r['best_f1pn']:.3f}, {r['seconds']:.0f}s -> {root / ('fold%d' % r['fold'])}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
