"""The headline's ensemble (lib/ensembles.py): every model of every seed as one result, and its decision rule
chosen by how it transfers from OOF rows to averaged logits, validation never read."""

import numpy as np
import pandas as pd
import pytest

from lib import ensembles as ens
from lib import rules
from lib.config import TrainConfig
from lib.metrics import softmax
from lib.training import KFoldResult


def fake_runs(n_seeds=2, n_folds=3, n=300, n_val=200, sharp=3.0, seed=0):
    """k-fold results whose logits carry the label plus noise; validation logits are NaN (never to be read)."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1, 0, 1], size=n, p=[0.2, 0.6, 0.2])
    train = pd.DataFrame({"label": y, "fold": np.arange(n) % n_folds})
    onehot = np.eye(3)[y + 1]
    out = []
    for s in range(n_seeds):
        oof = (sharp * onehot + rng.normal(0, 1.5, (n, 3))).astype(np.float32)
        logits = {"validation": np.full((n_folds, n_val, 3), np.nan), "final": np.full((n_folds, n_val, 3), np.nan)}
        out.append(KFoldResult(TrainConfig(seed=13 + s), list(range(n_folds)), oof, logits, [], None))
    return out, train


def test_matched_polar_rate_calls_the_same_share_polar_on_flatter_logits():
    runs, train = fake_runs()
    single, covered = ens.oof_by_seed(runs, train)
    y = train["label"].to_numpy()
    decide = ens.fit_rule("matched polar rate", y, single, single.mean(0))
    flat = single.mean(0) * 0.3  # an averaged ensemble is less sharp than one model
    assert ens._polar_share(decide(flat)) == pytest.approx(decide.param, abs=0.01)
    assert rules.threshold_rule(flat, 0.5).tolist() != decide(flat).tolist()  # a fixed t would call fewer polar


def test_neutral_bias_commutes_with_averaging_logits():
    runs, train = fake_runs()
    single, _ = ens.oof_by_seed(runs, train)
    y = train["label"].to_numpy()
    decide = ens.fit_rule("neutral bias", y, single, single.mean(0))
    a, b = single[0], single[1]
    z = (a + b) / 2
    shifted = [x.copy() for x in (a, b)]
    for x in shifted:
        x[:, rules.NEU] += decide.param
    assert (decide(z) == np.asarray([-1, 0, 1])[((shifted[0] + shifted[1]) / 2).argmax(1)]).all()


def test_transfer_table_uses_oof_rows_only_and_the_headline_rule_is_its_best():
    runs, train = fake_runs()  # validation logits are NaN: reading them would poison the scores
    table = ens.transfer_table(runs, train)
    assert list(table["rule"]) == list(ens.CANDIDATES) and table["oof_f1pn"].between(0, 1).all()
    decide, _ = ens.headline_rule(runs, train, table)
    assert decide.rule == table.loc[table["oof_f1pn"].idxmax(), "rule"]
    labels = decide(np.log(softmax(np.random.default_rng(1).normal(size=(50, 3)))))
    assert set(labels) <= {-1, 0, 1}
    with pytest.raises(ValueError, match="unknown rule"):
        ens.fit_rule("oracle", train["label"].to_numpy(), *ens.oof_by_seed(runs, train)[:1], None)


def test_average_weighs_every_model_once():
    runs, _ = fake_runs(n_seeds=2, n_folds=3)
    for i, r in enumerate(runs):
        r.logits["validation"] = np.full((3, 4, 3), float(i))
    assert np.allclose(ens.average(runs, "validation"), 0.5)


def test_pooled_averages_every_model_and_refuses_one_fold_of_several_models():
    runs, train = fake_runs(n_seeds=2, n_folds=3)
    runs[1] = KFoldResult(runs[1].cfg, [0, 1], runs[1].oof, {k: v[:2] for k, v in runs[1].logits.items()}, [], None)
    for r, v in zip(runs, (1.0, 4.0)):
        r.logits["validation"][:] = v
    runs[1].oof[train["fold"].to_numpy() == 2] = np.nan  # the second run has no fold 2
    p = ens.pooled(runs)
    assert p.folds == [0, 1]  # the folds every run covers
    assert p.ensemble("validation")[0, 0] == pytest.approx((3 * 1.0 + 2 * 4.0) / 5)  # equal weight per model
    held = train["fold"].to_numpy() == 0
    assert p.oof[held] == pytest.approx((runs[0].oof[held] + runs[1].oof[held]) / 2)
    with pytest.raises(ValueError, match="several models per fold"):
        p.ensemble("validation", [0])
    with pytest.raises(ValueError, match="several models per fold"):
        p.checkpoint(0)
