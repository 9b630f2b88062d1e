"""One cache protocol for every artifact the study builds: prepared tables, backbone builds, HAMAM fold runs
and SBERT fold runs.

An artifact lives in a directory whose name ends in its key. The key hashes every input: the settings, the
content digests of the artifacts it reads (data, backbone) and a digest of exactly the code that produces it.
The code digest is taken from the syntax tree without docstrings (comments never reach the tree), so editing
prose or formatting retrains nothing while editing a line of logic retrains what depends on it. Files are
written into the directory first and `done.json` (with the key) last, atomically: an artifact counts as
complete only when its `done.json` carries the expected key, so a killed run or an edited input can never be
served.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import os
import shutil
import textwrap
import uuid
from contextlib import contextmanager
from pathlib import Path

META = "done.json"


def code_digest(*deps) -> str:
    """Digest of functions, classes or modules, or of "module:attribute" strings resolved now (so a patched
    attribute is seen). Docstrings, comments and formatting do not count. An attribute that is a value (a
    module constant such as the label order) enters by its `repr`, so changing it changes the digest.
    Only the source enters, never the module path: moving an unchanged function keeps its digest."""
    h = hashlib.sha1()
    for dep in deps:
        obj = _resolve(dep) if isinstance(dep, str) else dep
        h.update(_normalised_source(obj).encode())
    return h.hexdigest()[:12]


def _resolve(dep: str):
    module, _, attr = dep.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _normalised_source(obj) -> str:
    if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)):
        return "value:" + repr(obj)
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _is_docstring(node) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def key(*ingredients) -> str:
    """Short stable hash of JSON-serialisable ingredients (dicts are sorted)."""
    blob = json.dumps(ingredients, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def read_meta(path: Path) -> dict:
    f = Path(path) / META
    return json.loads(f.read_text()) if f.is_file() else {}


def is_complete(path: Path, expected_key: str) -> bool:
    return read_meta(path).get("key") == expected_key


def write_meta(path: Path, expected_key: str, **info) -> None:
    """Written last and atomically: its presence with the key means every other file is in place."""
    path = Path(path)
    tmp = path / f".{META}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"key": expected_key, **info}))
    os.replace(tmp, path / META)


def invalidate(path: Path) -> None:
    """Before (re)writing an artifact: the old marker must not vouch for half-written new files."""
    (Path(path) / META).unlink(missing_ok=True)


@contextmanager
def building(path: Path):
    """Build a whole directory beside its final place and move it in only when complete."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():  # an older incomplete copy, or one a parallel builder finished first
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def files_digest(path: Path, skip=(META,)) -> str:
    """Content digest of a directory's files (names and bytes), `done.json` excluded."""
    h = hashlib.sha1()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name not in skip):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]
