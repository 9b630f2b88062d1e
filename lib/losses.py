"""Training losses for the 3-class entity-sentiment head, as alternatives to class-weighted cross-entropy.

RuSentNE-23 is mostly neutral while F1pn scores only the positive and negative classes, so each loss
here is a different answer to the same imbalance:

* `ce`: cross-entropy with a down-weighted neutral class (the HAMAM paper's choice, weight 0.1);
* `focal`: focal loss (Lin, Goyal, Girshick, He, Dollar, ICCV 2017, arXiv 1708.02002) scales each row by
  (1 - p_t)^gamma, so the many easy (mostly neutral) rows stop dominating the gradient;
* `dice`: self-adjusting Dice loss (Li, Sun, Meng, Liang, Wu, Li, ACL 2020, arXiv 1911.02855), a soft F1
  of each class over the batch, closer to what the F1 metric rewards than likelihood is (batch-level: not
  split over micro-batches, see `self_adjusting_dice`);
* `two_head`: identify-then-classify, after SpERT.MT (arXiv 2309.09713): one logit for "polar or neutral",
  one for "positive given polar", so the sentiment head learns only from polar rows.

Logits are (B, 3) in `config.LABELS` order (class id 0 negative, 1 neutral, 2 positive); targets are class
ids. `two_head_log_probs` turns the (B, 2) two-head output into (B, 3) log-probabilities that every
downstream consumer (argmax, softmax, threshold rules, ensembles) can treat as logits; `identify_rule`
labels the raw (B, 2) output directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import LABEL2ID, LABELS

NEG, NEU, POS = (LABEL2ID[lab] for lab in (-1, 0, 1))  # class ids (logit columns)
LOSSES = ("ce", "focal", "dice", "two_head")


def class_weights(neutral_weight: float) -> torch.Tensor:
    """Per-class weights [1, neutral_weight, 1]: neutral rows count `neutral_weight` times a polar row."""
    w = torch.ones(len(LABELS))
    w[NEU] = neutral_weight
    return w


def _reduce(per_row: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Plain mean, or sum w_y l / sum w_y: the same reduction as weighted `F.cross_entropy`."""
    if weight is None:
        return per_row.mean()
    w = weight.to(per_row)[y]
    return (w * per_row).sum() / w.sum()


