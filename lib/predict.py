"""Apply the study's model to new text. By default (`--run headline`) that is chapter 02's headline: every fold
model of every seed of the HAMAM recipe, logits averaged, under the decision rule the chapter picks by how it
transfers from out-of-fold rows to an averaged ensemble (lib/ensembles.py), so the labels are the ones its
submission files hold. `--run 02/hamam` (or any fold run of the plan) applies that one run's fold ensemble
under a rule chosen on its own OOF rows (`--rule threshold | argmax`), the way the chapters score each run.

    python -m lib.predict --profile cpu --input FILE.tsv --output OUT.tsv [--run headline | 02/hamam] [--rule ...]

FILE.tsv has the competition's columns (sentence, entity, entity_tag, entity_pos_start_rel, entity_pos_end_rel;
a label column is ignored) and is validated like the raw data: a bad row stops with one line naming file, row
and rule. OUT.tsv is the input plus `label` and the three class probabilities (the models' logits averaged,
then softmax). Every rule parameter is chosen on out-of-fold rows, never on validation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import ensembles, plan
from .config import LABEL_NAMES, LABELS, get_profile
from .metrics import softmax
from .rules import apply_rule, decision_rule

RULES = ("threshold", "argmax")
HEADLINE = "headline"  # every seed of the HAMAM recipe under its OOF-chosen rule (chapter 02)


def predict_folds(result, df: pd.DataFrame, device, folds=None, mode=None, batch_size: int = 64, chunk: int = 1024):
    """Fold-ensemble logits of a k-fold run on the rows of `df` (new text, entity-swap copies, or any rows with
    sentence, start, end and entity): each fold's saved checkpoint is loaded, predicts every row, and the logits
    are averaged over `folds` (default: the run's), as `KFoldResult.ensemble` averages the saved validation logits.

    `mode`: None (the run's own), "unmasked" / "masked" (a HAMAM model's pass alone) or "hamam"; or a tuple of
    these, then {mode: logits} with each fold model loaded once. A tuple with both passes and "hamam" gets
    "hamam" as the passes' mean, which is what the model computes in its one forward of both (not for
    loss two_head: its passes are averaged before a non-linear map), so it costs no third forward.
    Rows go through in length order, `chunk` at a time (little padding; the bar counts rows and shows rows/s).
    """
    import torch
    from tqdm.auto import tqdm

    from . import model as hm
    from . import training as T
    from .device import resolve_precision

    folds = list(result.folds if folds is None else folds)
    if not folds or set(folds) - set(result.folds):
        raise ValueError(f"folds {folds} must be a non-empty subset of the run's folds {result.folds}")
    modes = tuple(mode) if isinstance(mode, (tuple, list)) else (mode,)
    derive = "hamam" in modes and {"unmasked", "masked"} <= set(modes) and result.cfg.loss != "two_head"
    todo = [m for m in modes if not (derive and m == "hamam")]
    sums = {m: np.zeros((len(df), len(LABELS))) for m in todo}
    device = torch.device(device)
    bar = tqdm(
        total=len(folds) * len(todo) * len(df),
        unit="row",
        desc=f"{Path(result.root).name} {'+'.join(m or result.cfg.mode for m in modes)}",
        leave=False,  # on a page the widget is hidden when done (export_html skips it)
        disable=None,  # a bar in terminals
    )
    for k in folds if len(df) else []:
        model, tok = hm.load(result.checkpoint(k), device)
        enc = T.encode_df(tok, df, model.cfg)
        prec = resolve_precision(model.cfg.precision, device)
        lengths = np.array([len(e["input_ids"]) for e in enc])
        same = pd.factorize(pd.Series([tuple(e["input_ids"]) for e in enc]))[0]  # identical rows side by side
        order = np.lexsort((same, lengths))
        for m in todo:
            for part in np.array_split(order, max(1, -(-len(order) // chunk))):
                z = T.predict(model, [enc[i] for i in part], tok.pad_token_id, device, batch_size, m, prec)
                sums[m][part] += z
                bar.update(len(part))
        del model
    bar.close()
    out = {m: (s / len(folds)).astype(np.float32) for m, s in sums.items()}
    if derive:
        out["hamam"] = (out["unmasked"] + out["masked"]) / 2
    return out if isinstance(mode, (tuple, list)) else out[mode]


def ensemble_logits(result, df: pd.DataFrame, device: str = "auto", batch_size: int = 64) -> np.ndarray:
    """The mean of the fold models' logits on `df` (checkpoints from the run's cache)."""
    from .device import pick_device

    return predict_folds(result, df, pick_device(device), batch_size=batch_size)


def headline_runs(prof, data) -> list:
    """Chapter 02's headline runs: the HAMAM recipe under each of the profile's seeds, read from the cache."""
    return [plan.read(prof, data, plan.seed_run("hamam", s, prof)) for s in plan.seeds(prof)]


def _require_trained(prof, data, name: str) -> None:
    res = plan.resolve(prof, plan.get(prof, name), data)
    missing = [k for k in res.run.folds if k not in res.done]
    if missing or not all((res.root / f"fold{k}" / "checkpoint").is_dir() for k in res.run.folds):
        raise FileNotFoundError(
            f"run {name} ({prof.name} profile) is not trained (folds {missing or 'without checkpoints'})"
            f": python -m lib.train --profile {prof.name} --runs {name}"
        )


def predict_file(
    profile: str, input_path, output_path, run: str = "headline", rule: str = "threshold", device: str = "auto"
) -> pd.DataFrame:
    """Labels and probabilities for every row of `input_path`, written to `output_path` (see the module doc);
    `rule` applies to a single run, the headline's rule is its own."""
    from .data import read_split_file
    from .folds import load_prepared

    df = read_split_file(input_path, labeled=False)  # a bad file stops here, naming file, row and rule
    prof = get_profile(profile)
    data = load_prepared(prof)
    names = [plan.seed_run("hamam", s, prof) for s in plan.seeds(prof)] if run == HEADLINE else [run]
    for name in names:
        _require_trained(prof, data, name)
    if run == HEADLINE:
        results = headline_runs(prof, data)
        decide, _ = ensembles.headline_rule(results, data["train"])
        per_run = [ensemble_logits(r, df, device) for r in results]
        n_models = [len(r.folds) for r in results]  # equal weight per model, as the chapter's pooled ensemble
        logits = np.average(np.stack(per_run), axis=0, weights=n_models)
        labels = decide(logits)
    else:
        result = plan.read(prof, data, run)
        name, param = decision_rule(result, data["train"], rule)
        logits = ensemble_logits(result, df, device)
        labels = apply_rule(logits, name, param)
    p = softmax(logits)
    out = df.rename(columns={"start": "entity_pos_start_rel", "end": "entity_pos_end_rel"})
    out["label"] = labels
    for i, lab in enumerate(LABELS):
        out[f"p_{LABEL_NAMES[lab]}"] = p[:, i].round(5)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output_path, sep="\t", index=False)
    return out


def main(argv=None) -> int:
    import argparse

    from .config import PROFILES
    from .data import DataError

    ap = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--input", required=True, help="tab-separated file in the competition's columns")
    ap.add_argument("--output", required=True)
    ap.add_argument(
        "--run",
        default=HEADLINE,
        help="'headline' (default: chapter 02's all-seeds HAMAM ensemble under its own rule) or a fold run of the plan",
    )
    ap.add_argument("--rule", default="threshold", choices=RULES, help="a single run's rule (chosen on its OOF rows)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        out = predict_file(args.profile, args.input, args.output, args.run, args.rule, args.device)
    except (DataError, FileNotFoundError, KeyError) as e:
        print(f"python -m lib.predict: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    shares = out["label"].value_counts(normalize=True).round(3).to_dict()
    print(f"{len(out)} rows -> {args.output}; label shares {shares}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
