"""The study's one figure style: a fixed colour per split and per model and one display name per axis quantity,
the same in every chapter (lib.chapters.plots draws with it)."""

from __future__ import annotations

import math

LABEL_COLORS = {-1: "#d62728", 0: "#7f7f7f", 1: "#2ca02c"}

# --- the study's one palette: a fixed colour per split and per model, the same in every chapter -----------
# Validation's subsets are tints of validation's colour; train OOF is a tint of train's.
SPLIT_COLORS = {
    "train": "#3a6ea5",
    "train OOF": "#8fb3d9",
    "validation": "#e08214",
    "validation, seen sentence": "#f6c08a",
    "validation, unseen sentence": "#8c4a06",
    "final": "#5e3c99",
}
# other names the chapters give a split or a subset of validation rows -> the split's entry
SPLIT_ALIASES = {
    "all": "validation",
    "all rows": "validation",
    "validation, all rows": "validation",
    "seen": "validation, seen sentence",
    "seen sentence": "validation, seen sentence",
    "validation seen": "validation, seen sentence",
    "unseen": "validation, unseen sentence",
    "unseen sentence": "validation, unseen sentence",
    "validation unseen": "validation, unseen sentence",
}
# display names of the subsets (what is seen: the sentence)
SUBSET_LABELS = {"all": "all rows", "seen": "seen sentence", "unseen": "unseen sentence"}

# one colour per model, keyed by its display name (a run's plan label; the backbone part of "HAMAM <backbone>",
# "unmasked <backbone>", "masked <backbone>" is matched by `model_color`)
MODEL_COLORS = {
    "HAMAM": "#1f77b4",
    "unmasked": "#ff7f0e",
    "masked": "#98df8a",
    "unmasked + masked (late fusion)": "#006d2c",
    "HAMAM navec-bert": "#8c564b",
    "HAMAM, every mention masked": "#6baed6",
    "HAMAM backbone ensemble": "#08306b",
    "HAMAM xlm-roberta-large": "#c49c94",
    "HAMAM google/rembert": "#f7b6d2",
    "CLS cross-encoder": "#9467bd",
    "SBERT softmax-entity": "#e377c2",
    "SBERT softmax-plain": "#bcbd22",
    "SBERT softmax-dummy": "#17becf",
    "SBERT cosine-anchors": "#393b79",
    "e5 frozen + LR": "#d6616b",
    "TF-IDF + logistic regression": "#637939",
    "organisers' RuBERT baseline": "#000000",
}
MODE_NAMES = {"hamam": "HAMAM", "unmasked": "unmasked", "masked": "masked"}  # a run mode's display name
MODEL_PREFIXES = tuple(MODE_NAMES.values())  # "<prefix> <backbone>": the prefix's colour
BEST_MARK = " ★"  # marks the OOF-chosen model after its unchanged name

# the decision rules of chapter 03 and the seed-level markers used with any colour
RULE_COLORS = {"argmax": "#4d4d4d", "threshold": "#c51b7d", "neutral_bias": "#4d9221"}

# the training objectives of chapters 03 and 07: one colour family per loss, its shade by the weight
OBJECTIVE_CMAPS = {"ce": "Blues", "focal": "Purples", "dice": "Oranges", "two_head": "RdPu"}
OBJECTIVE_NAMES = {"ce": "cross-entropy", "focal": "focal", "dice": "Dice (Li et al.)", "two_head": "two heads"}


def objective_name(loss: str, neutral_weight: float, focal_gamma: float = 2.0, polar_weight=None) -> str:
    """The one display name of a training objective: "cross-entropy, neutral weight 0.1", "focal (γ = 2),
    neutral weight 1", "two heads, polar weight 3" (the two heads weigh rows in their own loss)."""
    if loss not in OBJECTIVE_NAMES:
        raise KeyError(f"no display name for loss {loss!r}: add it to lib.chapters.style.OBJECTIVE_NAMES")
    base = OBJECTIVE_NAMES[loss] + (f" (γ = {focal_gamma:g})" if loss == "focal" else "")
    if loss == "two_head":
        return base + (f", polar weight {polar_weight:g}" if polar_weight else "")
    return f"{base}, neutral weight {neutral_weight:g}"


def objective_color(loss: str, neutral_weight: float, polar_weight=None) -> str:
    """The loss's colour family, darker the nearer its weight is to 1 (0.1 and 0.01 are lighter)."""
    import matplotlib as mpl

    w = (polar_weight or 1.0) if loss == "two_head" else neutral_weight
    shade = 0.9 - 0.4 * min(1.0, abs(math.log10(w)) / 2)
    return mpl.colors.to_hex(mpl.colormaps[OBJECTIVE_CMAPS[loss]](shade))


def objective(cfg) -> tuple[str, str]:
    """(display name, colour) of a TrainConfig's training objective."""
    name = objective_name(cfg.loss, cfg.neutral_weight, cfg.focal_gamma, cfg.polar_weight)
    return name, objective_color(cfg.loss, cfg.neutral_weight, cfg.polar_weight)


# plain-language axis labels for the study's column names
AXIS_LABELS = {
    "f1pn": "F1pn",
    "macro_f1": "macro F1",
    "accuracy": "accuracy",
    "sentence_seen_in_train": "sentence seen in train",
    "entity_seen_in_train": "entity string seen in train",
    "neutral_bias": "neutral bias b",
    "threshold": "threshold t",
    "held_f1pn": "held-out (inner split) F1pn",
    "val_f1pn": "F1pn (validation)",
    "sentence_tokens": "words per sentence",
    "entity_tokens": "words per entity",
    "entity_tag": "entity type",
}


def _plain(name: str) -> str:
    return " ".join(str(name).replace(BEST_MARK, "").split())


def split_color(name: str) -> str:
    """The colour of a split or of a subset of validation rows ("all", "seen", "unseen sentence", ...)."""
    key = _plain(name)
    key = SPLIT_ALIASES.get(key, key)
    if key not in SPLIT_COLORS:
        raise KeyError(f"no colour for split {name!r}: add it to lib.chapters.style.SPLIT_COLORS or SPLIT_ALIASES")
    return SPLIT_COLORS[key]


def model_key(name: str) -> str:
    """The MODEL_COLORS entry of a model's display name: "HAMAM e5-small" -> "HAMAM"; a ★, and a qualifier after
    a comma ("HAMAM navec-bert, folds [0, 1]", "HAMAM e5-small, argmax": the same model) are ignored."""
    key = _plain(name)
    for k in (key, key.split(",")[0].strip()):
        if k in MODEL_COLORS:
            return k
    head = key.split(",")[0]
    for prefix in MODEL_PREFIXES:
        if head.startswith((prefix + " ", prefix + ":")):
            return prefix
    raise KeyError(f"no colour for model {name!r}: add it to lib.chapters.style.MODEL_COLORS")


def model_color(name: str) -> str:
    return MODEL_COLORS[model_key(name)]


def color(name: str) -> str:
    """A split's, a subset's or a model's colour, whichever `name` is."""
    try:
        return split_color(name)
    except KeyError:
        return model_color(name)


def axis_label(name: str) -> str:
    return AXIS_LABELS.get(name, name.replace("_", " "))
