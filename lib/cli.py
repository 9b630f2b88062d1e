"""The study's command line: `python -m lib.train [status | materialise] ...` (lib/train.py calls `main`).

Nothing in `lib` imports this module, so the entry point closes no import circle.
"""

from __future__ import annotations

import dataclasses

from . import executors
from .config import TrainConfig, get_profile
from .plan import CHAPTERS, experiment, get, materialise, register, status, train_runs

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_help() -> str:
    """Every TrainConfig field with its type and default, for --help."""
    rows = [f"  {f.name} ({f.type}, default {f.default!r})" for f in FIELDS.values()]
    return "TrainConfig fields for --set FIELD=VALUE:\n" + "\n".join(rows)


def parse_set(items) -> dict:
    """["lr=3e-5", "epochs=5"] -> {"lr": 3e-05, "epochs": 5}, each value parsed as its field's type.
    Raises ValueError naming the field for an unknown field or a value of the wrong type."""
    out = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
        if name not in FIELDS:
            raise ValueError(f"--set {name}: no such TrainConfig field (--help lists them)")
        kind = str(FIELDS[name].type)
        text = text.strip()
        try:
            if "None" in kind and text.lower() in ("none", "null"):
                value = None
            elif kind.startswith("bool"):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value = text.lower() in ("true", "1")
            elif kind.startswith("int"):
                value = int(text)
            elif kind.startswith("float"):
                value = float(text)
            else:
                value = text
        except ValueError:
            raise ValueError(f"--set {name}: {text!r} is not a {kind}") from None
        out[name] = value
    return out


def _parser(prog: str):
    import argparse

    from .config import PROFILES

    ap = argparse.ArgumentParser(
        prog=prog,
        description="The study's plan: list its runs, or train what is missing.",
        epilog=field_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "command",
        nargs="?",
        choices=("status", "materialise"),
        default="materialise",
    )
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--only", default=None, help="comma-separated chapters (e.g. 02,03): their runs only")
    ap.add_argument("--runs", default=None, help="comma-separated run names (see status)")
    ap.add_argument("--folds", default=None, help="comma-separated folds of the selected runs (a Slurm array task)")
    ap.add_argument("--force", action="store_true", help="retrain every selected run")
    ap.add_argument("--force-runs", default=None, help="comma-separated run names to retrain")
    ap.add_argument("--executor", choices=executors.EXECUTORS, default=None)
    ap.add_argument("--data-dir", default=None, help="another copy of the RuSentNE-23 files (default data/raw)")
    ap.add_argument(
        "--no-calibrate",
        action="store_true",
        help="status: estimate only from runs measured here (no timed steps; nothing built)",
    )
    ap.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="train an experiment: the --runs run(s) with this TrainConfig field changed (repeatable), named "
        "e.g. 02/hamam@epochs=5,lr=3e-05, cached under its own key and listed by status",
    )
    return ap


def _split(s):
    """Comma-separated names; an experiment's overrides (`02/hamam@epochs=5,lr=3e-05`) stay with their name."""
    out = []
    for x in (x.strip() for x in (s or "").split(",")):
        if x and "=" in x and "@" not in x and "/" not in x and out and "@" in out[-1]:
            out[-1] += "," + x
        elif x:
            out.append(x)
    return out or None


def chapters_arg(s):
    return [c.zfill(2) for c in _split(s)] if s else None


def main(argv=None, prog: str = "python -m lib.train") -> int:
    import sys

    from .data import DataError
    from .folds import load_prepared

    args = _parser(prog).parse_args(argv)
    try:
        prof = get_profile(args.profile)
        chapters, names = chapters_arg(args.only), _split(args.runs)
        unknown = sorted(set(chapters or []) - set(CHAPTERS))
        if unknown:
            raise ValueError(f"--only: no chapter {', '.join(unknown)} (chapters: {', '.join(CHAPTERS)})")
        for n in names or []:
            get(prof, n)
        for n in _split(args.force_runs) or []:
            get(prof, n)
        folds = [int(k) for k in _split(args.folds)] if args.folds else None
        overrides = parse_set(args.set)
        if overrides and (not names or args.command != "materialise"):
            raise ValueError("--set needs --runs (the declared runs to vary) and trains them: no status")
        variants = [experiment(get(prof, n), overrides) for n in names or []] if overrides else []
        executors.resolve(args.executor, prof.executor)
        data = load_prepared(prof, args.data_dir)
    except (ValueError, KeyError, TypeError, DataError) as e:
        print(f"{prog}: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.command == "status":
        rows = status(prof, data, chapters, calibrate_here=not args.no_calibrate)
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['kind']:<8}  {r['status']:<20}  {r['estimate']:>12}  {r['dir']}")
        missing = [r for r in rows if r["status"] != "cached"]
        known = sum(r["seconds"] or 0 for r in missing)
        unknown = sum(r["seconds"] is None for r in missing)
        how = "measured, or calibrated by a few timed steps," if not args.no_calibrate else "measured"
        print(
            f"{len(rows) - len(missing)} of {len(rows)} cached; to train: ~{known / 60:.0f} min ({how} on this "
            "machine; an estimate: early stopping may end runs sooner, evaluations add time)"
            + (f", {unknown} not estimated" if unknown else "")
        )
        return 0
    force = True if args.force else set(_split(args.force_runs) or [])
    try:
        if variants:
            for n in names:
                register(prof, n, overrides)
            if folds is not None:
                variants = [dataclasses.replace(r, folds=tuple(k for k in r.folds if k in folds)) for r in variants]
            say = f"experiment ({prof.name}): " + ", ".join(r.name for r in variants)
            train_runs(prof, data, variants, bool(args.force), args.executor, say=say)
        else:
            materialise(prof, data, chapters, names, force, args.executor, folds=folds)
    except executors.FoldJobsFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0
