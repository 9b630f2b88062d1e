"""The study's runs declared as data: one plan per profile, trained first, read by the chapters.

Every run a chapter reads is an entry here with a readable name (`02/hamam`, `03/weight-1.0`,
`04/k1-seed14`, `05/sbert-softmax-entity`, `backbone/e5-small`), its kind, its folds and its config, built by
ONE function (`config`) for every chapter. `status` lists the plan with what is cached and what a missing
run would cost (like `dvc status`); `materialise` trains what is missing (serially or as Ray tasks, all
chapters' folds at once); chapters then only read (`read`). Command line:

    python -m lib.plan --profile cpu status
    python -m lib.plan --profile cpu materialise --only 02,03 [--force | --force-runs 02/hamam] [--executor ray]
    python -m lib.train --profile cpu --runs 02/hamam --folds 3      # the same, for a Slurm array
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import backbones, cache, executors, sbert
from . import train as T
from .config import Profile, RunPaths, TrainConfig, get_profile

CHAPTERS = ("01", "02", "03", "04", "05", "06", "07")


@dataclass(frozen=True)
class Run:
    name: str
    kind: str  # prepared | backbone | fold (HAMAM fold run) | sbert (SBERT fold run)
    label: str  # display name in figures and tables
    readers: tuple[str, ...]  # chapters that read it
    cfg: TrainConfig | None = None
    folds: tuple[int, ...] = ()
    checkpoints: bool = True
    backbone: str = ""  # kind backbone: the name; sbert: the resolved backbone's name
    variant: str = ""  # sbert
    epochs: int = 0  # sbert
    batch_size: int = 0  # sbert


def config(prof: Profile, backbone: str | None = None, **overrides) -> TrainConfig:
    """The one constructor of every run's TrainConfig: the profile's recipe, the backbone's own settings
    (`Profile.backbone_train`), then the run's overrides."""
    return prof.config_for(backbone or prof.backbones[0], **overrides)


def runs(prof: Profile) -> list[Run]:
    """Every run the chapters read, in chapter order. Two names may denote one artifact (same config and
    folds): it is trained once and listed once."""
    main = prof.backbones[0]
    all_folds = tuple(range(prof.n_folds))
    main_folds = tuple(prof.main_folds)
    mode_folds = tuple(range(prof.mode_folds or prof.n_folds))
    out = [Run("data/prepared", "prepared", "prepared tables", ("01", "02", "03", "04", "05", "06", "07"))]
    used = dict.fromkeys([main, *prof.backbones[1:], *prof.compare_backbones])
    out += [Run(f"backbone/{b}", "backbone", b, ("02",), backbone=b) for b in used if b in backbones.BUILT]
    if main.startswith("e5-small"):
        out.append(
            Run("backbone/e5-small-query", "backbone", "e5-small (query prefix)", ("05",), backbone="e5-small-query")
        )
    hamam = Run("02/hamam", "fold", f"HAMAM {main}", ("02", "03", "05", "06"), config(prof, mode="hamam"), main_folds)
    out.append(hamam)
    for m in ("unmasked", "masked"):
        out.append(Run(f"02/{m}", "fold", f"{m} {main}", ("02",), config(prof, mode=m), mode_folds))
    for b in prof.compare_backbones:
        out.append(Run(f"02/hamam-{b}", "fold", f"HAMAM {b}", ("02",), config(prof, b, mode="hamam"), mode_folds))
    for b in prof.backbones[1:]:
        out.append(Run(f"02/hamam-{b}", "fold", f"HAMAM {b}", ("02",), config(prof, b, mode="hamam"), all_folds))
    if prof.mention_folds != 0:
        folds = tuple(range(prof.mention_folds or prof.n_folds))
        cfg = config(prof, mode="hamam", mask_mentions=True)
        out.append(Run("02/mask-mentions", "fold", "HAMAM, every mention masked", ("02",), cfg, folds))
    weight_folds = tuple(range(prof.weight_folds))
    for w in prof.weight_grid:
        cfg = config(prof, mode=prof.weight_mode, neutral_weight=w, epochs=prof.weight_epochs or prof.train.epochs)
        out.append(Run(f"03/weight-{w:g}", "fold", f"neutral weight {w:g}", ("03",), cfg, weight_folds))
    for k, rate in msd_settings(prof):
        for seed in msd_seeds(prof):
            cfg = config(
                prof,
                mode=prof.msd_mode,
                msd_k=k,
                msd_rate=rate,
                seed=seed,
                epochs=prof.msd_epochs,
                evals_per_epoch=prof.msd_evals_per_epoch,  # a dense curve: steps to 95% of the best
                patience=prof.msd_evals_per_epoch * prof.msd_epochs + 1,  # never stopped early: the curve is read
            )
            name = f"04/k{k}-seed{seed}" if rate == prof.train.msd_rate else f"04/k{k}-rate{rate:g}-seed{seed}"
            out.append(Run(name, "fold", f"K = {k}, rate {rate:g}", ("04",), cfg, tuple(range(prof.msd_folds)), False))
    sb_folds = tuple(range(prof.sbert_folds or prof.n_folds))
    cls = config(prof, pooling="cls", mode="unmasked")
    out.append(Run("05/cls", "fold", "CLS cross-encoder", ("05",), cls, sb_folds))
    for v in prof.sbert_variants:
        out.append(
            Run(
                f"05/sbert-{v}",
                "sbert",
                f"SBERT {v}",
                ("05",),
                config(prof),
                sb_folds,
                backbone=main,
                variant=v,
                epochs=prof.sbert_epochs,
                batch_size=prof.sbert_batch_size,
            )
        )
    for name, overrides in prof.imbalance_variants:
        epochs = prof.imbalance_epochs or prof.train.epochs
        cfg = config(prof, mode=prof.imbalance_mode, epochs=epochs, **dict(overrides))
        out.append(Run(f"07/{name}", "fold", name, ("07",), cfg, tuple(range(prof.imbalance_folds))))
    return out


