"""run_all.sh end to end: the smoke profile of every notebook, its failure modes, and that it
leaves committed files alone. These are the slowest tests (minutes); CI runs them."""

import json
import os
import shutil
import subprocess
import time

import nbformat
import pytest

from lib.config import RAW_DIR, ROOT

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def git_dirty() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout


def test_notebook_sources_are_clean_and_parameterised():
    assert [n[:2] for n in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "profile = " in params[0].source, (
            f"{name}: one tagged parameters cell with `profile`"
        )


def test_run_all_smoke_executes_every_notebook_and_regenerates_figures():
    before = git_dirty()
    start = time.time()
    r = subprocess.run(["./run_all.sh", "--profile", "smoke"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for name in NOTEBOOKS:
        assert f"{name}: " in r.stdout  # its wall time is printed
        nb = nbformat.read(ROOT / "runs" / "smoke" / "notebooks" / name, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
        figures = list((ROOT / "runs" / "smoke" / "figures").glob(f"{name[:2]}_*.png"))
        assert figures and all(f.stat().st_mtime >= start for f in figures), f"{name}: no fresh figure"
    checks = json.loads((ROOT / "runs" / "smoke" / "figures" / "figure_checks.json").read_text())
    assert {n[:2] for n in checks} >= {name[:2] for name in NOTEBOOKS}  # every chapter's figures were checked
    assert not {n: p for n, p in checks.items() if p}, "figures with text problems (lib.chapters.figcheck)"
    results = json.loads((ROOT / "runs" / "smoke" / "figures" / "results.json").read_text())
    run = results["run"]  # the run as data: one commit for every chapter, its wall seconds, machine, versions
    assert run["seconds"] > 0 and run["precision"] in ("bf16", "fp16", "fp32")
    assert {"hardware", "torch", "transformers", "parts"} <= set(run) and "02/hamam" in run["runs"]
    assert {c["commit"] for c in results["chapters"].values()} == {run["commit"]}
    assert all(results["chapters"][n[:2]]["numbers"] for n in NOTEBOOKS)  # every chapter records its numbers
    assert all(results["chapters"][n[:2]]["answers"] for n in NOTEBOOKS)  # ... and its answers, for the README
    for page in sorted((ROOT / "runs" / "smoke" / "reports").glob("*.html")):  # clean pages: no leftover output
        text = page.read_text()
        for leftover in ("PosixPath(", "Traceback", "Default prompt name is set to"):
            assert leftover not in text, f"{page.name}: {leftover}"
    plan_listing = subprocess.run(
        ["./run_all.sh", "--plan", "--profile", "smoke"], cwd=ROOT, capture_output=True, text=True
    )
    assert plan_listing.returncode == 0 and "missing" not in plan_listing.stdout  # every run of the plan cached
    assert git_dirty() == before  # no committed file (sources, committed figures) changed


@pytest.fixture
def sandbox(tmp_path):
    """A copy of the project skeleton sharing .venv and lib, with notebooks of our own."""
    for name in (".venv", "lib", "scripts", "data", "requirements.txt", "pyproject.toml"):
        os.symlink(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "run_all.sh", tmp_path)
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "cpu"\ndata_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def test_run_all_stops_at_the_first_failing_notebook_and_keeps_its_copy(sandbox):
    _notebook(sandbox / "notebooks" / "01_ok.ipynb", "print('ok', profile)")
    _notebook(sandbox / "notebooks" / "02_fails.ipynb", "raise RuntimeError('boom')")
    _notebook(sandbox / "notebooks" / "03_never.ipynb", "print('never')")
    r = subprocess.run(["./run_all.sh", "--profile", "smoke"], cwd=sandbox, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "FAILED: 02_fails.ipynb" in r.stderr
    kept = nbformat.read(sandbox / "runs" / "smoke" / "notebooks" / "02_fails.ipynb", as_version=4)
    assert any(
        o.output_type == "error" and o.ename == "RuntimeError"
        for c in kept.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert not (sandbox / "runs" / "smoke" / "notebooks" / "03_never.ipynb").exists()
    # the injected profile reached the parameters cell of the first notebook
    ok = nbformat.read(sandbox / "runs" / "smoke" / "notebooks" / "01_ok.ipynb", as_version=4)
    assert "ok smoke" in "".join(o.get("text", "") for c in ok.cells if c.cell_type == "code" for o in c.outputs)


def test_run_all_rejects_bad_data_with_one_line(tmp_path):
    for f in RAW_DIR.glob("*.csv"):
        shutil.copy(f, tmp_path / f.name)
    lines = (tmp_path / "train_data.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    head, row = lines[0], lines[5].split("\t")
    row[-1] = "5\n"  # label 5: data row 5
    (tmp_path / "train_data.csv").write_text(
        head + "".join(lines[1:5]) + "\t".join(row) + "".join(lines[6:]), encoding="utf-8"
    )
    r = subprocess.run(
        ["./run_all.sh", "--profile", "smoke", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "train_data.csv: row 5: label must be one of [-1, 0, 1]" in err[0]


def test_run_all_rejects_unknown_arguments():
    r = subprocess.run(["./run_all.sh", "--profile", "gpu"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown profile" in r.stderr
    r = subprocess.run(["./run_all.sh", "--executor", "dask"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown executor 'dask'" in r.stderr


def test_run_all_only_with_a_data_dir_trains_and_reads_that_copy(sandbox, raw_copy, tmp_path):
    """`./run_all.sh --only 02 --data-dir X` trains chapter 02's runs on X and the chapter reads X, not what
    chapter 01 prepared last."""
    _notebook(
        sandbox / "notebooks" / "02_reads.ipynb",
        "from lib.chapters import study\n"
        "S = study.setup(profile, data_dir=data_dir)\n"
        "print('rows', len(S.train), S.data.data_dir)",
    )
    env = {**os.environ, "HAMAM_RUNS_DIR": str(tmp_path / "runs")}
    cmd = ["./run_all.sh", "--profile", "smoke", "--only", "02", "--data-dir", str(raw_copy)]
    r = subprocess.run(cmd, cwd=sandbox, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "fold jobs to train" in r.stdout  # chapter 02's runs, trained on the copy
    out = nbformat.read(sandbox / "runs" / "smoke" / "notebooks" / "02_reads.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert f"rows 40 {raw_copy.resolve()}" in text
    listing = subprocess.run([*cmd, "--plan"], cwd=sandbox, capture_output=True, text=True, timeout=600, env=env)
    assert listing.returncode == 0 and "02/hamam" in listing.stdout and "missing" not in listing.stdout


def test_run_record_adds_parts_of_one_run_and_a_whole_run_starts_a_new_record(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_record", ROOT / "scripts" / "run_record.py")
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    monkeypatch.setattr(rec, "results_path", lambda name: tmp_path / "results.json")
    monkeypatch.setattr(rec, "load_prepared", lambda prof: {})
    monkeypatch.setattr(rec, "run_seconds", lambda prof, data: {"02/hamam": {"folds": 5, "seconds": 3000.0}})

    def record(*args):
        assert rec.main(["--profile", "smoke", *args]) == 0
        return json.loads((tmp_path / "results.json").read_text())["run"]

    record("--seconds", "10", "--only", "02")
    run = record("--seconds", "5", "--only", "03")
    assert run["seconds"] == 15 and [p["only"] for p in run["parts"]] == ["02", "03"]  # one run in two parts
    run = record("--seconds", "7")
    assert run["seconds"] == 7 and run["parts"] == [{"only": "all", "seconds": 7}]  # a whole run: a new record
    run = record("--seconds", "9")
    assert run["seconds"] == 9 and len(run["parts"]) == 1  # a second whole run replaces it, never adds
    assert run["runs"]["02/hamam"]["seconds"] == 3000.0 and run["commit"]
    run = record("--seconds", "100", "--add", "--note", "training before")  # training done beforehand
    assert run["seconds"] == 109 and run["parts"][-1] == {"only": "training", "seconds": 100, "note": "training before"}
    with pytest.raises(SystemExit):
        rec.main(["--profile", "smoke", "--seconds", "5", "--add"])  # an added part must say what it was
