"""What every chapter needs in one call (`setup`), the results file the README cites, and the
small text/table builders the chapters share (paired comparisons, CI formatting, verdicts)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DEFAULT_PROFILE, Profile, RunPaths, get_profile
from ..folds import load_prepared
from ..metrics import (
    ci_note,
    decimals,
    fmt,  # noqa: F401  (the chapters' CI formatter)
    paired,  # noqa: F401  (re-exported for the chapters)
    sentence_groups,
)
from ..training import hardware  # noqa: F401  (the chapters' hardware line)
from . import plots


@dataclass
class Study:
    prof: Profile
    paths: RunPaths
    data: dict
    device: object
    started: float = field(default_factory=time.perf_counter)
    answers: list[str] = field(default_factory=list)  # the chapter's computed answers, in page order

    @property
    def train(self) -> pd.DataFrame:
        return self.data["train"]

    @property
    def val(self) -> pd.DataFrame:
        return self.data["validation"]

    @property
    def final(self) -> pd.DataFrame:
        return self.data["final"]

    def backbone_dir(self, name: str) -> str:
        from .. import plan

        return plan.backbone_dir(self.prof, name, self.data, build=True)

    def run(self, name: str, folds=None):
        """A run of the plan, read from the cache (`lib.plan.read`)."""
        from .. import plan

        return plan.read(self.prof, self.data, name, folds)

    def label(self, name: str) -> str:
        """The run's one display name, the same in every chapter and figure."""
        from .. import plan

        return plan.get(self.prof, name).label

    def n_layers(self, name: str) -> int:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.backbone_dir(name)).num_hidden_layers

    def describe(self) -> str:
        return (
            f"profile {self.prof.name}: {len(self.train)} train / {len(self.val)} validation / "
            f"{len(self.final)} final rows, "
            f"{self.prof.n_folds} folds, device {self.device}, {hardware()}"
        )


def setup(
    profile: str = DEFAULT_PROFILE, chapter: str | None = None, data_dir: str | None = None, **overrides
) -> Study:
    """Profile, output folders, the prepared tables of `data_dir` (default data/raw), the device and the plot
    style, in one call. With `chapter`, the runs of the plan that chapter reads are trained first where missing
    (and it says so), so the chapter itself only reads."""
    from .. import plan
    from ..training import pick_device

    prof = get_profile(profile, **overrides)
    plots.setup()
    data = load_prepared(prof, data_dir or None)
    if chapter:
        plan.materialise(prof, data, chapters=[chapter])
    return Study(prof, RunPaths(prof.name).make(), data, pick_device(prof.device))


# --- comparisons and text -----------------------------------------------------------------------


def answer(study: Study, text: str) -> None:
    """Show one of the chapter's computed answers (Markdown) and keep it: `record` writes the chapter's answers
    into results.json, from which scripts/readme_results.py writes the README's results, so the README says what
    the page says."""
    from IPython.display import Markdown, display

    study.answers.append(text.strip())
    display(Markdown(text))


SUBSET_WORDS = {"seen": "seen-sentence", "unseen": "unseen-sentence"}  # not to be read as seen/unseen entities


def shown(comparison: str) -> str:
    """A comparison's key form as a reader sees it: 'hamam - masked' -> 'HAMAM − masked', 'e5-small - navec-bert
    (hamam)' -> 'e5-small − navec-bert (HAMAM)'; run modes take their display names, other names pass unchanged."""
    from .style import MODE_NAMES

    names = {**MODE_NAMES, "hamam_unmasked_pass": "HAMAM: unmasked pass", "null": "null control"}
    head, _, note = comparison.partition(" (")
    if " - " not in head:
        return comparison
    a, b = head.split(" - ", 1)
    out = f"{names.get(a, a)} − {names.get(b, b)}"
    return f"{out} ({names.get(note[:-1], note[:-1])})" if note.endswith(")") else out


