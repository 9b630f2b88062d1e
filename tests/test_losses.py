import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib import losses as L
from lib.model import LABEL2ID

NEG, NEU, POS = LABEL2ID[-1], LABEL2ID[0], LABEL2ID[1]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3, generator=g) * 3
    y = torch.randint(0, 3, (64,), generator=g)
    return logits, y


def test_class_ids_match_the_model():
    assert (L.NEG, L.NEU, L.POS) == (NEG, NEU, POS)
    assert L.class_weights(0.1).tolist() == pytest.approx([1.0, 0.1, 1.0])


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_is_cross_entropy_at_gamma_zero(batch, weighted):
    logits, y = batch
    w = L.class_weights(0.1) if weighted else None
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fl, ce = L.focal(a, y, gamma=0.0, weight=w), F.cross_entropy(b, y, weight=w)
    torch.testing.assert_close(fl, ce)
    torch.testing.assert_close(L.cross_entropy(logits, y, w), ce)
    fl.backward(), ce.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_focal_is_below_cross_entropy_for_confident_correct_rows():
    y = torch.tensor([0, 1, 2])
    logits = F.one_hot(y, 3).float() * 4  # p_t ~ 0.96
    ce, fl = L.cross_entropy(logits, y), L.focal(logits, y, gamma=2.0)
    assert fl < 0.01 * ce
    p = math.exp(4) / (math.exp(4) + 2)  # by hand: -(1 - p)^2 log p
    assert fl.item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)


# --- self-adjusting Dice ---------------------------------------------------------------------------


def _gold_logits(p_t, y):
    """(B, 3) logits, 0 off the gold column and log(2 p / (1 - p)) on it, so softmax gives each row its p_t."""
    logits = torch.zeros(len(y), 3, dtype=torch.float64)
    logits[torch.arange(len(y)), y] = torch.log(2 * p_t / (1 - p_t))
    return logits


@pytest.fixture
def mixed():
    """8 rows, mostly neutral as in the corpus, gold logit 1.5 below the row's best other: p_t ~ 0.1-0.2."""
    y = torch.tensor([NEG, NEU, POS, NEU, NEU, NEG, POS, NEU])
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    others = logits.masked_fill(F.one_hot(y, 3).bool(), float("-inf")).max(1).values
    logits[torch.arange(8), y] = others - 1.5
    return logits, y


@pytest.mark.parametrize("square", [False, True])
def test_dice_falls_as_every_gold_logit_rises(mixed, square):
    logits, y = mixed
    gold = F.one_hot(y, 3).to(logits)
    alpha = 0.01
    top = torch.softmax(logits + 6 * gold, 1)[torch.arange(8), y]
    assert top.max() < 1 / (1 + alpha)  # below where (1 - p)^alpha p turns down by design
    values = [
        L.self_adjusting_dice(logits + k * gold, y, alpha=alpha, square_denominator=square).item() for k in (0, 2, 4, 6)
    ]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5 * values[0]


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_dice_gradient_on_the_gold_logit_is_negative(square, weighted):
    # the issue: per-row 1 - (2a + g)/(a + 1 + g), a = (1 - p) p, rose from p_t = 0.5 to 0.99
    p_t = torch.linspace(0.3, 0.95, 9, dtype=torch.float64)
    y = torch.tensor([NEG, NEU, POS, NEU, POS, NEU, NEG, NEU, POS])
    logits = _gold_logits(p_t, y).requires_grad_()
    torch.testing.assert_close(torch.softmax(logits, 1)[torch.arange(9), y], p_t)
    w = L.class_weights(0.1) if weighted else None
    L.self_adjusting_dice(logits, y, square_denominator=square, weight=w).backward()
    gold_grad = logits.grad[torch.arange(9), y]
    assert (gold_grad < 0).all(), gold_grad


def _dice_by_definition(probs, gold, alpha, smooth, square):
    """Li et al. 2020, set-level Dice with q = (1 - p)^alpha p, one-vs-rest per class, mean over classes."""
    losses = []
    for c in range(3):
        q = [(1 - row[c]) ** alpha * row[c] for row in probs]
        ys = [1.0 if g == c else 0.0 for g in gold]
        overlap = sum(qi * yi for qi, yi in zip(q, ys))
        mass = sum(qi**2 if square else qi for qi in q)
        losses.append(1 - (2 * overlap + smooth) / (mass + sum(ys) + smooth))
    return losses


