"""Training-step speed ratios in steady state: every ratio measured in one run, on one machine.

    python scripts/benchmark.py [--profile cpu] [--only bucketing,bf16] [--warmup 3] [--rounds 5] [--steps 6]

A comparison pits two arms, A and B: a TrainConfig plus its inputs (backbone, padding, compiled or not), each
step being lib.training.train_model's optimiser step (no LR schedule) on one fixed sequence of real training
batches, collated before any timing. Each arm runs `--warmup` untimed steps, then `--rounds` rounds of the
same `--steps` batches per arm, A then B (B then A in odd rounds), so drift on a shared machine hits both.
Ratio = B step time / A step time (> 1: A is faster), of the median steps, with the min/median/max of the
per-round ratios (a round's total B time / total A time).

Comparisons (--only): bucketing, msd, shared_rows, frozen, frozen_cache, checkpointing, vocab, bf16, compile.
frozen_cache: the recipe's frozen lower layers replayed from the cache vs computed at every step; arm A's cache is
filled by one untimed pass over all its batches first, so it times the steady state of epochs 2 and later.
vocab (e5-small only) needs the full-vocabulary build: used when cached, built with --full-vocab.
compile: compiled with an empty inductor cache (the cost a fresh machine pays once). Its one-off seconds = the
compiled arm's time above its median step summed over all its steps (warm-up, and recompiles for shapes first
seen later), less the same for the eager arm; break-even steps = those seconds / (eager - compiled median step).
Writes benchmark.json into the profile's figures folder (figures/ for the cpu profile) unless --out; --merge keeps
the comparisons of an earlier file that this run does not measure (each comparison records its own date).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer

from lib import losses, plan
from lib import model as hm
from lib.config import RunPaths, get_profile
from lib.device import autocast, hardware, pick_device, resolve_precision
from lib.folds import load_prepared
from lib.training import batches, collate, encode_df, optimiser_step, param_groups, predict, seed_everything

COMPARISONS = ("bucketing", "msd", "shared_rows", "frozen", "frozen_cache", "checkpointing", "vocab", "bf16", "compile")


# --- statistics ---------------------------------------------------------------------------------------------


def spread(xs) -> dict:
    return {"min": float(np.min(xs)), "median": float(np.median(xs)), "max": float(np.max(xs))}


def ratio_stats(a: list[list[float]], b: list[list[float]]) -> dict:
    """Speed of A over B from per-round lists of step seconds (same batches in a round): B time / A time."""
    per_round = [sum(tb) / sum(ta) for ta, tb in zip(a, b)]
    of_medians = float(np.median(np.concatenate(b)) / np.median(np.concatenate(a)))
    return {"of_medians": of_medians, "rounds": spread(per_round), "per_round": per_round}


def arm_stats(warm: list[float], rounds: list[list[float]], examples: int) -> dict:
    flat = np.concatenate(rounds)
    stats = {"step_seconds": spread(flat), "examples_per_s": examples / float(flat.sum()), "timed_steps": len(flat)}
    return stats | {"warmup_seconds": float(sum(warm)), "warmup": warm, "rounds": rounds}


def one_off_seconds(compiled: dict, eager: dict) -> float:
    """Seconds the compiled arm spent above its median step (compiling), less the eager arm's (its start-up)."""
    over = lambda a: sum(np.concatenate([a["warmup"], *a["rounds"]]) - a["step_seconds"]["median"])  # noqa: E731
    return float(over(compiled) - over(eager))


# --- one arm: a config stepping through pre-built batches ------------------------------------------------------


