import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from lib import model as hm
from lib import sbert
from lib.backbones import build_tiny_random
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
    df = pd.DataFrame({"sentence": [SENT, SENT], "entity": ["Путин", "Москву"], "start": [39, 54], "end": [44, 60], "label": [1, -1]})
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
    want = tok.tokenize(SENT[:a]) + [sbert.MARKERS[0]] + tok.tokenize(SENT[a:b]) + [sbert.MARKERS[1]] + tok.tokenize(SENT[b:])
    assert got == want
    assert tok.tokenize(sbert.DUMMY) == [sbert.DUMMY]


def test_added_token_vectors_are_distinct_and_frozen_like_the_cross_encoder(backbone):
    model = sbert.build(backbone, TrainConfig(backbone=backbone, freeze_embeddings=True))
    tok, emb = model[0].tokenizer, model[0].auto_model.get_input_embeddings().weight
    ids = tok.convert_tokens_to_ids([*sbert.MARKERS, sbert.DUMMY])
    # as far from each other as two ordinary tokens typically are (mean-resizing makes them ~equal)
    assert torch.pdist(emb[ids]).min() > 0.5 * torch.pdist(emb[10:60]).median()
    assert not emb.requires_grad
    assert sbert.build(backbone, TrainConfig(backbone=backbone)).get_submodule("0").auto_model.get_input_embeddings().weight.requires_grad


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