def test_dice_on_a_hand_computed_batch():
    # row 0: p(neg, neu, pos) = (0.6, 0.2, 0.2), gold negative; row 1: (0.25, 0.25, 0.5), gold positive
    rows = [{NEG: 0.6, NEU: 0.2, POS: 0.2}, {NEG: 0.25, NEU: 0.25, POS: 0.5}]
    by_col = [[r[c] for c in range(3)] for r in rows]  # in logit column order
    logits = torch.tensor(by_col, dtype=torch.float64).log()  # log-probabilities are logits of these probs
    y = torch.tensor([NEG, POS])
    gold = [NEG, POS]
    # alpha = 0, smooth = 1, plain denominator, by hand: neg 1 - 2.2/2.85 = 13/57, neu 1 - 1/1.45 = 9/29,
    # pos 1 - 2/2.7 = 7/27
    plain = L.self_adjusting_dice(logits, y, alpha=0.0, smooth=1.0, square_denominator=False).item()
    assert plain == pytest.approx((13 / 57 + 9 / 29 + 7 / 27) / 3, rel=1e-12)
    for alpha, smooth, square in [(0.0, 1.0, True), (0.01, 1.0, True), (1.0, 0.5, False), (2.0, 1e-4, True)]:
        expect = sum(_dice_by_definition(by_col, gold, alpha, smooth, square)) / 3
        got = L.self_adjusting_dice(logits, y, alpha=alpha, smooth=smooth, square_denominator=square).item()
        assert got == pytest.approx(expect, rel=1e-12), (alpha, smooth, square)
    # the defaults are the authors' classification settings: alpha 0.01, smooth 1, squared denominator
    expect = sum(_dice_by_definition(by_col, gold, 0.01, 1.0, True)) / 3
    assert L.self_adjusting_dice(logits, y).item() == pytest.approx(expect, rel=1e-12)


def test_square_denominator_changes_the_value(mixed):
    logits, y = mixed
    plain = L.self_adjusting_dice(logits, y, square_denominator=False)
    square = L.self_adjusting_dice(logits, y, square_denominator=True)
    assert abs(plain.item() - square.item()) > 1e-3


def test_dice_class_weights(mixed):
    logits, y = mixed
    unweighted = L.self_adjusting_dice(logits, y).item()
    assert L.self_adjusting_dice(logits, y, weight=L.class_weights(0.1)).item() != pytest.approx(unweighted, rel=1e-3)
    # equal weights of any size are no weights; a one-hot weight is that class's own Dice loss
    assert L.self_adjusting_dice(logits, y, weight=torch.full((3,), 5.0)).item() == pytest.approx(unweighted, rel=1e-12)
    per_class = [
        L.self_adjusting_dice(logits, y, weight=F.one_hot(torch.tensor(c), 3).double()).item() for c in range(3)
    ]
    assert sum(per_class) / 3 == pytest.approx(unweighted, rel=1e-12)
    w = [1.0, 0.1, 1.0]
    weighted = L.self_adjusting_dice(logits, y, weight=torch.tensor(w, dtype=torch.float64)).item()
    assert weighted == pytest.approx(sum(a * b for a, b in zip(w, per_class)) / sum(w), rel=1e-12)
    with pytest.raises(ValueError, match="one entry per class"):
        L.self_adjusting_dice(logits, y, weight=torch.ones(2))


def test_dice_of_a_batch_is_not_a_mean_over_its_micro_batches(mixed):
    # why lib.train must not accumulate it over micro-batches: halves' Dice does not add up to the batch's
    logits, y = mixed
    whole = L.self_adjusting_dice(logits, y).item()
    halves = [L.self_adjusting_dice(logits[i : i + 4], y[i : i + 4]).item() for i in (0, 4)]
    assert abs(whole - sum(halves) / 2) > 1e-3


@pytest.mark.parametrize("square", [False, True])
def test_dice_gradient_is_finite_when_p_rounds_to_one(square):
    logits = torch.tensor([[60.0, -60.0, -60.0], [-60.0, 60.0, -60.0]], requires_grad=True)
    loss = L.self_adjusting_dice(logits, torch.tensor([0, 2]), square_denominator=square)  # alpha 0.01 < 1
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# --- two heads --------------------------------------------------------------------------------------


