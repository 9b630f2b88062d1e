import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from lib import backbones, sbert
from lib import model as hm
from lib.backbones import build_tiny_random
from lib.chapters.ch05 import report
from lib.config import TrainConfig
from lib.data import load_split

# "Путин" occurs twice: at 0 and at 39 (the second is the target of the last case)
SENT = "Путин встретился с Путиным в Москве, а Путин похвалил Москву"
CASES = [(0, 5), (19, 26), (54, 60), (39, 44)]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    sents = list(load_split("train", max_rows=300)["sentence"]) + [SENT]
    out = tmp_path_factory.mktemp("sbert") / "tiny"
    build_tiny_random(sents, out, vocab_size=600)
    return str(out)


def test_cases_are_what_they_claim():
    assert [SENT[a:b] for a, b in CASES] == ["Путин", "Путиным", "Москву", "Путин"]


@pytest.mark.parametrize("span", CASES)
def test_mark_wraps_exactly_the_span(span):
    a, b = span
    text = sbert.mark(SENT, a, b)
    open_, close = sbert.MARKERS
    assert text.count(open_) == text.count(close) == 1
    assert text.index(open_) == a  # by offsets: the prefix is untouched
    assert text[a + len(open_) : text.index(close)] == SENT[a:b]
    assert text.replace(open_, "").replace(close, "") == SENT


def test_mark_repeated_word_marks_the_rows_occurrence_not_the_first():
    first, second = sbert.mark(SENT, 0, 5), sbert.mark(SENT, 39, 44)
    assert first.startswith("<e>Путин</e> встретился")
    assert second.startswith("Путин встретился") and "а <e>Путин</e> похвалил" in second
    with pytest.raises(ValueError):
        sbert.mark(SENT, 5, 5)


def test_pair_texts_per_variant():
    df = pd.DataFrame(
        {"sentence": [SENT, SENT], "entity": ["Путин", "Москву"], "start": [39, 54], "end": [44, 60], "label": [1, -1]}
    )
    u, v = sbert.pair_texts(df, "entity")
    assert u == [sbert.mark(SENT, 39, 44), sbert.mark(SENT, 54, 60)] and v == ["Путин", "Москву"]
    assert sbert.pair_texts(df, "dummy") == (u, [sbert.DUMMY] * 2)
    assert sbert.pair_texts(df, "plain") == ([SENT, SENT], ["Путин", "Москву"])
    a, b, target = sbert.anchor_pairs(df)
    # every row against each anchor, target 1 only for the row's own sentiment
    assert a == u + u and b == [sbert.ANCHORS[-1]] * 2 + [sbert.ANCHORS[1]] * 2
    assert target.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("span", CASES)
def test_markers_are_single_tokens_around_the_entity_tokens(backbone, span):
    model = sbert.build(backbone, TrainConfig(backbone=backbone))
    tok = model[0].tokenizer
    a, b = span
    got = tok.tokenize(sbert.mark(SENT, a, b))
    want = (
        tok.tokenize(SENT[:a])
        + [sbert.MARKERS[0]]
        + tok.tokenize(SENT[a:b])
        + [sbert.MARKERS[1]]
        + tok.tokenize(SENT[b:])
    )
    assert got == want
    assert tok.tokenize(sbert.DUMMY) == [sbert.DUMMY]


def test_added_token_vectors_are_distinct_and_frozen_like_the_cross_encoder(backbone):
    model = sbert.build(backbone, TrainConfig(backbone=backbone, freeze_embeddings=True))
    tok, emb = model[0].tokenizer, model[0].auto_model.get_input_embeddings().weight
    ids = tok.convert_tokens_to_ids([*sbert.MARKERS, sbert.DUMMY])
    # as far from each other as two ordinary tokens typically are (mean-resizing makes them ~equal)
    assert torch.pdist(emb[ids]).min() > 0.5 * torch.pdist(emb[10:60]).median()
    assert not emb.requires_grad
    assert (
        sbert.build(backbone, TrainConfig(backbone=backbone))
        .get_submodule("0")
        .auto_model.get_input_embeddings()
        .weight.requires_grad
    )


