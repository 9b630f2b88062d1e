"""Write the README's results block from figures/results.json: the run record (commit, wall seconds and its parts,
hardware, precision, versions, training seconds per run of the plan) and every chapter's computed answers, the
same text its page shows. The README's prose around the block holds no number of the run, so nothing in it can
go stale; `--check` (run by the tests) fails when the block is not what the committed results.json says.

    python scripts/readme_results.py --write    # rewrite the block between the markers in README.md
    python scripts/readme_results.py --check    # exit 1 if the block differs (or is missing while results have answers)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- results:begin (written by `python scripts/readme_results.py --write` from figures/results.json) -->"
END = "<!-- results:end -->"
GOAL, CEILING = 9_000, 12_000  # the whole run's wall seconds: goal and ceiling (README, "Budget")


def title(chapter: str, notebooks: Path) -> tuple[str, str]:
    """The chapter's title (its notebook's first heading) and its page's file name."""
    nb = sorted(notebooks.glob(f"{chapter}_*.ipynb"))
    if not nb:
        return f"Chapter {chapter}", f"{chapter}.html"
    first = json.loads(nb[0].read_text())["cells"][0]["source"]
    head = "".join(first).splitlines()[0].lstrip("# ").strip()
    return head, nb[0].with_suffix(".html").name


def duration(seconds: float) -> str:
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def run_paragraph(run: dict) -> str:
    notes = [f" ({p['note']})" if "note" in p else "" for p in run["parts"]]
    parts = "; ".join(f"{p['only']}: {p['seconds']:,} s{n}" for p, n in zip(run["parts"], notes))
    trained = run.get("runs", {})
    total = sum(r["seconds"] for r in trained.values())
    s = run["seconds"]
    budget = (
        f"within the goal of {GOAL:,} s"
        if s <= GOAL
        else f"over the goal of {GOAL:,} s, within the ceiling of {CEILING:,} s"
        if s <= CEILING
        else f"over the ceiling of {CEILING:,} s"
    )
    n = f"{len(run['parts'])} part" + ("s" if len(run["parts"]) > 1 else "")
    lines = [
        f"**The run.** Code of commit `{run['commit'][:12]}`, cpu profile: **{s:,} s** ({duration(s)}) of wall "
        f"time in {n} ({parts}), on {run['hardware']}, precision {run['precision']}, torch "
        f"{run['torch']}, transformers {run['transformers']}: {budget}.",
    ]
    if trained:
        lines += [
            "",
            f"Training seconds per run of the plan, summed over its folds' `done.json` (the training loop, held-out "
            f"evaluations included; prediction of the OOF, validation and final rows not included): {total:,.0f} s "
            "in all.",
            "",
            "| run | folds | training seconds |",
            "|---|---|---|",
            *(f"| `{name}` | {r['folds']} | {r['seconds']:,.0f} |" for name, r in trained.items()),
        ]
    return "\n".join(lines)


def render(doc: dict, notebooks: Path = ROOT / "notebooks", pages: str = "reports") -> str:
    """The block's text (markers included) for a results.json document."""
    out = [BEGIN, ""]
    if not any(e.get("answers") for e in doc.get("chapters", {}).values()):
        chapters = ", ".join(doc.get("chapters", {}))
        out += [
            f"`figures/results.json` still holds an earlier run's numbers (chapters {chapters}), recorded before "
            "the chapters kept their answers: read them on the pages in `reports/`, from the same run. The next "
            "full run of `./run_all.sh` writes this block.",
            "",
        ]
        return "\n".join(out + [END]) + "\n"
    if "run" in doc:
        out += [run_paragraph(doc["run"]), ""]
    for ch, entry in doc.get("chapters", {}).items():
        head, page = title(ch, notebooks)
        out += [f"#### {head}", f"([page]({pages}/{page}); the chapter ran in {entry['seconds']:,} s)", ""]
        answers = entry.get("answers") or ["(this entry predates recorded answers: see the chapter's page)"]
        for a in answers:
            out += [a.strip(), ""]
    return "\n".join(out + [END]) + "\n"


def replace_block(readme: str, block: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md: no results block (the lines {BEGIN!r} ... {END!r}); add them where it belongs")
    head, rest = readme.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + block.rstrip("\n") + tail


def check(readme: str, doc: dict, notebooks: Path = ROOT / "notebooks") -> str | None:
    """None when the README's block is what `doc` says; otherwise why not. A results file whose chapters carry
    answers must be in the README; an older one (no answers) is not required to be."""
    has_answers = any(e.get("answers") for e in doc.get("chapters", {}).values())
    if BEGIN not in readme:
        return "README.md has no results block, but figures/results.json has answers" if has_answers else None
    if replace_block(readme, render(doc, notebooks)) != readme:
        return "README.md's results block differs from figures/results.json: run scripts/readme_results.py --write"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    ap.add_argument("--results", type=Path, default=ROOT / "figures" / "results.json")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    doc = json.loads(args.results.read_text())
    readme = args.readme.read_text()
    if args.write:
        args.readme.write_text(replace_block(readme, render(doc)))
        print(f"{args.readme}: results block written from {args.results}")
        return 0
    problem = check(readme, doc)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("README results block matches figures/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
