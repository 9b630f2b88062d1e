"""The recipe search table: every cached HAMAM fold run of a profile scored on its clean out-of-fold rows.

    python scripts/recipe_table.py [--profile cpu] [--runs-dir DIR] [--mode hamam] [--out FILE.md]

Reads fold directories (done.json, logits_oof.npy) under DIR/<profile>/models (default: the study's runs
directory, HAMAM_RUNS_DIR), whatever code version trained them, so exploratory runs count (lib.chapters.ch02.recipe).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters.ch02 import recipe  # noqa: E402
from lib.config import get_profile  # noqa: E402
from lib.folds import load_prepared  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--runs-dir", default=None, help="a runs directory other than the study's (e.g. exploratory runs)")
    ap.add_argument("--mode", default="hamam")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    prof = get_profile(args.profile)
    df = recipe.table(prof, load_prepared(prof)["train"], args.runs_dir, args.mode, args.bootstrap)
    if df.empty:
        print("no cached fold runs found")
        return 1
    text = recipe.markdown(df)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
