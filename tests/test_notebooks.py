"""Notebooks stay chapters: short code cells, no functions defined in them, and no block of code
repeated across them (the repository's duplicate finder does not read notebooks, so this does)."""

import re
from collections import defaultdict

import nbformat

from lib.config import ROOT

MAX_LINES, WINDOW = 16, 6
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []):
                yield (
                    path.name,
                    i,
                    [
                        line.strip()
                        for line in c.source.splitlines()
                        if line.strip() and not line.strip().startswith("#")
                    ],
                )


def repeated_blocks(cells, window: int = WINDOW) -> dict:
    """Windows of `window` consecutive code lines (import lines excepted) found in more than one place."""
    seen = defaultdict(set)
    for name, i, lines in cells:
        body = [line for line in lines if not re.match(r"(from \S+ )?import ", line)]
        for j in range(len(body) - window + 1):
            seen["\n".join(body[j : j + window])].add((name, i))
    return {block: places for block, places in seen.items() if len(places) > 1}


def test_code_cells_are_short_and_define_nothing():
    long, defs = [], []
    for name, i, lines in code_cells():
        if len(lines) > MAX_LINES:
            long.append(f"{name} cell {i}: {len(lines)} lines")
        if any(re.match(r"(def|class) ", line) for line in lines):
            defs.append(f"{name} cell {i}")
    assert not long, f"code cells over {MAX_LINES} lines (logic belongs in lib/): {long}"
    assert not defs, f"functions defined in notebooks (move them to lib/, with a test): {defs}"


def test_no_block_of_code_repeats_across_cells():
    dup = repeated_blocks(code_cells())
    assert not dup, "repeated blocks:\n" + "\n\n".join(f"{sorted(p)}:\n{b}" for b, p in dup.items())


def test_the_repeat_finder_finds_a_repeat():
    block = [f"x{k} = f({k})" for k in range(WINDOW)]
    found = repeated_blocks([("a.ipynb", 1, block + ["y = 1"]), ("b.ipynb", 4, ["z = 0"] + block)])
    assert list(found.values()) == [{("a.ipynb", 1), ("b.ipynb", 4)}]
    assert not repeated_blocks([("a.ipynb", 1, block[:-1]), ("b.ipynb", 4, block[:-1])])


def test_no_markdown_cell_names_a_profile_field_instead_of_its_value():
    """Static prose never names `weight_grid` or `Profile.msd_seeds`: what depends on the profile is computed
    Markdown that shows the values."""
    from lib.config import Profile

    fields, found = set(Profile.__dataclass_fields__), []
    for path in NOTEBOOKS:
        for i, c in enumerate(nbformat.read(path, as_version=4).cells):
            if c.cell_type != "markdown":
                continue
            for code in re.findall(r"`([^`]+)`", c.source):
                m = re.fullmatch(r"(?:(?:Profile|prof)\.)?(\w+)", code.strip())
                if m and m.group(1) in fields:
                    found.append(f"{path.name} cell {i}: `{code}`")
    assert not found, found


def test_no_code_line_is_wider_than_the_library_allows():
    # the width ruff holds lib/ to (pyproject.toml): a reader of a page never scrolls sideways
    wide = [
        f"{path.name} cell {i}: {len(line)} characters"
        for path in NOTEBOOKS
        for i, c in enumerate(nbformat.read(path, as_version=4).cells)
        if c.cell_type == "code"
        for line in c.source.splitlines()
        if len(line) > 120
    ]
    assert not wide, wide
