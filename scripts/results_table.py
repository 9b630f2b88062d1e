"""Print figures/results.json as Markdown tables, one per chapter (what the README's Results cite).

python scripts/results_table.py [--profile cpu]
"""

from __future__ import annotations

import argparse
import json

from lib.chapters import study
from lib.chapters.study import results_path


def fmt(v: list[float]) -> str:
    if len(v) == 3:
        return study.fmt(*v)
    return ", ".join(f"{x:.0f}" if float(x).is_integer() else f"{x:.3f}" for x in v)  # counts, layer and head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    doc = json.loads(results_path(ap.parse_args().profile).read_text())
    print(f"CIs: {doc['ci']}, 95%.\n")
    for ch, entry in doc["chapters"].items():
        print(f"**{ch}** ({entry['backbone']}; {entry['seconds']} s on {entry['hardware']})\n")
        print("| result | value [95% CI] |\n|---|---|")
        for k, v in entry["numbers"].items():
            print(f"| `{k}` | {fmt(v)} |")
        print()


if __name__ == "__main__":
    main()