def test_two_head_loss_by_hand():
    # row 0 neutral, z0 = 0: log 2; row 1 positive, s0 = 3/4: -log(3/4); sentiment head on row 1, s1 = 1/4: log 4
    z = torch.tensor([[0.0, 5.0], [math.log(3), -math.log(3)]])
    y = torch.tensor([NEU, POS])
    expect = (math.log(2) + math.log(4 / 3)) / 2 + math.log(4)
    assert L.two_head_loss(z, y).item() == pytest.approx(expect, rel=1e-6)
    # pos_weight scales the polar rows' term of the first BCE
    expect_w = (math.log(2) + 2 * math.log(4 / 3)) / 2 + math.log(4)
    assert L.two_head_loss(z, y, polar_weight=2.0).item() == pytest.approx(expect_w, rel=1e-6)
    # a negative row: target 0 for the sentiment head, -log(1 - 1/4)
    y_neg = torch.tensor([NEU, NEG])
    expect_neg = (math.log(2) + math.log(4 / 3)) / 2 + math.log(4 / 3)
    assert L.two_head_loss(z, y_neg).item() == pytest.approx(expect_neg, rel=1e-6)


def test_two_head_loss_without_polar_rows_is_the_first_term_and_backpropagates():
    z = torch.tensor([[0.0, 3.0], [math.log(3), -2.0]], requires_grad=True)
    y = torch.tensor([NEU, NEU])
    loss = L.two_head_loss(z, y)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[:, 1].tolist() == [0.0, 0.0]
    assert z.grad[:, 0].tolist() == pytest.approx([0.5 / 2, 0.75 / 2], rel=1e-6)  # d BCE / dz = sigmoid(z) - 0


def test_two_head_log_probs_are_normalised_and_softmax_returns_them():
    z = torch.cat([torch.randn(50, 2) * 4, torch.tensor([[50.0, -50.0], [-50.0, 50.0], [50.0, 50.0]])])
    lp = L.two_head_log_probs(z)
    assert lp.shape == (53, 3) and torch.isfinite(lp).all()
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(53))
    torch.testing.assert_close(torch.softmax(lp, 1), lp.exp())
    # by hand: s0 = 3/4, s1 = 1/4 -> neu 1/4, pos 3/16, neg 9/16
    one = L.two_head_log_probs(torch.tensor([[math.log(3), -math.log(3)]])).exp()[0]
    assert one[[NEG, NEU, POS]].tolist() == pytest.approx([9 / 16, 1 / 4, 3 / 16], rel=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        L.two_head_log_probs(torch.zeros(4, 3))


def test_polar_rule_on_a_handmade_array():
    p = np.zeros((4, 3))
    p[:, [NEG, NEU, POS]] = [[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.2, 0.7, 0.1], [0.25, 0.5, 0.25]]
    lp = np.log(p)  # p(polar) = 0.7, 0.7, 0.3, 0.5; the last row ties pos and neg -> negative
    eps = 1e-6
    assert L.polar_rule(lp, 0.0).tolist() == [-1, 1, -1, -1]
    assert L.polar_rule(lp, 0.3 - eps).tolist() == [-1, 1, -1, -1]
    assert L.polar_rule(lp, 0.3 + eps).tolist() == [-1, 1, 0, -1]
    assert L.polar_rule(lp, 0.5 + eps).tolist() == [-1, 1, 0, 0]
    assert L.polar_rule(lp, 0.7 - eps).tolist() == [-1, 1, 0, 0]
    assert L.polar_rule(lp, 0.7 + eps).tolist() == [0, 0, 0, 0]
    assert (L.polar_rule(lp, 1.0) == 0).all()
    # unnormalised rows (an average of log-probs, a shift) give the same labels
    assert L.polar_rule(lp + 7.0, 0.3 + eps).tolist() == [-1, 1, 0, -1]


def test_polar_weight_weighs_a_missed_polar_row_more():
    y = torch.tensor([NEU, POS, NEG])

    def loss(z0_polar, pw):
        z = torch.tensor([[-1.0, 0.0], [z0_polar, 2.0], [2.0, -2.0]])
        return L.two_head_loss(z, y, polar_weight=pw).item()

    rise = loss(-3.0, None) - loss(3.0, None)  # the positive row scored low instead of high on the identify head
    rise_w = loss(-3.0, 3.0) - loss(3.0, 3.0)
    assert rise > 0 and rise_w > rise
    # only that row's identify term moves, and pos_weight multiplies it
    assert rise_w == pytest.approx(3 * rise, rel=1e-5)
    # None keeps the unweighted loss, and the weight leaves the neutral rows alone
    assert loss(-3.0, 1.0) == pytest.approx(loss(-3.0, None), rel=1e-6)
    z_neu = torch.tensor([[0.5, 1.0], [-2.0, 0.0]])
    y_neu = torch.tensor([NEU, NEU])
    assert L.two_head_loss(z_neu, y_neu, 4.0).item() == pytest.approx(L.two_head_loss(z_neu, y_neu).item(), rel=1e-6)


def test_identify_rule_on_a_handmade_array():
    # s0 = p(polar), s1 = p(positive | polar)
    s = np.array([[0.9, 0.8], [0.9, 0.2], [0.3, 0.9], [0.6, 0.5], [0.5, 0.7]])
    eps = 1e-6
    assert L.identify_rule(s, 0.0, probs=True).tolist() == [1, -1, 1, -1, 1]  # s1 = 0.5 ties to negative
    assert L.identify_rule(s, 0.3 + eps, probs=True).tolist() == [1, -1, 0, -1, 1]
    assert L.identify_rule(s, 0.5, probs=True).tolist() == [1, -1, 0, -1, 0]  # s0 > t, strictly
    assert L.identify_rule(s, 0.6 + eps, probs=True).tolist() == [1, -1, 0, 0, 0]
    assert L.identify_rule(s, 0.9 + eps, probs=True).tolist() == [0, 0, 0, 0, 0]
    # logits (the default): the same rows through sigmoid's inverse, as numpy and as a tensor
    z = np.log(s / (1 - s))
    assert L.identify_rule(z, 0.3 + eps).tolist() == [1, -1, 0, -1, 1]
    assert L.identify_rule(torch.tensor(z), 0.3 + eps).tolist() == [1, -1, 0, -1, 1]
    extreme = np.array([[50.0, -50.0], [-800.0, 800.0], [800.0, 800.0]])
    assert L.identify_rule(extreme, 0.5).tolist() == [-1, 0, 1]
    assert set(L.identify_rule(extreme, 0.0).tolist()) <= set(LABEL2ID)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        L.identify_rule(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="probabilities"):
        L.identify_rule(z, 0.5, probs=True)


def test_identify_rule_is_polar_rule_on_the_two_head_log_probs():
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(3)) * 3
    lp = L.two_head_log_probs(z.double()).numpy()
    for t in (0.05, 0.3, 0.5, 0.77, 0.95):
        assert np.array_equal(L.identify_rule(z, t), L.polar_rule(lp, t)), t


