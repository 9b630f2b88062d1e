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


def _dice_by_hand(p, alpha, gamma):
    a = (1 - p) ** alpha * p
    return 1 - (2 * a + gamma) / (a + 1 + gamma)


def test_dice_on_a_hand_computed_batch():
    # p_t = 1/3, 3/5, 1/2 -> with alpha = gamma = 1 the row losses are 7/20, 19/56, 1/3
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0], [0.0, 0.0, math.log(2)]])
    y = torch.tensor([NEU, NEG, POS])
    rows = [7 / 20, 19 / 56, 1 / 3]
    assert L.self_adjusting_dice(logits, y).item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    weighted = L.self_adjusting_dice(logits, y, weight=L.class_weights(0.1)).item()
    assert weighted == pytest.approx((0.1 * rows[0] + rows[1] + rows[2]) / 2.1, rel=1e-6)
    # other alpha, gamma: p_t = exp(z_t) / sum exp(z), row by row with math.exp
    p = [math.exp(row[t]) / sum(math.exp(v) for v in row) for row, t in zip(logits.tolist(), y.tolist())]
    expect = sum(_dice_by_hand(q, 2.0, 0.5) for q in p) / 3
    assert L.self_adjusting_dice(logits, y, alpha=2.0, gamma=0.5).item() == pytest.approx(expect, rel=1e-6)


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
