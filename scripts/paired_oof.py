"""Two runs of the plan (or experiments) compared on the same out-of-fold rows, paired: the check a recipe change
needs before it is adopted (validation is never read).

    python scripts/paired_oof.py --a 02/hamam --b "02/hamam@epochs=5" --folds 0,1 [--profile cpu]

Prints B - A in F1pn on the OOF rows of the folds, under argmax and under each run's own OOF threshold, with a
sentence-clustered paired bootstrap 95% CI; per fold; the thresholds, best steps and seconds of each run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import plan, rules  # noqa: E402
from lib.config import get_profile  # noqa: E402
from lib.folds import load_prepared  # noqa: E402
from lib.metrics import f1pn, fmt, paired_bootstrap_diff, sentence_groups, to_labels  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args(argv)
    prof, folds = get_profile(args.profile), [int(k) for k in args.folds.split(",")]
    data = load_prepared(prof)
    train = data["train"]
    res = {name: plan.read(prof, data, name, folds) for name in (args.a, args.b)}
    y, fold, groups = train["label"].to_numpy(), train["fold"].to_numpy(), sentence_groups(train)
    held = np.isin(fold, folds)
    pred, t = {}, {}
    for name, r in res.items():
        t[name] = rules.choose(y[held], r.oof[held], "threshold")
        pred[name] = {"argmax": to_labels(r.oof[held]), "own OOF threshold": rules.threshold_rule(r.oof[held], t[name])}
    for rule in ("argmax", "own OOF threshold"):
        d = paired_bootstrap_diff(y[held], pred[args.b][rule], pred[args.a][rule], groups=groups[held], n=args.boot)
        print(f"{rule}: {args.b} - {args.a} = {fmt(*d, signed=True)} (OOF rows of folds {folds}, paired)")
    for k in folds:
        m = fold == k
        per = {n: f1pn(y[m], to_labels(r.oof[m])) for n, r in res.items()}
        gain = per[args.b] - per[args.a]
        print(f"fold {k}, argmax: {args.a} {per[args.a]:.3f}, {args.b} {per[args.b]:.3f} ({gain:+.3f})")
    for name, r in res.items():
        steps = [(x["best_step"], x["steps"]) for x in r.runs]
        seconds = [round(x["seconds"]) for x in r.runs]
        print(f"{name}: OOF threshold {t[name]:g}; best step / steps {steps}; seconds {seconds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