def tidy(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A table as the pages show it: floats to `digits` decimals, one more where a value would print as 0 but is
    not (its side of 0 can decide a verdict), never -0.000; comparisons ('hamam - masked') by their display names."""
    out = df.copy()
    for c in out.select_dtypes("float").columns:  # fmt's rule, value by value; + 0.0: no -0.0
        out[c] = out[c].map(lambda x: np.round(x, decimals(x, digits)) + 0.0)
    text = lambda x: shown(x) if isinstance(x, str) else x  # noqa: E731
    for c in out.columns:
        if not pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].map(text)
    if isinstance(out.index, pd.MultiIndex):
        out.index = out.index.set_levels([lv.map(text) for lv in out.index.levels])
    else:
        out.index = out.index.map(text)
    return out


def verdict(row) -> str:
    """One line for a paired difference: direction, and whether its 95% CI excludes 0."""
    sure = (
        "the 95% CI excludes 0" if row["lo"] > 0 or row["hi"] < 0 else "the 95% CI includes 0: not distinguishable here"
    )
    return (
        f"{shown(row['comparison'])} on {SUBSET_WORDS.get(row['subset'], row['subset'])} rows: "
        f"{fmt(row['diff'], row['lo'], row['hi'], signed=True)} ({sure})"
    )


# --- figures/results.json -----------------------------------------------------------------------


def results_path(profile: str) -> Path:
    return RunPaths(profile).figures / "results.json"


def code_commit() -> str:
    """The commit whose code is running: `git rev-parse HEAD`, with "-dirty" when the code (lib/, notebooks/,
    scripts/, run_all.sh) differs from it; "unknown" outside a git checkout."""
    import subprocess

    from ..config import ROOT

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        paths = ["lib", "notebooks", "scripts", "run_all.sh"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def record(study: Study, chapter: str, numbers: dict, backbone: str | None = None, **extra) -> dict:
    """Write one chapter's headline numbers ({name: [value, lo, hi]}) and its answers so far (`answer`) into the
    profile's results.json.

    Rewrites only this chapter's entry, so chapters can be re-run alone."""
    path = results_path(study.prof.name)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc["ci"] = ci_note(study.prof.bootstrap)
    doc["profile"] = study.prof.name
    clean = {k: [round(float(x), 4) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in numbers.items()}
    doc.setdefault("chapters", {})[chapter] = {
        "commit": code_commit(),  # the code this chapter ran on; a full run's chapters all carry run.commit
        "backbone": backbone or study.prof.train.backbone,
        "seconds": round(time.perf_counter() - study.started),
        "hardware": hardware(),
        "numbers": clean,
        "answers": list(study.answers),
        **extra,
    }
    doc["chapters"] = dict(sorted(doc["chapters"].items()))
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc["chapters"][chapter]


def score_row(scores: pd.DataFrame, model: str, subset: str = "all", split: str = "validation") -> list[float]:
    r = scores[(scores["model"] == model) & (scores["subset"] == subset) & (scores["split"] == split)].iloc[0]
    return [r.f1pn, r.f1pn_lo, r.f1pn_hi]


# --- k-fold results as tables -------------------------------------------------------------------


def kfold_scores(study: Study, name: str, res, folds=None, decide=None) -> list[dict]:
    """Score rows for one k-fold run: clean OOF (rows of the folds run) and validation per subset, under
    `decide` (logits -> labels; default argmax)."""
    from ..metrics import score, score_subsets, to_labels

    decide = decide or to_labels
    train, n = study.train, study.prof.bootstrap
    held = res.oof_rows(train) if folds is None else np.isin(train["fold"].to_numpy(), folds)
    oof = {
        "model": name,
        "split": "train OOF",
        "subset": "all",
        **score(train["label"].to_numpy()[held], decide(res.oof[held]), n, groups=sentence_groups(train)[held]),
    }
    val = score_subsets(study.val, decide(res.ensemble("validation", folds)), n, model=name, split="validation")
    return [oof] + val.to_dict("records")


def decider(study: Study, res, folds=None, rule: str | None = None):
    """The profile's decision rule for a run (`Profile.decision_rule`), its parameter chosen on the run's clean
    OOF rows of `folds` only, never on validation: a function logits -> labels, with `.rule` and `.param`."""
    from ..rules import apply_rule, decision_rule

    train = study.train
    sub = res if folds is None else _with_folds(res, folds)
    name, param = decision_rule(sub, train, rule or study.prof.decision_rule)

    def decide(logits):
        return apply_rule(logits, name, param)

    decide.rule, decide.param = name, param
    return decide


def fold_models(res, train: pd.DataFrame, val: pd.DataFrame, rule: str = "threshold", choose=None, apply=None):
    """Each fold model of a k-fold run alone, one row per fold: its rule's parameter chosen on its own fold's
    held-out train rows (clean OOF rows, never validation) and its validation F1pn under argmax and under that
    rule. `choose(y, logits)` / `apply(logits, t)` default to `lib.rules`' for `rule`."""
    from .. import rules
    from ..metrics import f1pn, to_labels

    choose = choose or (lambda y, z: rules.choose(y, z, rule))
    apply = apply or rules.RULES[rule]
    y, fold, y_val, rows = train["label"].to_numpy(), train["fold"].to_numpy(), val["label"].to_numpy(), []
    for k in res.folds:
        t, z = choose(y[fold == k], res.oof[fold == k]), res.ensemble("validation", [k])
        a, b = f1pn(y_val, to_labels(z)), f1pn(y_val, apply(z, t))
        rows.append({"fold": k, "param": t, "f1pn_argmax": a, "f1pn_rule": b})
    return pd.DataFrame(rows, columns=["fold", "param", "f1pn_argmax", "f1pn_rule"])


def _with_folds(res, folds):
    from dataclasses import replace

    return replace(res, folds=list(folds))


def timing_table(runs: dict) -> pd.DataFrame:
    """Per run name: mean over folds of steps, best step, seconds, examples/s and early-stopping F1pn, and the
    slowest fold's seconds (a fold that shared the machine shows there)."""
    rows = [
        {
            "run": name,
            "fold": r["fold"],
            "steps": r["steps"],
            "best_step": r["best_step"],
            "seconds": r["seconds"],
            "examples_per_s": r["train_examples"] / r["seconds"],
            "inner_f1pn": r["best_f1pn"],
            "precision": r.get("precision", "fp32"),
        }
        for name, res in runs.items()
        for r in res.runs
    ]
    by = pd.DataFrame(rows).groupby(["run", "precision"], sort=False)
    out = by[["steps", "best_step", "seconds", "examples_per_s", "inner_f1pn"]].mean()
    out.insert(3, "seconds_max", by["seconds"].max())
    return out.round({"steps": 1, "best_step": 1, "seconds": 0, "seconds_max": 0, "examples_per_s": 1, "inner_f1pn": 3})


def frozen_phrase(cfg, n_layers: int, runs: list[dict]) -> str:
    """What the recipe froze and whether the fold runs replayed the frozen output (`FoldRun.frozen_cached`)."""
    if not cfg.freeze_layers:
        return f"all {n_layers} layers trained"
    done = sum(bool(r.get("frozen_cached")) for r in runs)
    how = (
        f"its output computed once per distinct input in {done} of {len(runs)} fold runs"
        if done
        else "its output recomputed at every step (this encoder's layout cannot be replayed)"
    )
    frozen = f"embeddings and lowest {cfg.freeze_layers} of {n_layers} layers frozen"
    return f"{frozen} (a fixed feature extractor, no dropout; {how})"


def fold_diffs(study: Study, a, b, folds) -> pd.DataFrame:
    """F1pn of fold model k of run a minus fold model k of run b on validation: one training each."""
    from ..metrics import f1pn, to_labels

    y = study.val["label"].to_numpy()
    return pd.DataFrame(
        [
            {
                "fold": k,
                "a": f1pn(y, to_labels(a.ensemble("validation", [k]))),
                "b": f1pn(y, to_labels(b.ensemble("validation", [k]))),
            }
            for k in folds
        ]
    ).assign(diff=lambda d: d["a"] - d["b"])


# Published results on RuSentNE-23, each with its split. Our validation numbers are dev numbers:
# they are never mixed with test numbers without saying so.
FIELD = [  # published numbers as reported (F1pn x 100); sources: the papers, RuSentNE-LLM-Benchmark's README and the
    # Flan-T5 logs of Reasoning-for-Sentiment-Analysis-Framework (DOC_FLANT5_PROMPT_FT.md, DOC_FLANT5_THOR_FT.md)
    ("HAMAM 3-backbone ensemble (the paper; Kabaev et al., Dialogue 2023, arXiv 2308.15793)", "test", 66.67),
    ("Flan-T5-xl fine-tuned, prompt, machine-translated English input (arXiv 2404.12342)", "test", 68.20),
    ("Flan-T5-xl with THoR, translated English input (arXiv 2404.12342)", "test", 65.09),
    ("Flan-T5-large with THoR, translated English input (arXiv 2404.12342)", "test", 62.72),
    ("Flan-T5-large fine-tuned, prompt, translated English input (arXiv 2404.12342)", "test", 60.80),
    ("Flan-T5-base with THoR, ~250M parameters, translated English input (arXiv 2404.12342)", "test", 60.02),
    ("GPT-4-1106-preview zero-shot, machine-translated English input (RuSentNE-LLM-Benchmark)", "test", 54.59),
    ("GPT-4-1106-preview zero-shot, Russian input (RuSentNE-LLM-Benchmark)", "test", 48.04),
    ("Flan-T5-xl fine-tuned, prompt, translated English; checkpoint chosen on dev (arXiv 2404.12342)", "dev", 68.62),
    ("Flan-T5-xl with THoR, translated English; checkpoint chosen on dev (arXiv 2404.12342)", "dev", 68.02),
    ("Flan-T5-large with THoR, translated English; checkpoint chosen on dev (arXiv 2404.12342)", "dev", 67.31),
    ("Flan-T5-large fine-tuned, prompt, translated English; checkpoint chosen on dev (arXiv 2404.12342)", "dev", 65.83),
    ("Flan-T5-base with THoR, translated English; checkpoint chosen on dev (arXiv 2404.12342)", "dev", 62.72),
    ("GPT-4-turbo-2024-04-09 zero-shot, machine-translated English input (RuSentNE-LLM-Benchmark)", "dev", 50.79),
    ("Llama-3-70B-instruct zero-shot, translated English input (RuSentNE-LLM-Benchmark)", "dev", 49.79),
    ("Llama-3-70B-instruct zero-shot, Russian input (RuSentNE-LLM-Benchmark)", "dev", 45.89),
]  # "checkpoint chosen on dev": the epoch kept was the best on dev itself (by 3-class macro F1), so it is optimistic;
# GPT-4-turbo with Russian input (42.21 on dev) is left out: its answer file covers only the first 381 of 2845 rows


def field_table(ours: list[tuple[str, list[float]]]) -> str:
    """Markdown: published rows (as reported, F1pn x 100) and ours (validation = dev, with CIs)."""
    lines = ["| system | split | F1pn | source |", "|---|---|---|---|"]
    lines += [f"| {name} | {split} | {v:.2f} | published |" for name, split, v in FIELD]
    lines += [
        f"| {name} | dev (validation) | {100 * v[0]:.2f} [{100 * v[1]:.2f}, {100 * v[2]:.2f}] | this repo |"
        for name, v in ours
    ]
    return "\n".join(lines) + "\n"


def score_markdown(scores: pd.DataFrame) -> str:
    """Markdown table: one row per model; validation all / seen / unseen and train OOF, with CIs."""
    cols = [("validation", "all"), ("validation", "seen"), ("validation", "unseen"), ("train OOF", "all")]
    lines = ["| model | all | seen sentence | unseen sentence | train OOF |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(scores["model"]):
        cells = []
        for split, sub in cols:
            r = scores[(scores["model"] == model) & (scores["split"] == split) & (scores["subset"] == sub)]
            cells.append(fmt(r.f1pn.item(), r.f1pn_lo.item(), r.f1pn_hi.item()) if len(r) else "–")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def result_key(comparison: str) -> str:
    """'hamam - unmasked' -> 'hamam_minus_unmasked'; 'e5-small - navec-bert (hamam)' -> 'e5_small_minus_navec_bert'."""
    a, b = comparison.split(" (")[0].split(" - ")
    return f"{a}_minus_{b}".replace("-", "_").replace(" ", "_")
