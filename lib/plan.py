"""The study's runs declared as data: one plan per profile, trained first, read by the chapters.

Every run a chapter reads is an entry here with a readable name (`02/hamam`, `03/weight-1`,
`04/k1-seed14`, `05/sbert-softmax-entity`, `backbone/e5-small`), its kind, its folds and its config, built by
ONE function (`config`) for every chapter. `status` lists the plan with what is cached and what a missing
run would cost (like `dvc status`); `materialise` trains what is missing (serially or as Ray tasks, all
chapters' folds at once); chapters then only read (`read`). Command line:

    python -m lib.train --profile cpu status
    python -m lib.train --profile cpu materialise --only 02,03 [--force | --force-runs 02/hamam] [--executor ray]
    python -m lib.train --profile cpu --runs 02/hamam --folds 3      # the same, for a Slurm array
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import backbones, cache, calibrate, executors, sbert
from . import training as T
from .config import Profile, RunPaths, TrainConfig

CHAPTERS = ("01", "02", "03", "04", "05", "06", "07", "08")
DATASETS = ("rusentne", "newsmtsc")  # what a fold run trains on: RuSentNE-23 (the study's data) or NewsMTSC (08)


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
    dataset: str = "rusentne"  # DATASETS: fold runs of chapter 08 train on NewsMTSC


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
    readers = ("02", "03", "05", "06", "08")  # 08 transfers chapter 02's models to English
    out.append(Run("02/hamam", "fold", f"HAMAM {main}", readers, config(prof, mode="hamam"), main_folds))
    for m in ("unmasked", "masked"):
        out.append(Run(f"02/{m}", "fold", f"{m} {main}", ("02", "08"), config(prof, mode=m), mode_folds))
    for seed in seeds(prof)[1:]:  # more trainings of the same recipe: the spread a retraining brings
        cfg = config(prof, mode="hamam", seed=seed)
        out.append(Run(f"02/hamam-seed{seed}", "fold", f"HAMAM {main}, seed {seed}", ("02",), cfg, main_folds))
        cfg = config(prof, mode="unmasked", seed=seed)
        out.append(Run(f"02/unmasked-seed{seed}", "fold", f"unmasked {main}, seed {seed}", ("02",), cfg, mode_folds))
        if seed in seeds(prof)[: prof.masked_seeds]:
            cfg = config(prof, mode="masked", seed=seed)
            out.append(Run(f"02/masked-seed{seed}", "fold", f"masked {main}, seed {seed}", ("02",), cfg, mode_folds))
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
        out.append(Run(f"03/weight-{w:g}", "fold", f"cross-entropy, neutral weight {w:g}", ("03",), cfg, weight_folds))
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
    if prof.newsmtsc_folds:
        folds = tuple(range(prof.newsmtsc_folds))
        for m in ("hamam", "unmasked", "masked"):
            label = f"{'HAMAM' if m == 'hamam' else m} {main} (NewsMTSC)"
            out.append(Run(f"08/{m}", "fold", label, ("08",), config(prof, mode=m), folds, dataset="newsmtsc"))
    return out


def dataset(prof: Profile, run: Run, data: dict) -> dict:
    """The tables a fold run trains on and predicts: `data` (RuSentNE-23), or NewsMTSC prepared alike."""
    if run.dataset == "newsmtsc":
        from . import newsmtsc

        return newsmtsc.prepared(prof)
    return data


def seeds(prof: Profile) -> list[int]:
    """Chapter 02's seeds: the recipe's own first (its runs keep the plain names `02/hamam`, ...)."""
    return [prof.train.seed, *(x for x in prof.hamam_seeds if x != prof.train.seed)]


def seed_run(mode: str, seed: int, prof: Profile) -> str:
    """The plan's name of chapter 02's `mode` run with `seed`."""
    return f"02/{mode}" if seed == prof.train.seed else f"02/{mode}-seed{seed}"


def msd_settings(prof: Profile) -> list[tuple[int, float]]:
    base = prof.train.msd_rate
    return [(k, base) for k in prof.msd_ks] + [(5, r) for r in prof.msd_rates if r != base]


def msd_seeds(prof: Profile) -> list[int]:
    return [prof.train.seed + i for i in range(prof.msd_seeds)]


# --- experiments: a declared run with some TrainConfig fields overridden (python -m lib.train --set) ----------


def experiment(run: Run, overrides: dict) -> Run:
    """`02/hamam` with {"lr": 3e-5} -> `02/hamam@lr=3e-05`: the same run with those fields changed, cached under
    its own key (the key covers the whole config) and read by no chapter. Raises ValueError for a bad value."""
    if run.kind != "fold":
        raise ValueError(f"--set applies to HAMAM fold runs; {run.name} is a {run.kind} run")
    cfg = replace(run.cfg, **overrides)  # TrainConfig validates the new values
    tag = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return replace(run, name=f"{run.name}@{tag}", label=f"{run.label} ({tag})", readers=(), cfg=cfg)


def experiments_file(prof: Profile) -> Path:
    return RunPaths(prof.name).root / "experiments.json"


def experiments(prof: Profile) -> list[Run]:
    """The experiments trained so far for this profile (listed by status after the plan's runs)."""
    f = experiments_file(prof)
    out = []
    for e in json.loads(f.read_text()) if f.is_file() else []:
        base = next((r for r in runs(prof) if r.name == e["run"]), None)
        if base is not None:  # an experiment on a run the plan no longer declares is dropped
            out.append(experiment(base, e["set"]))
    return out


def register(prof: Profile, run_name: str, overrides: dict) -> None:
    f = experiments_file(prof)
    known = json.loads(f.read_text()) if f.is_file() else []
    entry = {"run": run_name, "set": overrides}
    if entry not in known:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(known + [entry], indent=1))


