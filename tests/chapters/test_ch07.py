"""Chapter 07's analysis (lib/chapters/ch07.py) on handmade logits and frames: no training."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib import plan  # noqa: E402
from lib import rules as th  # noqa: E402
from lib.chapters import ch07 as imb  # noqa: E402
from lib.chapters import plots  # noqa: E402
from lib.chapters.figcheck import text_problems  # noqa: E402
from lib.config import TrainConfig, get_profile  # noqa: E402
from lib.losses import polar_rule, two_head_log_probs  # noqa: E402
from lib.metrics import f1pn, softmax  # noqa: E402
from lib.training import KFoldResult  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def probs_logits(y, polar_p, neutral_p, rng):
    """Logits whose max(p(pos), p(neg)) is `polar_p` on polar rows (right sign) and `neutral_p` on neutral rows."""
    n, p = len(y), np.empty((len(y), 3))
    hi = np.where(y == 0, neutral_p, polar_p) + rng.uniform(-0.02, 0.02, n)
    sign = np.where(y == 0, rng.choice([-1, 1], n), y)
    p[:, 2], p[:, 0] = np.where(sign > 0, hi, 0.05), np.where(sign > 0, 0.05, hi)
    p[:, 1] = 1 - p[:, 0] - p[:, 2]
    return np.log(p)


def frames(n_train=400, n_val=300, seed=0):
    rng = np.random.default_rng(seed)
    train = pd.DataFrame(
        {"label": rng.choice([-1, 0, 1], n_train, p=[0.15, 0.7, 0.15]), "fold": np.arange(n_train) % 2}
    )
    val = pd.DataFrame(
        {
            "label": rng.choice([-1, 0, 1], n_val, p=[0.15, 0.7, 0.15]),
            "sentence": [f"sentence number {i // 3} with words" for i in range(n_val)],
            "sentence_seen_in_train": np.arange(n_val) % 3 == 0,
            "entity_seen_in_train": np.arange(n_val) % 2 == 0,
            "entity_tag": rng.choice(["PERSON", "ORGANIZATION"], n_val),
        }
    )
    return train, val


def kfold(cfg, oof, val_logits) -> KFoldResult:
    """A two-fold run: `val_logits` (one array per fold model)."""
    stack = np.stack(val_logits)
    return KFoldResult(cfg, [0, 1], oof, {"validation": stack, "final": stack}, [], Path("."))


def test_rule_is_chosen_on_oof_rows_not_on_validation():
    rng = np.random.default_rng(1)
    train, val = frames()
    oof = probs_logits(train["label"].to_numpy(), 0.8, 0.6, rng)  # OOF: polar rows above 0.6 -> t near 0.7
    zv = probs_logits(val["label"].to_numpy(), 0.45, 0.25, rng)  # validation would want t near 0.35
    res = kfold(TrainConfig(loss="ce"), oof, [zv, zv])
    d = imb.decide(res, train)
    assert d["rule"] == "threshold"
    assert d["param"] == th.choose(train["label"], oof, "threshold") and 0.6 < d["param"] <= 0.8
    assert th.choose(val["label"], zv, "threshold") < 0.45  # the validation optimum differs
    assert np.array_equal(d["OOF rule"], th.threshold_rule(zv, d["param"]))
    assert (d["OOF rule"] == 0).all()  # applied unchanged: every validation row falls below the OOF t
    assert np.array_equal(d["argmax"], np.asarray([-1, 0, 1])[zv.argmax(1)])


def test_rule_uses_only_the_oof_rows_of_folds_that_were_run():
    rng = np.random.default_rng(2)
    train, val = frames()
    oof = probs_logits(train["label"].to_numpy(), 0.8, 0.6, rng)
    oof[train["fold"].to_numpy() == 1] = np.nan  # fold 1 not run: its rows carry no logits
    zv = probs_logits(val["label"].to_numpy(), 0.8, 0.6, rng)
    res = KFoldResult(TrainConfig(), [0], oof, {"validation": zv[None], "final": zv[None]}, [], Path("."))
    held = train["fold"].to_numpy() == 0
    assert imb.decide(res, train)["param"] == th.choose(train["label"][held], oof[held], "threshold")


def test_two_head_rule_is_polar_rule_with_t_from_an_oof_grid_search():
    rng = np.random.default_rng(3)
    train, val = frames()
    y = train["label"].to_numpy()
    z = torch.tensor(np.c_[np.where(y != 0, 1.0, -0.5) + rng.normal(0, 1, len(y)), np.where(y > 0, 2.0, -2.0)])
    oof = two_head_log_probs(z.float()).numpy()
    zv = [
        two_head_log_probs(torch.randn(len(val), 2, generator=torch.Generator().manual_seed(k))).numpy() for k in (0, 1)
    ]
    d = imb.decide(kfold(TrainConfig(loss="two_head"), oof, zv), train)
    assert d["rule"] == "polar"
    grid = th.GRIDS["threshold"]
    f = np.array([f1pn(y, polar_rule(oof, t)) for t in grid])
    assert f1pn(y, polar_rule(oof, d["param"])) == pytest.approx(f.max())
    ens = np.mean(zv, axis=0)
    assert np.array_equal(d["OOF rule"], polar_rule(ens, d["param"]))
    assert np.allclose(d["p_polar"], 1 - softmax(ens)[:, 1])


def test_p_polar_of_two_head_log_probs_is_the_polar_sigmoid():
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    assert np.allclose(imb.p_polar(two_head_log_probs(z).numpy()), torch.sigmoid(z[:, 0]).numpy(), atol=1e-6)


def test_fold_table_chooses_each_folds_rule_on_its_own_oof_rows():
    rng = np.random.default_rng(4)
    train, val = frames()
    y, fold = train["label"].to_numpy(), train["fold"].to_numpy()
    oof = np.where((fold == 0)[:, None], probs_logits(y, 0.8, 0.6, rng), probs_logits(y, 0.45, 0.25, rng))
    zv = [probs_logits(val["label"].to_numpy(), 0.8, 0.6, rng) for _ in range(2)]
    t = imb.fold_table({"07/ce": kfold(TrainConfig(), oof, zv)}, train, val)
    rule = t[t["decision"] == "OOF rule"].set_index("fold")
    assert rule.loc[0, "param"] == th.choose(y[fold == 0], oof[fold == 0], "threshold") > 0.6
    assert rule.loc[1, "param"] == th.choose(y[fold == 1], oof[fold == 1], "threshold") < 0.45
    assert rule.loc[0, "f1pn"] == pytest.approx(f1pn(val["label"], th.threshold_rule(zv[0], rule.loc[0, "param"])))
    assert t["decision"].value_counts().to_dict() == {"argmax": 2, "OOF rule": 2}


def test_reliability_bins_count_every_row_once():
    rng = np.random.default_rng(5)
    p = np.r_[0.0, 1.0, 0.1, rng.uniform(size=200)]
    y = rng.choice([-1, 0, 1], len(p))
    r = imb.reliability(y, p, bins=10)
    assert r["n"].sum() == len(p)
    assert (r["lo"] <= r["mean_pred"]).all() and (r["mean_pred"] <= r["hi"]).all()
    last = r[r["hi"] == 1.0].iloc[0]
    inside = p >= 0.9
    assert last["n"] == inside.sum() and last["observed"] == pytest.approx((y[inside] != 0).mean())
    assert r.loc[r["lo"] == 0.1, "n"].item() == ((p >= 0.1) & (p < 0.2)).sum()  # left edge closed


def test_reference_is_the_ce_run_with_the_headline_neutral_weight():
    def run(name, **kw):
        return plan.Run(name, "fold", name, ("07",), TrainConfig(**kw), (0, 1))

    runs = [
        run("02/hamam", neutral_weight=0.3),
        run("07/focal-0.3", loss="focal", neutral_weight=0.3),
        run("07/ce-weight-0.1", neutral_weight=0.1),
        run("07/ce-weight-1", neutral_weight=1.0),
    ]
    assert imb.reference(runs, 0.1) == "07/ce-weight-0.1"
    assert imb.reference(runs, 1.0) == "07/ce-weight-1"
    assert imb.reference(runs, 0.3) == "07/ce-weight-0.1"  # no 07 cross-entropy run at 0.3: the fallback
    prof = get_profile("smoke")
    assert imb.reference(plan.runs(prof), plan.get(prof, "02/hamam").cfg.neutral_weight) == "07/ce-weight-0.1"


def test_chapter_tables_numbers_answer_and_figures():
    rng = np.random.default_rng(6)
    train, val = frames()
    yt, yv = train["label"].to_numpy(), val["label"].to_numpy()
    names = ["07/ce-weight-0.1", "07/ce-weight-1", "07/focal", "07/focal-weight-0.1", "07/dice", "07/two-head"]
    cfgs = {
        "07/ce-weight-0.1": TrainConfig(neutral_weight=0.1),
        "07/ce-weight-1": TrainConfig(neutral_weight=1.0),
        "07/focal": TrainConfig(loss="focal", neutral_weight=1.0),
        "07/focal-weight-0.1": TrainConfig(loss="focal", neutral_weight=0.1),
        "07/dice": TrainConfig(loss="dice", neutral_weight=1.0),
        "07/two-head": TrainConfig(loss="two_head"),
    }
    runs = {}
    for i, n in enumerate(names):
        cfg = cfgs[n]
        oof, zv = probs_logits(yt, 0.5 + 0.05 * i, 0.4, rng), [probs_logits(yv, 0.5 + 0.05 * i, 0.4, rng) for _ in "ab"]
        runs[n] = kfold(cfg, oof, zv)
    dec = {n: imb.decide(r, train) for n, r in runs.items()}
    ref = names[0]
    scores, comp = imb.score_table(val, dec, 20), imb.compare(val, dec, ref, 20)
    folds, rel = imb.fold_table(runs, train, val), imb.reliability_table(val, dec)
    assert len(scores) == len(names) * 2 * 3 and set(comp["kind"]) == {"minus reference", "threshold gain"}
    assert not comp[(comp["variant"] == ref) & (comp["kind"] == "minus reference")].size
    a = scores[(scores["variant"] == ref) & (scores["decision"] == "argmax") & (scores["subset"] == "all")].iloc[0]
    assert a["f1pn"] == pytest.approx(f1pn(yv, dec[ref]["argmax"])) and a["f1pn_lo"] <= a["f1pn"] <= a["f1pn_hi"]
    assert a["pred_neutral_share"] == pytest.approx((dec[ref]["argmax"] == 0).mean())
    num = imb.numbers(scores, comp)
    for k in (
        "ce_weight_01.validation.all",  # under the OOF-chosen rule
        "ce_weight_01.argmax.validation.all",
        "focal_minus_ref.validation.all",
        "focal_minus_ref.argmax.validation.all",
        "focal.threshold_gain.validation.all",
        "focal.neutral_share",
        "two_head.validation.unseen",
        "two_head.argmax.validation.unseen",
    ):
        assert f"07.{k}" in num, k
    assert "07.ce_weight_01_minus_ref.validation.all" not in num
    assert len(num["07.focal.validation.all"]) == 3 and len(num["07.focal.neutral_share"]) == 1
    look = imb.looks(runs)  # one display name and colour per objective, as chapter 03 names its weights
    assert len({v[0] for v in look.values()}) == len({v[1] for v in look.values()}) == len(names)
    assert look["07/ce-weight-0.1"][0] == "cross-entropy, neutral weight 0.1" and look["07/dice"][0].startswith("Dice")
    text = imb.answer(scores, comp, folds, rel, ref, "hamam", 5, look)
    assert "**hamam**" in text and "fold models 0, 1 of 5" in text and all(f"**{v[0]}**" in text for v in look.values())
    assert "07/" not in text  # variants by their display names, not run names
    by = imb.by_type(val, dec, 20)
    assert set(by["group"]) == {"PERSON", "ORGANIZATION"} and len(by) == 2 * 2 * len(names)
    for study_style in (False, True):  # matplotlib's defaults, and the chapters' (lib.chapters.plots.setup)
        with matplotlib.rc_context():
            if study_style:
                plots.setup()
            figs = [
                imb.f1pn_figure(scores, folds, look),
                imb.diff_figure(comp, ref, look),
                imb.reliability_figure(rel, look),
                imb.neutral_figure(scores, float((yv == 0).mean()), float((yt == 0).mean()), look),
            ]
            for fig in figs:
                assert text_problems(fig) == []


def test_tables_are_shown_by_display_name_whatever_their_shape():
    look = {"07/focal": ("focal (γ = 2)", "red"), "07/dice": ("Dice", "blue")}
    rows = pd.DataFrame({"variant": ["07/focal", "07/dice"], "f1pn": [0.5, 0.4]})
    assert imb.named(rows, look)["variant"].tolist() == ["focal (γ = 2)", "Dice"]
    by_index = pd.DataFrame({"loss": ["focal", "dice"]}, index=["07/focal", "07/dice"])
    assert imb.named(by_index, look).index.tolist() == ["focal (γ = 2)", "Dice"]
    series = pd.Series([0.1, 0.2], index=["07/focal", "07/dice"])  # ch07.ece returns one
    assert imb.named(series, look).index.tolist() == ["focal (γ = 2)", "Dice"]