class Arm:
    """One optimiser step per batch of `order` (index lists into `rows`), collated once before timing."""

    def __init__(self, name, cfg, backbone, rows, order, device, pad_to=None, compile=False, cache_frozen=False):
        seed_everything(cfg.seed)
        self.name, self.cfg, self.backbone, self.pad_to, self.compiled = name, cfg, backbone, pad_to, compile
        self.device, self.precision = device, resolve_precision(cfg.precision, device)
        self.model, self.tok = hm.build(backbone, cfg)
        self.model.to(device).train()
        enc, y = encode_df(self.tok, rows, cfg), rows["label"].to_numpy()
        micro = cfg.batch_size // cfg.grad_accum_steps
        parts = [[b[i : i + micro] for i in range(0, len(b), micro)] for b in order]
        self.batches = [[collate([enc[i] for i in p], self.tok.pad_token_id, pad_to, y[p]) for p in ps] for ps in parts]
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        head = [p for n, p in named if n.startswith("head.")]
        self.opt = torch.optim.AdamW(param_groups([(n, p) for n, p in named if n.startswith("encoder.")], head, cfg))
        self.loss_fn = losses.make(cfg.loss, cfg.neutral_weight, cfg.focal_gamma)
        weights = losses.class_weights(cfg.neutral_weight) if cfg.loss != "two_head" else torch.ones(3)
        self.row_weight = weights.to(device)
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16")
        self.forward = torch.compile(self.model) if compile else self.model
        self.cache_frozen = self.model.cache_frozen(cache_frozen)
        if self.cache_frozen:  # what the first epoch leaves behind: every batch's frozen output computed once
            with torch.no_grad(), autocast(device, self.precision):
                for x in (p for ps in self.batches for p in ps):
                    self.model(**{k: v.to(device) for k, v in x.items() if k != "labels"})

    def step(self, i: int) -> float:
        """Seconds of one optimiser step on batch i: lib.training.optimiser_step, the training loop's own step."""
        t = time.perf_counter()
        xs = [{k: v.to(self.device) for k, v in p.items()} for p in self.batches[i]]
        optimiser_step(
            self.model,
            self.opt,
            self.scaler,
            xs,
            self.loss_fn,
            self.row_weight,
            self.device,
            self.precision,
            self.cfg.grad_clip,
            forward=self.forward,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def describe(self) -> dict:
        keys = ("freeze_layers", "msd_k", "group_sentences", "gradient_checkpointing", "batch_size")
        out = {"name": self.name, "backbone": self.backbone, "pad_to": self.pad_to, "compiled": self.compiled}
        out |= {"cache_frozen": self.cache_frozen}
        return out | {k: getattr(self.cfg, k) for k in keys} | {"precision": self.precision}


# --- the comparisons ------------------------------------------------------------------------------------------


def arms(name: str, base, bb: str, prof, data, args) -> tuple[dict, dict, str] | str:
    """(arm A, arm B, title) as Arm keyword arguments, or the reason the comparison is skipped."""
    arm = lambda label, **kw: {"name": label, "cfg": replace(base, **kw), "backbone": bb}  # noqa: E731
    if name == "bucketing":  # same (bucketed) batches; B pads every one to max_length
        b = arm(f"padded to {base.max_length}") | {"pad_to": base.max_length}
        return arm("bucketed, dynamic padding"), b, "length buckets + dynamic padding vs padded to max_length"
    if name == "msd":
        return arm("K=5", msd_k=5), arm("K=1", msd_k=1), "multi-sample dropout K=5 vs K=1"
    if name == "shared_rows":
        a, b = arm("shared rows once", group_sentences=True), arm("every row", group_sentences=False)
        return a, b, "a sentence's unmasked rows encoded once vs every row"
    if name == "frozen":
        n = base.freeze_layers or AutoConfig.from_pretrained(bb).num_hidden_layers // 2
        return arm(f"lowest {n} frozen", freeze_layers=n), arm("all trained", freeze_layers=0), "frozen lower layers"
    if name == "frozen_cache":
        if not base.freeze_layers:
            return "the recipe freezes no layers"
        a = arm(f"lowest {base.freeze_layers} replayed") | {"cache_frozen": True}
        return a, arm("recomputed every step"), "frozen layers' output cached vs recomputed (epochs 2+)"
    if name == "checkpointing":
        a = arm("checkpointed", freeze_layers=0, gradient_checkpointing=True)
        return a, arm("not", freeze_layers=0), "gradient checkpointing vs none (all layers trained)"
    if name == "vocab":
        if base.backbone != "e5-small":
            return "only for e5-small"
        full = plan.backbone_dir(prof, "e5-small-full", data, build=args.full_vocab)
        if full is None:
            return "the full-vocabulary build is not cached (--full-vocab builds it)"
        b = arm("full vocabulary", freeze_layers=0) | {"backbone": full}
        return arm("trimmed vocabulary", freeze_layers=0), b, "trimmed vs full vocabulary (embeddings trained)"
    if name == "bf16":
        return arm("bf16", precision="bf16"), arm("fp32", precision="fp32"), "bf16 autocast vs fp32"
    return arm("compiled") | {"compile": True}, arm("eager"), "torch.compile of the model vs eager"  # compile


def run_comparison(a: dict, b: dict, rows, order, device, args, bar) -> tuple[dict, list[Arm]]:
    pair = [Arm(**spec, rows=rows, order=order, device=device) for spec in (a, b)]
    warm = [[arm.step(i) for i in range(args.warmup)] for arm in pair]
    bar.update(2 * args.warmup)
    times = [[], []]
    for r in range(args.rounds):
        lo = args.warmup + r * args.steps
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            times[k].append([pair[k].step(i) for i in range(lo, lo + args.steps)])
            bar.update(args.steps)
    n = sum(len(order[i]) for i in range(args.warmup, args.warmup + args.rounds * args.steps))
    out = {"ratio": ratio_stats(times[0], times[1]), "arms": {}}
    for k, arm in enumerate(pair):
        out["arms"]["AB"[k]] = arm.describe() | arm_stats(warm[k], times[k], n)
    return out, pair


def extras(name: str, res: dict, pair: list[Arm], data, prof, steps_per_fold: int) -> None:
    """What some comparisons add: identical logits (shared rows), vocabulary sizes, compile break-even."""
    if name == "shared_rows":  # eval mode: both paths must give the same logits
        model, tok, cfg = pair[0].model, pair[0].tok, pair[0].cfg
        enc = encode_df(tok, data["validation"].sort_values("sentence").head(256), cfg)
        once = predict(model, enc, tok.pad_token_id, pair[0].device)
        model.cfg = replace(cfg, group_sentences=False)
        res["logits_max_abs_diff"] = float(np.abs(once - predict(model, enc, tok.pad_token_id, pair[0].device)).max())
    if name == "frozen_cache":  # eval mode: the replayed path must give the logits of the full encoder
        model, tok, cfg = pair[0].model, pair[0].tok, pair[0].cfg
        enc = encode_df(tok, data["validation"].head(256), cfg)
        replayed = predict(model, enc, tok.pad_token_id, pair[0].device, precision=pair[0].precision)
        model.cache_frozen(False)
        full = predict(model, enc, tok.pad_token_id, pair[0].device, precision=pair[0].precision)
        res["logits_max_abs_diff"] = float(np.abs(replayed - full).max())
        res["logits_max_abs"] = float(np.abs(full).max())
        # the noise floor of this precision: the full path itself, batches of 32 instead of 64
        half = predict(model, enc, tok.pad_token_id, pair[0].device, batch_size=32, precision=pair[0].precision)
        res["full_path_batch_size_max_abs_diff"] = float(np.abs(half - full).max())
    if name == "vocab":
        res["vocab_sizes"] = {"A": len(pair[0].tok), "B": len(pair[1].tok)}
    if name == "compile":
        c, e = res["arms"]["A"], res["arms"]["B"]
        res["compile_seconds"] = one_off_seconds(c, e)
        gain = e["step_seconds"]["median"] - c["step_seconds"]["median"]
        res["break_even_steps"] = res["compile_seconds"] / gain if gain > 0 else None  # None: never pays
        res["steps_per_fold_run"] = steps_per_fold
        res["pays_within_a_fold_run"] = res["break_even_steps"] is not None and res["break_even_steps"] < steps_per_fold


@contextlib.contextmanager
def cold_cache():
    """An empty, temporary inductor cache: torch.compile pays what it pays on a fresh machine."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    torch._dynamo.reset()
    with tempfile.TemporaryDirectory(prefix="benchmark-inductor-") as d, temporary_cache_dir(d):
        yield


def batch_order(rows, tok, cfg, n: int) -> list[list[int]]:
    """The first n batches of the training loop's (seeded) epochs: bucketed, grouped by sentence."""
    lengths = [len(e["input_ids"]) for e in encode_df(tok, rows, cfg)]
    rng, order = np.random.default_rng(cfg.seed), []
    while len(order) < n:
        order += batches(lengths, cfg.batch_size, True, True, rng, rows["sentence"].to_numpy())
    return order[:n]


# --- report -----------------------------------------------------------------------------------------------


def table_line(name: str, res: dict) -> str:
    r, a, b = res["ratio"], res["arms"]["A"], res["arms"]["B"]
    s = lambda x: f"{x['step_seconds']['median']:.3f} s [{x['step_seconds']['min']:.3f}-{x['step_seconds']['max']:.3f}]"  # noqa: E731
    return (
        f"{name:<13} {r['of_medians']:5.2f}x [{r['rounds']['min']:.2f} {r['rounds']['median']:.2f} "
        f"{r['rounds']['max']:.2f}]  A {a['name']}: {s(a)}, {a['examples_per_s']:.1f} ex/s | "
        f"B {b['name']}: {s(b)}, {b['examples_per_s']:.1f} ex/s"
    )


def precision_check(auto: str, res: dict, backbone: str) -> dict:
    """Is `precision="auto"` right here? bf16 picked and faster, or fp32 picked and bf16 not faster."""
    ratio = res["ratio"]["of_medians"]
    right = (auto == "bf16") == (ratio > 1)
    how = f"bf16 {ratio:.2f}x faster" if ratio > 1 else f"bf16 {1 / ratio:.2f}x slower"
    r = res["ratio"]["rounds"]
    how += f" on {backbone}; rounds {r['min']:.2f}-{r['max']:.2f}x"
    settled = not r["min"] < 1 < r["max"]  # every round on the same side of 1
    line = f"auto picks {auto}: {'right' if right else 'WRONG'} here ({how})" + ("" if settled else ": NOT SETTLED")
    return {"auto": auto, "bf16_speed_ratio": ratio, "right": right, "settled": settled, "line": line}


def merged(old: dict, new: dict, path) -> dict:
    """`new` plus the comparisons of `old` it did not measure; ratios from one machine only."""
    for k in ("hardware", "torch", "threads", "device"):
        if old.get(k) != new[k]:
            raise SystemExit(f"{path}: cannot merge, its {k} is {old.get(k)!r} and this run's is {new[k]!r}")
    kept = {k: v for k, v in old["comparisons"].items() if k not in new["comparisons"]}
    for v in kept.values():
        v.setdefault("date", old["date"])
    out = new | {"comparisons": kept | new["comparisons"], "seconds": old.get("seconds", 0) + new["seconds"]}
    out["settings"] = new["settings"] | {"only": [c for c in COMPARISONS if c in out["comparisons"]]}
    if "precision_check" in old and "precision_check" not in new:
        out["precision_check"] = old["precision_check"]
    skipped = old.get("skipped", {}) | new["skipped"]
    out["skipped"] = {k: v for k, v in skipped.items() if k not in out["comparisons"]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {','.join(COMPARISONS)}")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per arm")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per arm per round")
    ap.add_argument("--full-vocab", action="store_true", help="build e5-small-full if missing (vocab comparison)")
    ap.add_argument("--out", default=None, help="JSON path (default: the profile's figures/benchmark.json)")
    ap.add_argument("--merge", action="store_true", help="keep the output file's other comparisons (same hardware)")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.only.split(",")] if args.only else list(COMPARISONS)
    if set(names) - set(COMPARISONS):
        ap.error(f"unknown comparison(s) {sorted(set(names) - set(COMPARISONS))}; choose from {','.join(COMPARISONS)}")

    t0 = time.perf_counter()
    prof = get_profile(args.profile)
    data = load_prepared(prof)
    device = pick_device(prof.device)
    base = plan.config(prof)
    bb = plan.backbone_dir(prof, base.backbone, data, build=True)
    rows = data["train"]
    order = batch_order(rows, AutoTokenizer.from_pretrained(bb), base, args.warmup + args.rounds * args.steps)
    auto = resolve_precision("auto", device)
    fold_rows = len(rows) * (1 - 1 / prof.n_folds) * (1 - base.inner_val)  # one fold job's training rows
    steps_per_fold = base.epochs * int(np.ceil(fold_rows / base.batch_size))
    print(f"{prof.name}: {base.backbone} {base.mode}, batch {base.batch_size}; {hardware()}; torch {torch.__version__}")
    print(f"{args.warmup} warm-up steps per arm, then {args.rounds} rounds x {args.steps} steps, arms interleaved")
    recipe = resolve_precision(base.precision, device)
    print(f'precision="auto" resolves to {auto} here; the arms run in {recipe} unless they set it')

    path = Path(args.out or RunPaths(prof.name).figures / "benchmark.json")
    earlier = json.loads(path.read_text()) if args.merge and path.is_file() else None
    settings = {"profile": prof.name, "backbone": base.backbone, "mode": base.mode, "batch_size": base.batch_size}
    settings |= {"max_length": base.max_length, "recipe_precision": recipe, "train_rows": len(rows), "only": names}
    settings |= {k: getattr(args, k) for k in ("warmup", "rounds", "steps")}
    results, skipped = {}, {}

    def write(complete: bool) -> dict:
        """The JSON so far: written after every comparison, so a crash later keeps what was measured."""
        date = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out = {"hardware": hardware(), "torch": torch.__version__, "threads": torch.get_num_threads(), "date": date}
        out |= {"device": str(device), "auto_precision": auto, "complete": complete}
        out |= {"settings": settings, "comparisons": results, "skipped": skipped}
        if "bf16" in results:
            out["precision_check"] = precision_check(auto, results["bf16"], base.backbone)
        out["seconds"] = time.perf_counter() - t0
        if earlier is not None:
            out = merged(earlier, out, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
        return out

    todo = [(n, arms(n, base, bb, prof, data, args)) for n in names]
    bar = tqdm(total=sum(2 * len(order) for _, s in todo if not isinstance(s, str)), desc="benchmark steps")
    for name, spec in todo:
        if isinstance(spec, str):
            skipped[name] = spec
            continue
        a, b, title = spec
        bar.set_postfix_str(name)
        with cold_cache() if name == "compile" else contextlib.nullcontext():
            res, pair = run_comparison(a, b, rows, order, device, args, bar)
        results[name] = {"title": title, **res, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        extras(name, results[name], pair, data, prof, steps_per_fold)
        del pair  # free the two models before the next comparison builds its own
        write(complete=False)
    bar.close()
    out = write(complete=True)

    print("\nratio = B step time / A step time (>1: A faster), of medians [per-round min median max]")
    for name, res in results.items():
        print(table_line(name, res))
    for name, why in skipped.items():
        print(f"{name:<13} skipped: {why}")
    if "shared_rows" in results:
        print(f"shared_rows: max |logit difference| {results['shared_rows']['logits_max_abs_diff']:.2e}")
    if "frozen_cache" in results:
        r = results["frozen_cache"]
        print(
            f"frozen_cache: max |logit difference| {r['logits_max_abs_diff']:.2e}"
            f" (max |logit| {r['logits_max_abs']:.2f}; the full path at batch 32 vs 64 differs by"
            f" {r['full_path_batch_size_max_abs_diff']:.2e})"
        )
    if "compile" in results:
        c, be = results["compile"], results["compile"]["break_even_steps"]
        pays = f"pays after {be:.0f} steps" if be is not None else "never pays (not faster)"
        verdict = "adopt" if c["pays_within_a_fold_run"] else "do not adopt"
        print(f"torch.compile: {c['compile_seconds']:.1f} s one-off; {pays}, a fold run is {steps_per_fold}: {verdict}")
    if "precision_check" in out:
        print(out["precision_check"]["line"])
    print(f"written {path} ({out['seconds'] / 60:.1f} min)")
    return out


if __name__ == "__main__":
    main()
