"""Training throughput benchmark (a script, not a timed test): every ratio is measured in one run.

    python scripts/benchmark.py [--profile cpu] [--steps 12]

For the profile's backbone in its training mode, training examples/s (held-out evaluation
excluded) of:
1. length-bucketed batches with dynamic padding vs every batch padded to max_length (goal >= 1.5x);
2. K=5 vs K=1 multi-sample dropout step time (goal <= 1.10x: only the head repeats);
3. rows of one sentence side by side with their shared unmasked copy encoded once vs every row
   encoded separately; the logits of both paths are compared on 256 rows (must be identical);
4. bf16 autocast vs fp32 (bf16 pays off only on a CPU with bf16 units; `precision="auto"` picks it
   there). On a CPU without them bf16 is emulated and far slower, so it runs `--bf16-steps` steps;
5. the profile's frozen lower layers vs training every layer, and gradient checkpointing (the
   memory option for large backbones) vs none, both with every layer trained;
6. (e5-small) the trimmed vocabulary vs the full 250k-piece one, embeddings trained (freeze_layers=0).
Results also go to benchmark.json beside the profile's figures (figures/ for the cpu profile).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lib import backbones, study  # noqa: E402
from lib import model as hm  # noqa: E402
from lib.train import encode_df, predict, resolve_precision, train_model  # noqa: E402


def measure(S, bb: str, steps: int, pad_to=None, **overrides) -> dict:
    cfg = S.prof.train_config(**overrides)
    train = S.train
    held = train["fold"] == 0
    _, _, run = train_model(cfg, bb, train[~held], train[held].head(8), S.device, pad_to=pad_to, max_steps=steps)
    t = run.seconds - run.eval_seconds
    return {
        "seconds": t,
        "steps": run.steps,
        "examples": run.train_examples,
        "examples_per_s": run.train_examples / t,
        "seconds_per_step": t / run.steps,
        "precision": run.precision,
    }


def same_logits(S, bb: str) -> float:
    """Max |difference| of the logits with and without encoding shared rows once (eval mode)."""
    cfg = S.prof.train
    rows = S.val.sort_values("sentence").head(256)
    model, tok = hm.build(bb, cfg)
    enc = encode_df(tok, rows, cfg)
    a = predict(model, enc, tok.pad_token_id, S.device)
    model.cfg = replace(cfg, group_sentences=False)
    return float(np.abs(a - predict(model, enc, tok.pad_token_id, S.device)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--bf16-steps", type=int, default=2)
    args = ap.parse_args()
    S = study.setup(args.profile)
    name = S.prof.train.backbone
    bb = S.backbone_dir(name)
    m = lambda steps=args.steps, **kw: measure(S, bb, steps, **kw)  # noqa: E731
    m(steps=2)  # warm-up: the first steps pay for allocation and thread start-up
    res = {
        "bucketed_dynamic": m(bucket=True),
        "padded_to_max_length": m(bucket=False, pad_to=S.prof.train.max_length),
        "msd_k1": m(msd_k=1),
        "msd_k5": m(msd_k=5),
        "rows_encoded_separately": m(group_sentences=False),
        "all_layers_trained": m(freeze_layers=0),
        "all_layers_checkpointed": m(freeze_layers=0, gradient_checkpointing=True),
        "bf16": m(steps=args.bf16_steps, precision="bf16"),
        "fp32_same_steps": m(steps=args.bf16_steps, precision="fp32"),
    }
    res["logits_max_abs_diff_shared_rows"] = same_logits(S, bb)
    if name == "e5-small":
        full = S.backbone_dir("e5-small-full")
        res["trimmed_vocab_embeddings_trained"] = m(freeze_layers=0)
        res["full_vocab_embeddings_trained"] = measure(S, full, args.steps, freeze_layers=0)
        res["vocab_sizes"] = {
            "trimmed": backbones.build_stats(bb).get("vocab_trimmed"),
            "full": backbones.build_stats(full).get("vocab_full"),
        }
    r = lambda a, b, key="examples_per_s": res[a][key] / res[b][key]  # noqa: E731
    res["summary"] = {
        "profile": S.prof.name,
        "backbone": name,
        "mode": S.prof.train.mode,
        "batch_size": S.prof.train.batch_size,
        "steps": args.steps,
        "hardware": study.hardware(),
        "auto_precision_here": resolve_precision("auto", S.device),
        "torch_threads": torch.get_num_threads(),
        "bucketing_speedup": r("bucketed_dynamic", "padded_to_max_length"),
        "msd_k5_over_k1_step_time": r("msd_k5", "msd_k1", "seconds_per_step"),
        "shared_rows_speedup": r("bucketed_dynamic", "rows_encoded_separately"),
        "frozen_layers_speedup": r("bucketed_dynamic", "all_layers_trained"),
        "checkpointing_step_time": r("all_layers_checkpointed", "all_layers_trained", "seconds_per_step"),
        "bf16_over_fp32_examples_per_s": r("bf16", "fp32_same_steps"),
    }
    if name == "e5-small":
        res["summary"]["trimmed_over_full_vocab_step_time"] = r(
            "trimmed_vocab_embeddings_trained", "full_vocab_embeddings_trained", "seconds_per_step"
        )
    s = res["summary"]
    print(
        f"{S.prof.name} profile, {name}, mode {S.prof.train.mode}, batch {S.prof.train.batch_size}, {args.steps} steps; {s['hardware']}"
    )
    print(
        f"  bucketing + dynamic padding vs padded to {S.prof.train.max_length}: {s['bucketing_speedup']:.2f}x examples/s (goal >= 1.5x)"
    )
    print(f"  K=5 over K=1 step time: {s['msd_k5_over_k1_step_time']:.3f}x (goal <= 1.10x)")
    print(
        f"  shared unmasked rows encoded once: {s['shared_rows_speedup']:.2f}x examples/s; max |logit difference| {res['logits_max_abs_diff_shared_rows']:.2e}"
    )
    print(
        f"  embeddings + lowest {S.prof.train.freeze_layers} layers frozen vs all trained: {s['frozen_layers_speedup']:.2f}x examples/s"
    )
    print(f"  gradient checkpointing over none, all layers trained: {s['checkpointing_step_time']:.2f}x step time")
    print(
        f"  bf16 over fp32 ({args.bf16_steps} steps): {s['bf16_over_fp32_examples_per_s']:.2f}x examples/s; `auto` picks {s['auto_precision_here']} here"
    )
    if name == "e5-small":
        print(
            f"  trimmed ({res['vocab_sizes']['trimmed']}) over full ({res['vocab_sizes']['full']}) vocabulary step time, embeddings trained: {s['trimmed_over_full_vocab_step_time']:.2f}x"
        )
    out = S.paths.figures / "benchmark.json"
    out.write_text(json.dumps(res, indent=2))
    print("written", out)


if __name__ == "__main__":
    main()