def test_make_and_head_outputs():
    for bad in ("bce", "", "CE"):
        with pytest.raises(ValueError, match="two_head"):
            L.make(bad)
        with pytest.raises(ValueError, match="focal"):
            L.head_outputs(bad)
    assert [L.head_outputs(n) for n in L.LOSSES] == [3, 3, 3, 2]
    logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 1, 1, 0, 2, 1])
    w = L.class_weights(0.1)
    torch.testing.assert_close(L.make("ce", 0.1)(logits, y), F.cross_entropy(logits, y, weight=w))
    torch.testing.assert_close(L.make("ce", 0.1, weighted=False)(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(L.make("focal", 0.1, focal_gamma=1.5)(logits, y), L.focal(logits, y, 1.5, w))
    torch.testing.assert_close(L.make("dice", 0.1)(logits, y), L.self_adjusting_dice(logits, y, weight=w))
    z = torch.randn(8, 2)
    torch.testing.assert_close(L.make("two_head", 0.1)(z, y), L.two_head_loss(z, y))
    torch.testing.assert_close(L.as_logits("two_head", z), L.two_head_log_probs(z))
    assert L.as_logits("ce", logits) is logits


def test_three_class_losses_reject_a_two_column_output():
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        L.focal(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("name", L.LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_finite_gradients_at_extreme_logits(name, weighted):
    k = L.head_outputs(name)
    rows = torch.tensor([[50.0, -50.0, 50.0], [-50.0, 50.0, -50.0], [-50.0, -50.0, 50.0], [50.0, 50.0, 50.0]])
    out = rows.repeat(3, 1)[:, :k].float().requires_grad_()
    y = torch.tensor([0, 1, 2]).repeat_interleave(4)  # every extreme row once with each target
    loss = L.make(name, neutral_weight=0.1, weighted=weighted)(out, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(out.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_is_finite_when_p_t_rounds_to_one(gamma):
    logits = torch.tensor([[60.0, -60.0, -60.0]], requires_grad=True)  # (1 - p_t)^gamma, gamma < 1: naive grad inf
    L.focal(logits, torch.tensor([0]), gamma=gamma).backward()
    assert torch.isfinite(logits.grad).all()