def msd_settings(prof: Profile) -> list[tuple[int, float]]:
    base = prof.train.msd_rate
    return [(k, base) for k in prof.msd_ks] + [(5, r) for r in prof.msd_rates if r != base]


def msd_seeds(prof: Profile) -> list[int]:
    return [prof.train.seed + i for i in range(prof.msd_seeds)]


def get(prof: Profile, name: str) -> Run:
    for r in runs(prof):
        if r.name == name:
            return r
    raise KeyError(
        f"no run {name!r} in the {prof.name} plan; `python -m lib.plan --profile {prof.name} status` lists them"
    )


def select(prof: Profile, chapters=None, names=None) -> list[Run]:
    """The runs read by `chapters` (all when None), or exactly `names`."""
    if names:
        return [get(prof, n) for n in names]
    return [r for r in runs(prof) if chapters is None or set(r.readers) & set(chapters)]


# --- where each run lives, and whether it is there ---------------------------------------------------------


@dataclass
class Resolved:
    run: Run
    root: Path | None  # run directory (fold dirs below it); None while its backbone is not built
    key: str = ""
    backbone_path: str = ""
    done: list[int] = field(default_factory=list)  # complete folds

    @property
    def missing(self) -> list[int]:
        if self.run.kind in ("prepared", "backbone"):  # one artifact, no folds
            return [] if self.done else [0]
        return [k for k in self.run.folds if k not in self.done]


# builds of one backbone on another corpus: name -> (backbone, corpus)
VARIANT_BUILDS = {"e5-small-query": ("e5-small", sbert.e5_corpus)}  # 05: e5 with its "query: " prefix in the vocabulary


def sentences(name: str, data: dict) -> list[str]:
    if name in VARIANT_BUILDS:
        return sorted(set(VARIANT_BUILDS[name][1](data)))
    return sorted(set(T.backbone_sentences(name, data)))


def backbone_dir(prof: Profile, name: str, data: dict, build: bool) -> str | None:
    """The built backbone's directory (building it when `build`), the name itself for hub ids, or None when a
    build is needed and not allowed."""
    sents = sentences(name, data) if name in VARIANT_BUILDS or name in backbones.BUILT else None
    name = VARIANT_BUILDS.get(name, (name,))[0]
    if name not in backbones.BUILT:
        return name
    k = backbones.build_key(name, sents)
    path = Path(RunPaths(prof.name).cache) / f"{name}-{k}"
    if cache.is_complete(path, k):
        return str(path)
    return backbones.resolve(name, sents) if build else None


def resolve(prof: Profile, run: Run, data: dict, build: bool = False) -> Resolved:
    models = RunPaths(prof.name).models
    if run.kind == "prepared":
        from .folds import prepared_dir

        folder = getattr(data, "folder", None) or prepared_dir(prof)
        return Resolved(run, folder, folder.name, done=[0] if cache.is_complete(folder, folder.name) else [])
    if run.kind == "backbone":
        path = backbone_dir(prof, run.backbone, data, build)
        return Resolved(run, Path(path) if path else None, done=[0] if path else [])
    bb = backbone_dir(prof, run.cfg.backbone if run.kind == "fold" else run.backbone, data, build)
    if bb is None:
        return Resolved(run, None)
    if run.kind == "fold":
        key = T.fold_key(run.cfg, data, bb)
        root = T.run_dir(models, run.cfg, key)
        done = [k for k in run.folds if T.fold_complete(root / f"fold{k}", key, run.checkpoints)]
    else:
        key = sbert.sbert_key(run.cfg, data, run.variant, run.epochs, run.batch_size, bb)
        root = models / f"sbert-{run.variant}-{key}"
        done = [k for k in run.folds if cache.is_complete(root / f"fold{k}", key)]
    return Resolved(run, root, key, bb, done)


