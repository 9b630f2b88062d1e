"""Record a run of `run_all.sh` in the profile's results.json as data: `run` = {commit, seconds, hardware,
precision, torch, transformers, parts, runs}. Called by run_all.sh at its end with the part's wall seconds;
parts of one run (the same commit, chapters filled in more than one go with --only) add up in `seconds`; a part
that ran every chapter is a whole run and starts a new record. `runs` holds each plan run's training seconds
from its folds' done.json, whenever and wherever they trained.

Training done before `run_all.sh` (e.g. `python -m lib.train materialise` in the background, in several goes) is
part of the run's wall time: `--add --note` adds such a part to the current record instead of starting a new one.

    python scripts/run_record.py --profile cpu --seconds 4545 [--only 02]
    python scripts/run_record.py --profile cpu --seconds 7199 --add --note "training, 15 fold jobs, 2026-12-06"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import calibrate, plan  # noqa: E402
from lib.chapters.study import code_commit, results_path  # noqa: E402
from lib.config import get_profile  # noqa: E402
from lib.device import hardware, pick_device, resolve_precision, versions  # noqa: E402
from lib.folds import load_prepared  # noqa: E402
from lib.metrics import count  # noqa: E402


def run_seconds(prof, data) -> dict:
    """Per run of the plan: its folds' training seconds from their done.json (what the cache holds now)."""
    out = {}
    for run in plan.runs(prof):
        if run.kind not in ("fold", "sbert"):
            continue
        res = plan.resolve(prof, run, data)
        secs = [json.loads((res.root / f"fold{k}" / "done.json").read_text()).get("seconds") for k in res.done]
        if secs:  # the signature lets `--plan` on a fresh clone use these seconds as its estimate
            out[run.name] = {
                "folds": len(secs),
                "seconds": round(sum(s or 0 for s in secs), 1),
                "signature": calibrate.run_signature(run),
            }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seconds", type=float, required=True, help="wall seconds of this part of the run")
    ap.add_argument("--only", default="", help="the chapters this part ran (empty: all)")
    ap.add_argument("--add", action="store_true", help="add this part to the current record (training done before)")
    ap.add_argument("--note", default="", help="what this part was: when, what ran, what else shared the machine")
    args = ap.parse_args(argv)
    if args.add and not args.note:
        ap.error("--add needs --note (say what the part ran, when, and what else shared the machine)")
    prof = get_profile(args.profile)
    path = results_path(prof.name)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    commit = code_commit()
    old = doc.get("run", {})
    same_run = old.get("commit") == commit and bool(args.only)  # a whole run does not add to an earlier one
    if args.add and not old:
        raise SystemExit(f"{path}: no run record to add a part to (run ./run_all.sh first)")
    parts = old.get("parts", []) if same_run or args.add else []
    part = {"only": "training" if args.add else args.only or "all", "seconds": round(args.seconds)}
    if args.note:
        part["note"] = args.note
    parts.append(part)
    doc["run"] = {
        "commit": old["commit"] if args.add else commit,  # an added part joins the run it belongs to
        "seconds": sum(p["seconds"] for p in parts),
        "parts": parts,
        "hardware": hardware(),
        "precision": resolve_precision("auto", pick_device(prof.device)),
        **versions(),
        "runs": run_seconds(prof, load_prepared(prof)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"run record: commit {commit[:12]}, {doc['run']['seconds']} s in {count(len(parts), 'part')} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