def test_softmax_fit_and_predict_shapes(backbone):
    cfg = TrainConfig(backbone=backbone, lr=1e-3, head_lr=1e-3)
    df = load_split("train", max_rows=40)
    model = sbert.build(backbone, cfg)
    loss = sbert.make_loss(model, "softmax", cfg)
    u, v = sbert.pair_texts(df, "entity")
    before = loss.classifier.weight.detach().clone()
    history = sbert.fit(loss, u, v, [hm.LABEL2ID[int(y)] for y in df["label"]], cfg, epochs=1, batch_size=8)
    assert len(history) == -(-len(df) // 8) and np.isfinite(history).all()
    assert not torch.equal(before, loss.classifier.weight)
    logits = sbert.softmax_logits(loss, u, v)
    assert logits.shape == (len(df), 3) and np.isfinite(logits).all()
    # classifying cached embeddings gives the same logits as the helper
    with torch.no_grad():
        again = loss.classifier(sbert.pair_features(sbert.embed(model, u), sbert.embed(model, v))).numpy()
    assert np.allclose(again, logits, atol=1e-5)
    scores = sbert.anchor_scores(model, u)
    assert scores.shape == (len(df), 2) and (np.abs(scores) <= 1 + 1e-5).all()


def _brute_force_best_f1(scores, y):
    best = 0.0
    for t in np.unique(scores):
        best = max(best, f1_score(y, scores >= t, zero_division=0))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_best_f1_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.random(n) < rng.uniform(0.05, 0.5)
    y[rng.integers(n)] = True  # at least one positive
    scores = rng.normal(size=n) + y * rng.uniform(0, 2)
    if seed % 2:  # ties
        scores = np.round(scores, 1)
    f1, threshold = sbert.best_f1_threshold(scores, y)
    want = _brute_force_best_f1(scores, y)
    assert f1 == pytest.approx(want)
    assert f1_score(y, scores >= threshold) == pytest.approx(want)  # the threshold reproduces it


def test_polar_predict():
    scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.75], [0.1, 0.1], [0.4, 0.7]])
    got = sbert.polar_predict(scores, [0.5, 0.7])  # POLAR order: negative, positive
    assert sbert.POLAR == (-1, 1)
    # both fire in row 3: margins 0.1 (negative) vs 0.05 (positive); a score at its threshold fires (last row)
    assert got.tolist() == [-1, 1, -1, 0, 1]


# --- frozen layers, cache key -------------------------------------------------------------------


def test_build_freezes_the_same_layers_as_the_cross_encoder(backbone):
    cfg = TrainConfig(backbone=backbone, freeze_layers=1)
    st = sbert.build(backbone, cfg)
    enc = st[0].auto_model
    ham, _ = hm.build(backbone, cfg)
    trainable = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert trainable(enc) == {n[len("encoder.") :] for n in trainable(ham) if n.startswith("encoder.")}
    assert not any(n.startswith(("embeddings.", "encoder.layer.0.")) for n in trainable(enc))
    assert any(n.startswith("encoder.layer.1.") for n in trainable(enc))


# --- the pretrained e5 as prescribed ---------------------------------------------------------------