def get(prof: Profile, name: str) -> Run:
    for r in [*runs(prof), *(experiments(prof) if "@" in name else [])]:
        if r.name == name:
            return r
    raise KeyError(
        f"no run {name!r} in the {prof.name} plan; `python -m lib.train --profile {prof.name} status` lists them"
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


VARIANT_BUILDS = {"e5-small-query": ("e5-small", sbert.e5_corpus)}  # name -> (backbone, another corpus to build on)


def sentences(name: str, data: dict) -> list[str]:
    if name in VARIANT_BUILDS:
        return sorted(set(VARIANT_BUILDS[name][1](data)))
    return sorted(set(backbones.backbone_sentences(name, data)))


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
        key = T.fold_key(run.cfg, dataset(prof, run, data), bb, prof.device)
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
    scope = ", ".join(names) if names else f"--only {','.join(chapters)}" if chapters else "every chapter"
    return train_runs(prof, data, selected, force, executor, device, None if quiet else f"plan ({prof.name}, {scope})")


def train_runs(
    prof: Profile, data: dict, selected: list[Run], force=False, executor=None, device=None, say: str | None = None
) -> list[Resolved]:
    """Build missing backbones, then train the missing folds of `selected` as one batch of executor jobs."""
    resolved = [resolve(prof, r, data, build=True) for r in selected]
    todo, seen = {name: [] for name in DATASETS}, set()
    for res in resolved:
        again = res.run.folds if force is True or (force and res.run.name in force) else ()
        for job in jobs(res, again):
            if job.fold_dir not in seen:  # two names, one artifact: one job
                seen.add(job.fold_dir)
                todo[res.run.dataset].append(job)
    n = sum(map(len, todo.values()))
    if say:
        print(f"{say}: {n} fold job{'' if n == 1 else 's'} to train" if n else f"{say}: every run cached")
        for job in (j for js in todo.values() for j in js):
            print(f"  training {job}")
    where = executors.resolve(executor, prof.executor)
    for name, js in todo.items():  # each dataset's jobs get that dataset's tables
        ds = dataset(prof, Run("", "fold", "", (), dataset=name), data)
        executors.run(js, ds, where, device or prof.device, prof.executor_cpus)
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
        return T.read_kfold(res.run.cfg, dataset(prof, res.run, data), res.root, folds)
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
            try:  # a run made by older code may carry fields or values this TrainConfig no longer takes
                cfg = TrainConfig(**{k: v for k, v in meta["config"].items() if k in TrainConfig.__dataclass_fields__})
            except (TypeError, ValueError):
                continue
            rates.setdefault(calibrate.cost_key(cfg, meta.get("precision")), []).append(meta["seconds"] / meta["steps"])
        elif "variant" in meta and meta.get("epochs"):
            rates.setdefault(("sbert", meta["variant"]), []).append(meta["seconds"] / meta["epochs"])
    return {k: float(np.median(v)) for k, v in rates.items()}


def estimate(res: Resolved, data: dict, rates: dict, device: str = "auto", per_fold=None) -> float | None:
    """Seconds to train the missing folds (an upper bound: early stopping may end a fold sooner); without a rate
    measured here, `per_fold` recorded seconds (the committed run's, same hardware) if given."""
    run, n = res.run, len(res.missing)
    if not n or run.kind in ("prepared", "backbone"):
        return 0.0 if not n else None
    if run.kind == "sbert":
        rate = rates.get(("sbert", run.variant))
        return (None if per_fold is None else per_fold * n) if rate is None else rate * run.epochs * n
    cfg = run.cfg
    rate = rates.get(calibrate.cost_key(cfg, T.resolve_precision(cfg.precision, T.pick_device(device))))
    if rate is None:
        return None if per_fold is None else per_fold * n
    rows = len(data["train"]) * (1 - 1 / max(2, len(set(data["train"]["fold"])))) * (1 - cfg.inner_val)
    return rate * cfg.epochs * np.ceil(rows / cfg.batch_size) * n


def status(prof: Profile, data: dict, chapters=None, calibrate_here: bool = False) -> list[dict]:
    """One row per run: cached or missing, and the minutes its missing folds would take here: measured by this
    machine's cached runs of the same kind, else the committed run's record of it (same hardware), else (with
    `calibrate_here`) a few timed steps of that kind of model (`lib.calibrate`; builds backbones, trains nothing)."""
    rates, rec = measured_rates(prof), calibrate.recorded_seconds(prof.name, runs(prof))
    if calibrate_here:
        todo = {}
        for run in select(prof, chapters):
            if run.kind == "fold" and run.name not in rec:
                key = calibrate.cost_key(run.cfg, T.resolve_precision(run.cfg.precision, T.pick_device(prof.device)))
                if key not in rates and key not in todo and resolve(prof, run, data).missing:
                    bb = backbone_dir(prof, run.cfg.backbone, data, build=True)
                    todo[key] = (run.cfg, bb, dataset(prof, run, data)["train"])
        calibrated = calibrate.calibrated_rates(prof.name, list(todo.values()), prof.device)
        rates = {**calibrated, **rates}  # a run's own measurement wins over the calibration
    rows, seen = [], {}
    for run in select(prof, chapters) + (experiments(prof) if chapters is None else []):
        res = resolve(prof, run, data)
        where = str(res.root) if res.root else "(after its backbone is built)"
        same = (
            run.kind,
            json.dumps(asdict(run.cfg), sort_keys=True) if run.cfg else run.name,
            run.variant,
            run.dataset,
        )
        if same in seen and set(run.folds) <= seen[same][1]:  # one artifact, two names: one row (unless more folds)
            seen[same][0]["name"] += f" = {run.name}"
            continue
        if not res.missing:
            state = "cached"
        else:
            state = f"missing {len(res.missing)}/{len(run.folds)} folds" if run.kind in ("fold", "sbert") else "missing"
        cost = estimate(res, dataset(prof, run, data), rates, prof.device, rec.get(run.name))
        row = {
            "name": run.name,
            "kind": run.kind,
            "status": state,
            "folds": ",".join(map(str, run.folds)),
            "seconds": cost,
            "dir": where,
            "estimate": "-" if state == "cached" else "not measured" if cost is None else f"{cost / 60:.0f} min",
        }
        seen[same] = (row, set(run.folds) | (seen[same][1] if same in seen else set()))
        rows.append(row)
    return rows
