from pathlib import Path

import pandas as pd
import pytest

from lib.config import RAW_DIR


@pytest.fixture(scope="module")
def smoke():
    """The smoke profile and its prepared tables (one module's tests share them)."""
    from lib.config import get_profile
    from lib.folds import load_prepared

    prof = get_profile("smoke")
    return prof, load_prepared(prof)


@pytest.fixture(autouse=True)
def _no_outside_executor_or_storage(monkeypatch):
    """A developer's exported HAMAM_* settings must not move the tests' runs or executor."""
    for var in ("HAMAM_EXECUTOR", "HAMAM_RUNS_DIR", "HAMAM_CACHE_DIR", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def raw_copy(tmp_path) -> Path:
    """A writable copy of the first rows of every split, same file names as data/raw."""
    for name in ("train_data.csv", "validation_data_labeled.csv", "final_data.csv"):
        df = pd.read_csv(RAW_DIR / name, sep="\t", dtype=str, keep_default_na=False, nrows=40)
        df.to_csv(tmp_path / name, sep="\t", index=False)
    return tmp_path


def read_raw(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def write_raw(df: pd.DataFrame, path) -> Path:
    df.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def chapter_style():
    """The chapters' figure style (constrained layout, tight bounding box), undone after the test."""
    import matplotlib
    import matplotlib.pyplot as plt

    from lib.chapters import plots

    with matplotlib.rc_context():
        plots.setup()
        yield
    plt.close("all")