def test_e5_encoder_is_the_model_card_recipe(backbone):
    """prefix "query: ", mean over all tokens under the attention mask, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    texts = [SENT, "Москва", "Путин похвалил Москву"]
    got = sbert.embed(sbert.e5_encoder(backbone), texts)
    tok, enc = AutoTokenizer.from_pretrained(backbone), AutoModel.from_pretrained(backbone).eval()
    batch = tok(
        [sbert.E5_PROMPT + t for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt"
    )
    with torch.no_grad():
        h = enc(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)


def test_e5_prescribed_build_tokenises_the_prefix_like_the_full_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    from lib import e5

    df = pd.DataFrame({"sentence": [SENT, "Сбербанк сообщил о рекордной прибыли"], "entity": ["Путин", "Сбербанк"]})
    data = {"train": df, "validation": df.iloc[:1], "final": df.iloc[1:]}
    tok = AutoTokenizer.from_pretrained(backbones.resolve("e5-small", sorted(set(sbert.e5_corpus(data))), tmp_path))
    img = e5.read_image(e5.image_path())
    full = e5.tokenizer_from_pieces(img.pieces, e5.compile_charsmap(img.norm_map))
    for t in list(df["sentence"]) + list(df["entity"]):
        assert tok.tokenize(sbert.E5_PROMPT + t) == full.tokenize(sbert.E5_PROMPT + t)
    assert tok.tokenize(sbert.E5_PROMPT)[:3] == ["▁que", "ry", ":"]


def test_frozen_lr_folds_predicts_each_fold_with_a_model_that_never_saw_it():
    rng = np.random.default_rng(0)
    n = 120
    train = pd.DataFrame({"label": rng.choice([-1, 0, 1], n), "fold": np.arange(n) % 3})
    x = rng.normal(size=(n, 4)) + train["label"].to_numpy()[:, None]
    x_val = rng.normal(size=(10, 4))
    out = sbert.frozen_lr_folds(x, train, x_val, [0, 2], neutral_weight=0.1)
    assert np.isnan(out["oof"][train["fold"] == 1]).all() and not np.isnan(out["oof"][train["fold"] != 1]).any()
    assert np.allclose(out["oof"][train["fold"] != 1].sum(1), 1)
    want = []
    for k in (0, 2):
        clf = sbert.frozen_logreg(x[train["fold"] != k], train["label"][train["fold"] != k], 0.1)
        assert np.allclose(out["oof"][train["fold"] == k], clf.predict_proba(x[train["fold"] == k]))
        want.append(clf.predict_proba(x_val))
    assert np.allclose(out["validation"], np.mean(want, 0))


# --- predictions, scores, choice ------------------------------------------------------------------


def test_crossfit_polar_labels_each_half_with_the_other_halfs_thresholds():
    rng = np.random.default_rng(1)
    n = 200
    y = rng.choice([-1, 0, 1], n)
    scores = np.stack([(y == -1) + rng.normal(0, 0.8, n), (y == 1) + rng.normal(0, 0.8, n)], 1)
    groups = np.arange(n) // 2
    labels, t_all = report.crossfit_polar(scores, y, groups, seed=3)
    assert labels.shape == (n,) and set(labels) <= {-1, 0, 1}
    assert np.allclose(t_all, [sbert.best_f1_threshold(scores[:, j], y == c)[1] for j, c in enumerate(sbert.POLAR)])
    # changing the scores of one half moves that half's thresholds, so only the *other* half's labels may change
    codes = pd.factorize(pd.Series(list(groups)))[0]
    half = np.random.default_rng(3).permutation(codes.max() + 1)[codes] % 2 == 0
    moved = scores.copy()
    moved[half] += rng.normal(0, 3, moved[half].shape)
    again, _ = report.crossfit_polar(moved, y, groups, seed=3)
    assert (again[half] != labels[half]).any()  # its own scores moved
    fit_on_half = [sbert.best_f1_threshold(moved[half, j], y[half] == c)[1] for j, c in enumerate(sbert.POLAR)]
    assert np.array_equal(again[~half], sbert.polar_predict(scores[~half], fit_on_half))
    # no positive row of a class to fit on: that class never fires
    assert report.best_f1_threshold_or_never(np.ones(5), np.zeros(5, bool)) == np.inf


class _FakeKFold:
    def __init__(self, oof, logits):
        self.oof, self.logits = oof, logits

    def ensemble(self, split, folds):
        return self.logits[list(folds)].mean(0)


def _toy(n_train=60, n_val=40, seed=0):
    rng = np.random.default_rng(seed)
    train = pd.DataFrame(
        {
            "sentence": [f"s{i // 2}" for i in range(n_train)],
            "label": rng.choice([-1, 0, 1], n_train),
            "fold": np.arange(n_train) % 2,
        }
    )
    val = pd.DataFrame(
        {
            "sentence": [f"v{i // 2}" for i in range(n_val)],
            "label": rng.choice([-1, 0, 1], n_val),
            "sentence_seen_in_train": False,
        }
    )
    return rng, train, val


def test_collect_uses_only_the_given_folds_and_keeps_names_order():
    rng, train, val = _toy()
    logits = rng.normal(size=(2, len(val), 3))
    cross = {
        "CLS cross-encoder": _FakeKFold(rng.normal(size=(len(train), 3)), logits),
        "HAMAM": _FakeKFold(rng.normal(size=(len(train), 3)), logits + 1),
    }
    oof = np.full((len(train), 2), np.nan)
    oof[train["fold"] == 0] = rng.random(((train["fold"] == 0).sum(), 2))
    bi = {
        "cosine-anchors": {"oof": oof, "validation": rng.random((1, len(val), 2))},
        "softmax-entity": {"oof": rng.normal(size=(len(train), 3)), "validation": rng.normal(size=(1, len(val), 3))},
    }
    frozen = {"oof": rng.dirichlet(np.ones(3), len(train)), "validation": rng.dirichlet(np.ones(3), len(val))}
    preds, thresholds = report.collect(cross, bi, frozen, train, [0])
    assert list(preds) == ["HAMAM", "CLS cross-encoder", "softmax-entity", "cosine-anchors", report.E5_FROZEN]
    rows = (train["fold"] == 0).to_numpy()
    from lib.metrics import to_labels

    assert np.array_equal(preds["HAMAM"].val, to_labels(logits[0] + 1))  # fold 0 only, not the mean of both
    assert np.array_equal(preds["HAMAM"].oof, to_labels(cross["HAMAM"].oof[rows]))
    assert all(
        len(p.oof) == rows.sum() and len(p.val) == len(val) and p.val_scores.shape == (len(val), 2)
        for p in preds.values()
    )
    assert set(thresholds) == set(sbert.POLAR)


def test_best_is_chosen_on_oof_rows_not_on_validation():
    scores = pd.DataFrame(
        [
            {
                "model": "softmax-entity",
                "family": report.FINE_TUNED,
                "split": "train OOF",
                "subset": "all",
                "f1pn": 0.50,
            },
            {
                "model": "softmax-entity",
                "family": report.FINE_TUNED,
                "split": "validation",
                "subset": "all",
                "f1pn": 0.40,
            },
            {
                "model": "softmax-plain",
                "family": report.FINE_TUNED,
                "split": "train OOF",
                "subset": "all",
                "f1pn": 0.45,
            },
            {
                "model": "softmax-plain",
                "family": report.FINE_TUNED,
                "split": "validation",
                "subset": "all",
                "f1pn": 0.60,
            },
            {"model": "HAMAM", "family": report.CROSS, "split": "train OOF", "subset": "all", "f1pn": 0.90},
        ]
    )
    assert report.best_on_oof(scores) == "softmax-entity"


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_ci_matches_the_metrics_bootstrap(seed):
    from lib.metrics import bootstrap_ci, draw_resamples, f1pn_resampled, macro_f1

    rng = np.random.default_rng(seed)
    n = 150
    y, p, g = rng.choice([-1, 0, 1], n), rng.choice([-1, 0, 1], n), rng.integers(0, 40, n)
    assert np.allclose(report.macro_f1_ci(y, p, groups=g, n=200), bootstrap_ci(y, p, groups=g, metric=macro_f1, n=200))
    counts, inverse = draw_resamples(g, n, 50, 0)
    assert np.allclose(report.f1_resampled(y, p, counts, inverse, (1, -1)), f1pn_resampled(y, p, counts, inverse))


def test_score_table_and_comparisons():
    rng, train, val = _toy()
    rows = (train["fold"] == 0).to_numpy()

    def mk(name):
        return report.Pred(
            name, rng.choice([-1, 0, 1], len(val)), rng.choice([-1, 0, 1], rows.sum()), rng.random((len(val), 2))
        )

    preds = {n: mk(n) for n in ("HAMAM", "CLS cross-encoder", "softmax-entity", "softmax-plain", report.E5_FROZEN)}
    scores = report.score_table(val, train, preds, [0], 50)
    assert set(scores["split"]) == {"validation", "train OOF"}
    assert (scores["f1pn_lo"] <= scores["f1pn"] + 1e-9).all() and (scores["macro_f1_lo"] <= scores["macro_f1_hi"]).all()
    best = report.best_on_oof(scores)
    keys = [k for _, _, k in report.comparisons(preds, best)]
    assert keys[0] == "hamam_minus_best_sbert" and "fine_tuned_minus_frozen_e5" in keys and "plain_minus_marked" in keys
    assert all(a != b for a, b, _ in report.comparisons(preds, best))
    only = {n: preds[n] for n in ("HAMAM", "CLS cross-encoder", report.E5_FROZEN)}  # no fine-tuned variant ran
    assert [k for _, _, k in report.comparisons(only, report.E5_FROZEN)] == [
        "hamam_minus_best_sbert",
        "cls_minus_best_sbert",
        "hamam_minus_cls",
    ]
    assert len(report.retrieval_table(val, preds)) == len(preds) * 2 * 2


# --- answer text --------------------------------------------------------------------------------


def test_answer_names_the_oof_choice_and_the_direction():
    rng, train, val = _toy()
    rows = (train["fold"] == 0).to_numpy()
    preds = {
        n: report.Pred(
            n, rng.choice([-1, 0, 1], len(val)), rng.choice([-1, 0, 1], rows.sum()), rng.random((len(val), 2))
        )
        for n in ("HAMAM", "CLS cross-encoder", "softmax-entity", report.E5_FROZEN)
    }
    scores = report.score_table(val, train, preds, [0], 50)
    best = report.best_on_oof(scores)
    from lib.chapters import study

    diffs = pd.concat(
        [
            study.paired(val, preds[a].val, preds[b].val, 50, f"{a} - {b}").assign(key=k)
            for a, b, k in report.comparisons(preds, best)
        ]
    )
    throughput = pd.DataFrame(
        {
            "method": ["HAMAM (cross)", "CLS pair (cross)", "SBERT marked u", "SBERT plain u"],
            "per_second": [100.0, 150, 140, 300],
        }
    )
    cost = pd.DataFrame(
        [
            {"method": m, "N": n, "ms_per_sentence": v * n}
            for n in (1, 16)
            for m, v in (
                ("HAMAM (cross)", 10),
                ("CLS pair (cross)", 7),
                ("SBERT marked u", 7),
                ("SBERT plain u, cached", 1),
            )
        ]
    )
    text = report.answer(scores, diffs, best, throughput, cost, 1, "smoke", "test machine")
    assert f"**{report.NAMES[best][0].replace(chr(10), ' ')}**" in text and "10.0× faster than HAMAM" in text
    r = diffs[(diffs["key"] == "hamam_minus_best_sbert") & (diffs["subset"] == "all")].iloc[0]
    assert ("excludes 0" in text.split("**Does a bi-encoder compete?**")[1].split(";")[0]) == (
        r["lo"] > 0 or r["hi"] < 0
    )


def test_figures_and_answer_use_each_models_one_display_name():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots, study
    from lib.chapters.figcheck import text_problems
    from lib.config import get_profile

    rng, train, val = _toy()
    rows = (train["fold"] == 0).to_numpy()
    preds = {
        n: report.Pred(
            n, rng.choice([-1, 0, 1], len(val)), rng.choice([-1, 0, 1], rows.sum()), rng.random((len(val), 2))
        )
        for n in ("HAMAM", "CLS cross-encoder", "softmax-entity", "softmax-plain", report.E5_FROZEN)
    }
    scores = report.score_table(val, train, preds, [0], 50)
    best = report.best_on_oof(scores)
    names = report.labels(get_profile("smoke"))
    assert names["HAMAM"] == "HAMAM tiny-random" and names["softmax-entity"] == "SBERT softmax-entity"
    diffs = pd.concat(
        [
            study.paired(val, preds[a].val, preds[b].val, 50, f"{a} - {b}").assign(key=k)
            for a, b, k in report.comparisons(preds, best)
        ]
    )
    with matplotlib.rc_context():
        plots.setup()
        fig, axes = plt.subplots(2, 1, figsize=(14, 8.4))
        report.plot_scores(axes, scores, best, names)
        ticks = [" ".join(t.get_text().split()) for t in axes[0].get_xticklabels()]
        assert f"{names[best]}{plots.BEST_MARK}" in ticks and "HAMAM tiny-random" in ticks
        fig2, ax = plt.subplots(figsize=(11, 0.4 * len(diffs) + 1.4))
        report.plot_diffs(ax, diffs, names)
        assert "HAMAM tiny-random − CLS cross-encoder" in [t.get_text() for t in ax.get_yticklabels()]
        fig3, axes3 = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
        report.plot_pr(axes3, val, preds, ["HAMAM", "CLS cross-encoder", report.E5_FROZEN], None, names)
        for f in (fig, fig2, fig3):
            assert text_problems(f) == []
        plt.close("all")
    throughput = pd.DataFrame(
        {
            "method": ["HAMAM (cross)", "CLS pair (cross)", "SBERT marked u", "SBERT plain u"],
            "per_second": [100.0, 150, 140, 300],
            "repeats": 3,
        }
    )
    cost = pd.DataFrame(
        [
            {"method": m, "N": n, "ms_per_sentence": v * n}
            for n in (1, 16)
            for m, v in (("HAMAM (cross)", 10), ("SBERT marked u", 7), ("SBERT plain u, cached", 1))
        ]
    )
    text = report.answer(scores, diffs, best, throughput, cost, 1, "smoke", "test machine", names)
    assert f"**{names[best]}**" in text and "HAMAM tiny-random 100 rows/s" in text and "median of 3" in text
    assert "CLS pair" not in text and "pair classifier" not in text


def test_the_sbert_method_describes_only_the_variants_that_ran():
    rep = report
    one = rep.sbert_method(("softmax-entity",), 3, 3)
    assert "1 variant in this profile, for 3 epochs" in one and "SBERT softmax-entity" in one
    assert "CosineSimilarityLoss" not in one and "dummy" not in one  # nothing that did not run
    both = rep.sbert_method(("softmax-entity", "cosine-anchors"), 2, 3)
    assert "2 variants in this profile, each for 2 epochs" in both and "CosineSimilarityLoss" in both
    assert "cross-fitted" in both
    assert "no variant is fine-tuned" in rep.sbert_method((), 3, 3)
    assert set(rep.VARIANT_TEXT) == set(rep.VARIANTS)  # every variant the library defines can be described