def _log_pt(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_t and log(1 - p_t) of the true class, both from logsumexp, so neither under/overflows.

    log(1 - p_t) = logsumexp(other logits) - logsumexp(all): finite (and with finite gradients) even
    when p_t rounds to 1, where (1 - p_t)^gamma with gamma < 1 would give an infinite gradient.
    """
    if logits.ndim != 2 or logits.shape[1] != len(LABELS):
        raise ValueError(f"logits must be (B, {len(LABELS)}), got {tuple(logits.shape)}")
    true = F.one_hot(y, len(LABELS)).bool()
    lse = torch.logsumexp(logits, dim=1)
    log_pt = logits.gather(1, y[:, None]).squeeze(1) - lse
    log_1m_pt = torch.logsumexp(logits.masked_fill(true, float("-inf")), dim=1) - lse
    return log_pt, log_1m_pt


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(Class-weighted) cross-entropy, weighted mean sum w_y l / sum w_y, exactly `F.cross_entropy`."""
    return F.cross_entropy(logits, y, weight=None if weight is None else weight.to(logits))


def focal(
    logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Focal loss -(1 - p_t)^gamma log p_t (Lin et al. 2017), reduced like weighted CE; gamma=0 is CE."""
    log_pt, log_1m_pt = _log_pt(logits, y)
    return _reduce(-torch.exp(gamma * log_1m_pt) * log_pt, y, weight)


def self_adjusting_dice(
    logits: torch.Tensor,
    y: torch.Tensor,
    alpha: float = 0.01,
    smooth: float = 1.0,
    square_denominator: bool = True,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-adjusting Dice loss over the batch, one soft Dice per class (Li et al., ACL 2020).

    With p = softmax(logits), y_ic = 1[y_i = c] and the self-adjusting probability
    q_ic = (1 - p_ic)^alpha p_ic, the loss is

        D_c = (2 sum_i q_ic y_ic + smooth) / (sum_i q_ic^k + sum_i y_ic + smooth),   k = 2 if square_denominator else 1
        L   = sum_c w_c (1 - D_c) / sum_c w_c                                        (w = 1 when weight is None)

    i.e. the paper's set-level Dice loss (a soft F1 of class c against the rest, over the rows of the batch;
    y_ic^2 = y_ic) with its (1 - p)^alpha factor, taken one-vs-rest for every class, as the authors'
    `DiceLoss._multiple_class` does. Raising a row's gold logit raises the gold class's overlap and lowers the
    other classes' predicted mass, so the loss falls while the row's probabilities stay below 1 / (1 + alpha)
    (~0.99 at the default alpha): beyond that q_ic itself falls, which is how the factor stops pushing
    already easy rows. Classes
    absent from the batch still count: D_c = smooth / (sum_i q_ic^k + smooth) pushes their mass down.

    Defaults follow the authors' classification scripts (github.com/ShannonAI/dice_loss_for_NLP,
    scripts/textcl_tnews/bert_dice.sh, multi-class, and scripts/glue_mrpc/bert_{base,large}_dice.sh, binary:
    DICE_ALPHA=0.01, DICE_SMOOTH=1, --dice_square, DICE_OHEM=0, accumulate_grad_batches 1; `DiceLoss` in
    loss/dice_loss.py with index_label_position=True, reduction "mean"). Two deliberate differences from its
    multi-class path: there the squared denominator sums over a length-1 axis (so each row gets its own Dice),
    where we sum over the batch as the paper's set-level loss and the file's binary path do, and it adds the
    classes' losses where we take their (weighted) mean (a third of their sum when unweighted). `weight`
    (e.g. `class_weights`) weighs the classes' Dice losses. log(1 - p) comes from logsumexp, so gradients
    stay finite when a probability rounds to 1 and alpha < 1.

    Batch-level Dice is NOT a per-row mean: the Dice of a batch is not any weighted mean of its micro-batches'
    Dice values, so accumulating gradients over micro-batches does not give the one-batch gradient. The
    training loop's `optimiser_step` (lib.training, formerly lib.train) cuts each batch into
    `grad_accum_steps` micro-batches, scales each micro-batch's loss by its share of the batch's
    class-weighted row count and sums the gradients: exact for ce/focal, but for this loss it silently
    optimises a mix of micro-batch Dice losses instead. Train it with grad_accum_steps = 1: a loss function
    sees one micro-batch at a time and cannot check this itself.
    """
    if logits.ndim != 2 or logits.shape[1] != len(LABELS):
        raise ValueError(f"logits must be (B, {len(LABELS)}), got {tuple(logits.shape)}")
    n_cls = len(LABELS)
    lse = torch.logsumexp(logits, dim=1, keepdim=True)
    log_p = logits - lse
    # log(1 - p_ic) = logsumexp over the other columns - logsumexp over all: (B, C) from a (B, C, C) mask
    eye = torch.eye(n_cls, dtype=torch.bool, device=logits.device)
    others = logits[:, None, :].expand(-1, n_cls, -1).masked_fill(eye, float("-inf"))
    log_1m_p = torch.logsumexp(others, dim=2) - lse
    log_q = alpha * log_1m_p + log_p  # log (1 - p)^alpha p
    q = torch.exp(log_q)
    onehot = F.one_hot(y, n_cls).to(q)
    overlap = (q * onehot).sum(0)
    pred_mass = torch.exp(2 * log_q).sum(0) if square_denominator else q.sum(0)
    dice = (2 * overlap + smooth) / (pred_mass + onehot.sum(0) + smooth)
    per_class = 1 - dice
    if weight is None:
        return per_class.mean()
    w = weight.to(per_class)
    if w.shape != (n_cls,):
        raise ValueError(f"weight must have one entry per class ({n_cls}), got shape {tuple(w.shape)}")
    return (w * per_class).sum() / w.sum()


# --- identify-then-classify (two heads) -------------------------------------------------------------


def _check_two(z: torch.Tensor) -> None:
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"two-head output must be (B, 2) [polar, positive-given-polar], got {tuple(z.shape)}")


def two_head_loss(z: torch.Tensor, y: torch.Tensor, polar_weight: float | None = None) -> torch.Tensor:
    """BCE(z[:, 0], polar) over all rows + BCE(z[:, 1], positive) over polar rows only.

    The sentiment head never sees neutral rows, so the polar/neutral imbalance lands only on the first
    head, where `polar_weight` (BCE pos_weight; None = 1) can offset it. A batch without polar rows adds
    0 through a still connected graph (zero gradient, no NaN from 0/0).
    """
    _check_two(z)
    polar = y != NEU
    pw = None if polar_weight is None else torch.tensor(polar_weight, dtype=z.dtype, device=z.device)
    identify = F.binary_cross_entropy_with_logits(z[:, 0], polar.to(z.dtype), pos_weight=pw)
    per_row = F.binary_cross_entropy_with_logits(z[:, 1], (y == POS).to(z.dtype), reduction="none")
    classify = (per_row * polar).sum() / polar.sum().clamp(min=1)
    return identify + classify


def two_head_log_probs(z: torch.Tensor) -> torch.Tensor:
    """(B, 2) two-head output -> (B, 3) log-probabilities in LABELS order, with s = sigmoid(z):

    p(neu) = 1 - s0, p(pos) = s0 s1, p(neg) = s0 (1 - s1); via logsigmoid (log(1 - s) = logsigmoid(-z)),
    so extreme logits stay finite. The rows are normalised, hence softmax(log_probs) returns the probs.
    """
    _check_two(z)
    ls0, ls1 = F.logsigmoid(z[:, 0]), F.logsigmoid(z[:, 1])
    cols = {NEG: ls0 + F.logsigmoid(-z[:, 1]), NEU: F.logsigmoid(-z[:, 0]), POS: ls0 + ls1}
    return torch.stack([cols[i] for i in range(len(LABELS))], dim=1)


def polar_rule(log_probs: np.ndarray, t: float) -> np.ndarray:
    """Labels in {-1, 0, 1}: polar when p(polar) = 1 - p(neu) > t, then the sign of p(pos) - p(neg).

    Rows are renormalised with a softmax first, so averaged log-probabilities (a fold ensemble, which no
    longer sums to 1) work as well. Ties between p(pos) and p(neg) go to negative, as `threshold_rule`.
    """
    z = np.asarray(log_probs, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(LABELS):
        raise ValueError(f"log_probs must be (n, {len(LABELS)}), got {z.shape}")
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    sign = np.where(p[:, POS] > p[:, NEG], 1, -1)
    return np.where(p[:, POS] + p[:, NEG] > t, sign, 0)  # p(pos) + p(neg): no cancellation in 1 - p(neu)


def identify_rule(logits_or_probs, t: float, probs: bool = False) -> np.ndarray:
    """Labels in {-1, 0, 1} from the raw (B, 2) two-head output: polar when s0 > t, then the sign from s1.

    s = sigmoid(z) for logits (the default), or the array itself with probs=True (s0 = p(polar),
    s1 = p(positive | polar)). A polar row is 1 when s1 > 0.5 and -1 otherwise (ties go to negative, as in
    `polar_rule`). Since p(polar) = s0 and p(pos) - p(neg) = s0 (2 s1 - 1) in `two_head_log_probs`, this is
    `polar_rule(two_head_log_probs(z), t)` without the round trip through three columns.
    """
    if isinstance(logits_or_probs, torch.Tensor):
        logits_or_probs = logits_or_probs.detach().cpu().numpy()
    a = np.asarray(logits_or_probs, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"two-head output must be (n, 2) [polar, positive-given-polar], got {a.shape}")
    if probs:
        if not ((a >= 0) & (a <= 1)).all():
            raise ValueError("probs=True expects probabilities in [0, 1]")
        s = a
    else:
        s = 0.5 * (1.0 + np.tanh(0.5 * a))  # sigmoid without overflow warnings at extreme logits
    sign = np.where(s[:, 1] > 0.5, 1, -1)
    return np.where(s[:, 0] > t, sign, 0)


# --- factory ----------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def head_outputs(name: str) -> int:
    """Output width of the classifier head the loss expects: 2 for `two_head`, else 3."""
    _check_name(name)
    return 2 if name == "two_head" else len(LABELS)


def as_logits(name: str, out: torch.Tensor) -> torch.Tensor:
    """The head's output as (B, 3) logits for prediction and saving: log-probabilities for `two_head`."""
    _check_name(name)
    return two_head_log_probs(out) if name == "two_head" else out


def make(
    name: str,
    neutral_weight: float = 1.0,
    focal_gamma: float = 2.0,
    weighted: bool = True,
    polar_weight: float | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(out, y) -> scalar for `name` in LOSSES.

    `weighted` applies class_weights(neutral_weight) to ce/focal/dice. `two_head` ignores neutral_weight
    and weighted: its sentiment head already skips neutral rows; `polar_weight` weighs polar rows in its identify
    head's BCE (None: unweighted).
    """
    _check_name(name)
    if name == "two_head":
        return two_head_loss if polar_weight is None else (lambda out, y: two_head_loss(out, y, polar_weight))
    weight = class_weights(neutral_weight) if weighted else None
    if name == "ce":
        return lambda out, y: cross_entropy(out, y, weight)
    if name == "focal":
        return lambda out, y: focal(out, y, focal_gamma, weight)
    return lambda out, y: self_adjusting_dice(out, y, weight=weight)