def jobs(res: Resolved, force_folds=()) -> list:
    run, todo = res.run, sorted(set(res.missing) | set(force_folds))
    force = set(force_folds)
    if run.kind == "fold":
        return [
            T.FoldJob(run.cfg, res.backbone_path, k, str(res.root / f"fold{k}"), res.key, run.checkpoints, k in force)
            for k in todo
        ]
    if run.kind == "sbert":
        return [
            sbert.SbertJob(
                run.cfg,
                run.variant,
                res.backbone_path,
                k,
                str(res.root / f"fold{k}"),
                res.key,
                run.epochs,
                run.batch_size,
                k in force,
            )
            for k in todo
        ]
    return []


def materialise(
    prof: Profile,
    data: dict,
    chapters=None,
    names=None,
    force=False,
    executor=None,
    device=None,
    folds=None,
    quiet: bool = False,
) -> list[Resolved]:
    """Train every missing fold of the selected runs (all of them at once, so Ray runs them in parallel).
    `force`: True (every selected run) or a collection of run names to retrain; `folds`: only these folds."""
    selected = select(prof, chapters, names)
    if folds is not None:
        selected = [replace(r, folds=tuple(k for k in r.folds if k in folds)) for r in selected]
    scope = ", ".join(names) if names else f"chapter(s) {', '.join(chapters)}" if chapters else "every chapter"
    return train_runs(prof, data, selected, force, executor, device, None if quiet else f"plan ({prof.name}, {scope})")


def train_runs(
    prof: Profile, data: dict, selected: list[Run], force=False, executor=None, device=None, say: str | None = None
) -> list[Resolved]:
    """Build missing backbones, then train the missing folds of `selected` as one batch of executor jobs."""
    resolved = [resolve(prof, r, data, build=True) for r in selected]
    todo, seen = [], set()
    for res in resolved:
        again = res.run.folds if force is True or (force and res.run.name in force) else ()
        for job in jobs(res, again):
            if job.fold_dir not in seen:  # two names, one artifact: one job
                seen.add(job.fold_dir)
                todo.append(job)
    if say:
        print(f"{say}: {len(todo)} fold job(s) to train" if todo else f"{say}: every run cached")
        for job in todo:
            print(f"  training {job}")
    executors.run(todo, data, executors.resolve(executor, prof.executor), device or prof.device, prof.executor_cpus)
    return [resolve(prof, r.run, data) for r in resolved]


def read(prof: Profile, data: dict, name: str, folds=None):
    """A run's artifacts: a `KFoldResult` (fold runs), the SBERT outputs dict, or the backbone directory.
    Raises with the command that trains it when a fold is missing."""
    res = resolve(prof, get(prof, name), data)
    folds = list(res.run.folds if folds is None else folds)
    missing = [k for k in folds if k not in res.done]
    if missing:
        raise FileNotFoundError(
            f"run {name} lacks folds {missing}: python -m lib.train --profile {prof.name} --runs {name}"
        )
    if res.run.kind == "fold":
        return T.read_kfold(res.run.cfg, data, res.root, folds)
    if res.run.kind == "sbert":
        return sbert.read_folds(res.root, data["train"], folds)
    return str(res.root)


# --- status: what is cached, what a missing run costs ---------------------------------------------------------


def measured_rates(prof: Profile) -> dict:
    """Seconds per optimisation step (fold runs) or per epoch (SBERT runs), measured on this machine by any
    cached fold of this profile with the same cost-relevant settings."""
    here, rates = T.hardware(), {}
    for done in Path(RunPaths(prof.name).models).glob("*/fold*/" + cache.META):
        meta = json.loads(done.read_text())
        if meta.get("hardware") != here:
            continue
        if "config" in meta and meta.get("steps"):
            rates.setdefault(_cost_key(TrainConfig(**meta["config"]), meta.get("precision")), []).append(
                meta["seconds"] / meta["steps"]
            )
        elif "variant" in meta and meta.get("epochs"):
            rates.setdefault(("sbert", meta["variant"]), []).append(meta["seconds"] / meta["epochs"])
    return {k: float(np.median(v)) for k, v in rates.items()}


def _cost_key(cfg: TrainConfig, precision) -> tuple:
    return (
        cfg.backbone,
        cfg.mode,
        cfg.pooling,
        cfg.freeze_layers,
        cfg.max_length,
        cfg.batch_size,
        cfg.msd_k > 1,
        cfg.loss,
        precision,
    )


def estimate(res: Resolved, data: dict, rates: dict, device: str = "auto") -> float | None:
    """Seconds to train the missing folds (an upper bound: early stopping may end a fold sooner)."""
    run, n = res.run, len(res.missing)
    if not n or run.kind in ("prepared", "backbone"):
        return 0.0 if not n else None
    if run.kind == "sbert":
        rate = rates.get(("sbert", run.variant))
        return None if rate is None else rate * run.epochs * n
    cfg = run.cfg
    rate = rates.get(_cost_key(cfg, T.resolve_precision(cfg.precision, T.pick_device(device))))
    if rate is None:
        return None
    rows = len(data["train"]) * (1 - 1 / max(2, len(set(data["train"]["fold"])))) * (1 - cfg.inner_val)
    return rate * cfg.epochs * np.ceil(rows / cfg.batch_size) * n


def status(prof: Profile, data: dict, chapters=None) -> list[dict]:
    rates = measured_rates(prof)
    rows, seen = [], {}
    for run in select(prof, chapters):
        res = resolve(prof, run, data)
        where = str(res.root) if res.root else "(after its backbone is built)"
        same = (run.kind, json.dumps(asdict(run.cfg), sort_keys=True) if run.cfg else run.name, run.variant)
        if same in seen:  # one artifact, two names: listed once
            seen[same]["name"] += f" = {run.name}"
            continue
        if not res.missing:
            state = "cached"
        else:
            state = f"missing {len(res.missing)}/{len(run.folds)} folds" if run.kind in ("fold", "sbert") else "missing"
        cost = estimate(res, data, rates, prof.device)
        row = {
            "name": run.name,
            "kind": run.kind,
            "status": state,
            "folds": ",".join(map(str, run.folds)),
            "seconds": cost,
            "dir": where,
            "estimate": "-" if state == "cached" else "not measured" if cost is None else f"{cost / 60:.0f} min",
        }
        seen[same] = row
        rows.append(row)
    return rows


# --- command line (python -m lib.plan, python -m lib.train) -------------------------------------------------


def _parser(prog: str):
    import argparse

    from .config import PROFILES

    ap = argparse.ArgumentParser(prog=prog, description="The study's plan: list its runs, or train what is missing.")
    ap.add_argument(
        "command",
        nargs="?",
        choices=("status", "materialise"),
        default="materialise" if prog.endswith("train") else "status",
    )
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--only", default=None, help="comma-separated chapters (e.g. 02,03): their runs only")
    ap.add_argument("--runs", default=None, help="comma-separated run names (see status)")
    ap.add_argument("--folds", default=None, help="comma-separated folds of the selected runs (a Slurm array task)")
    ap.add_argument("--force", action="store_true", help="retrain every selected run")
    ap.add_argument("--force-runs", default=None, help="comma-separated run names to retrain")
    ap.add_argument("--executor", choices=executors.EXECUTORS, default=None)
    ap.add_argument("--data-dir", default=None, help="another copy of the RuSentNE-23 files (default data/raw)")
    return ap


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def chapters_arg(s):
    return [c.zfill(2) for c in _split(s)] if s else None


def main(argv=None, prog: str = "python -m lib.plan") -> int:
    import sys

    from .data import DataError
    from .folds import load_prepared

    args = _parser(prog).parse_args(argv)
    try:
        prof = get_profile(args.profile)
        chapters, names = chapters_arg(args.only), _split(args.runs)
        for n in names or []:
            get(prof, n)
        for n in _split(args.force_runs) or []:
            get(prof, n)
        folds = [int(k) for k in _split(args.folds)] if args.folds else None
        executors.resolve(args.executor, prof.executor)
        data = load_prepared(prof, args.data_dir)
    except (ValueError, KeyError, DataError) as e:
        print(f"{prog}: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.command == "status":
        rows = status(prof, data, chapters)
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['kind']:<8}  {r['status']:<20}  {r['estimate']:>12}  {r['dir']}")
        missing = [r for r in rows if r["status"] != "cached"]
        known = sum(r["seconds"] or 0 for r in missing)
        unknown = sum(r["seconds"] is None for r in missing)
        print(
            f"{len(rows) - len(missing)} of {len(rows)} cached; to train: ~{known / 60:.0f} min as measured "
            f"on this machine" + (f", {unknown} run(s) not measured yet" if unknown else "")
        )
        return 0
    force = True if args.force else set(_split(args.force_runs) or [])
    try:
        materialise(prof, data, chapters, names, force, args.executor, folds=folds)
    except executors.FoldJobsFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
