import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from lib import attention as A
from lib import model as hm
from lib.backbones import build_tiny_random, corpus_words, word_tokenizer
from lib.config import TrainConfig
from lib.data import load_split
from lib.train import collate

# the target "Путин" is the second occurrence; "ужасный" and "провал" are lexicon words
SENT = "Путин встретился с Путиным, а Путин назвал ужасный провал ошибкой."
START = SENT.index("Путин", 10 + SENT.index("Путиным"))
SPAN = (START, START + 5)
LEXICON = {"ужасный", "провал"}
OTHERS = ["Москва похвалила отличный проект.", "Мэр сказал, что встреча прошла."]
FAMILIES = ("wordpiece", "word")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    sents = list(load_split("train", max_rows=200)["sentence"]) + [SENT, *OTHERS]
    root = tmp_path_factory.mktemp("attn")
    build_tiny_random(sents, root / "wordpiece", vocab_size=600)
    # a navec-bert-like word-level backbone without the navec download: random vectors, 3 heads
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(corpus_words(sents))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=48, pad_token_id=0)
    BertModel(cfg).save_pretrained(root / "word")
    word_tokenizer(vocab).save_pretrained(root / "word")
    return {f: str(root / f) for f in FAMILIES}


def load(path, **kw):
    model, tok = hm.build(path, TrainConfig(backbone=path, msd_k=2), **kw)
    return model.eval(), tok


def frame(rows):
    return pd.DataFrame(rows, columns=["sentence", "start", "end", "label"])


# --- lexicon ------------------------------------------------------------------------------------


def test_context_words_skip_the_entity_span_and_non_words():
    assert A.context_words(SENT, *SPAN) == ["путин", "встретился", "с", "путиным", "а", "назвал", "ужасный", "провал", "ошибкой"]
    assert "путин" not in A.context_words("Путин, 2024!", 0, 5)


def test_lexicon_ranks_polar_words_against_neutral_on_a_synthetic_corpus():
    rows = []
    for i in range(10):
        rows.append((f"Иванов ужасный провал {i} сказал", 0, 6, -1))  # entity "Иванов" only in polar rows
        rows.append((f"Иванов отличный успех сказал", 0, 6, 1))
        rows.append((f"Иванов сказал встреча", 0, 6, 0))
        rows.append((f"Иванов сказал совещание", 0, 6, 0))
    rows.append(("Иванов редкий сказал", 0, 6, -1))  # seen once: below min_count
    lex = A.sentiment_lexicon(frame(rows), k=2, min_count=3)
    neg, pos = lex[lex["label"] == -1], lex[lex["label"] == 1]
    assert set(neg["word"]) == {"ужасный", "провал"} and set(pos["word"]) == {"отличный", "успех"}
    # neutral and shared words, the entity, numbers and rare words never enter
    assert not {"сказал", "встреча", "иванов", "редкий"} & set(lex["word"])
    assert (lex["log_odds"] > 0).all() and (lex["count"] >= 3).all()
    assert neg["z"].is_monotonic_decreasing
    # smoothed: frequent and consistent beats rare, at equal exclusivity
    rows2 = rows + [(f"Петров частый {i}", 0, 6, -1) for i in range(30)]
    top = A.sentiment_lexicon(frame(rows2), k=1)
    assert top[top["label"] == -1]["word"].item() == "частый"


# --- token groups -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_come_from_the_model_entity_mask(backbones, family):
    _, tok = load(backbones[family])
    df = frame([(SENT, *SPAN, -1), (OTHERS[0], 0, 6, 1)])
    exs = A.encode_groups(tok, df, 128, LEXICON)
    same = hm.encode(tok, df["sentence"], df["start"], df["end"], 128)
    for ex, ref in zip(exs, same):
        assert ex["input_ids"] == ref["input_ids"]
        assert [int(g == 0) for g in ex["groups"]] == ref["entity_mask"]  # entity group == model's mask
        assert len(ex["groups"]) == len(ex["input_ids"]) and set(ex["groups"]) <= {0, 1, 2, 3}
        assert ex["groups"][0] == ex["groups"][-1] == 1  # [CLS] ... [SEP]
    # every other token: lexicon word where its first character lies in "ужасный" or "провал", else other;
    # the first "Путин" is the same word as the entity but not the span, so it is "other"
    lex_chars = {c for w in LEXICON for c in range(SENT.index(w), SENT.index(w) + len(w))}
    enc = tok(SENT, return_offsets_mapping=True, return_special_tokens_mask=True)
    want = [0 if m else 1 if sp else 2 if a in lex_chars else 3 for (a, _), m, sp in zip(enc["offset_mapping"], same[0]["entity_mask"], enc["special_tokens_mask"])]
    assert exs[0]["groups"] == want
    assert want.count(2) >= 2 and want[1] == 3 and want.count(0) >= 1


def test_groups_follow_the_window_of_long_sentences(backbones):
    _, tok = load(backbones["wordpiece"])
    long = " ".join(["провал"] * 100) + " Путин " + " ".join(["встреча"] * 100)
    a = long.index("Путин")
    (ex,) = A.encode_groups(tok, frame([(long, a, a + 5, 0)]), 32, LEXICON)
    (ref,) = hm.encode(tok, [long], [a], [a + 5], 32)
    assert ex["input_ids"] == ref["input_ids"] and len(ex["groups"]) == 32
    assert [int(g == 0) for g in ex["groups"]] == ref["entity_mask"]
    assert 2 in ex["groups"] and 3 in ex["groups"]  # both sides of the entity survive the window


# --- masses -------------------------------------------------------------------------------------


def test_group_masses_on_a_hand_made_attention_map():
    # one row, 4 real tokens + 1 pad: [CLS] ent sent [SEP] <pad>; 1 layer, 1 head
    att = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0], [0.5, 0.1, 0.1, 0.3, 0.0]] + [[0.2] * 4 + [0.0]] * 3).reshape(1, 1, 1, 5, 5)
    groups = torch.tensor([[1, 0, 2, 1, -1]])
    ent = torch.tensor([[0, 1, 0, 0, 0]])
    m = A.group_masses(att, groups, ent)[0, 0, 0]
    assert torch.allclose(m[0], torch.tensor([0.2, 0.5, 0.3, 0.0]))  # from [CLS]
    assert torch.allclose(m[1], torch.tensor([0.1, 0.8, 0.1, 0.0]))  # from the entity token


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["unmasked", "masked"])
def test_masses_sum_to_one_per_query_over_a_padded_batch(backbones, family, mode):
    model, tok = load(backbones[family], attn_implementation="eager")
    df = frame([(SENT, *SPAN, -1), (OTHERS[0], 0, 6, 1), (OTHERS[1], 0, 3, 0)])
    exs = A.encode_groups(tok, df, 128, LEXICON)
    x = A.collate_groups(exs, tok.pad_token_id)
    assert (x["groups"] == A.PAD_GROUP).any()  # the batch really is padded
    with torch.no_grad():
        _, att = A.forward_attentions(model, x, mode)
    cfg = model.encoder.config
    assert att.shape == (3, cfg.num_hidden_layers, cfg.num_attention_heads, x["input_ids"].shape[1], x["input_ids"].shape[1])
    m = A.group_masses(att, x["groups"], x["entity_mask"])
    assert m.shape == (3, cfg.num_hidden_layers, cfg.num_attention_heads, 2, 4)
    assert torch.allclose(m.sum(-1), torch.ones(m.shape[:-1]), atol=1e-5)
    assert (m >= 0).all() and (m[..., 0] > 0).all()


def test_sdpa_model_is_refused_rather_than_giving_empty_attention(backbones):
    model, tok = load(backbones["wordpiece"], attn_implementation="sdpa")
    x = collate(hm.encode(tok, [SENT], [SPAN[0]], [SPAN[1]]), tok.pad_token_id)
    with pytest.raises(RuntimeError, match="eager"):
        A.forward_attentions(model, x, "unmasked")
    with pytest.raises(ValueError):
        A.forward_attentions(model, x, "hamam")


# --- attribution and the whole pass --------------------------------------------------------------


@pytest.mark.parametrize("freeze", [False, True])
def test_input_x_gradient_is_per_row_and_zero_on_padding(backbones, freeze):
    path = backbones["word"]
    model, tok = hm.build(path, TrainConfig(backbone=path, msd_k=2, freeze_embeddings=freeze), attn_implementation="eager")
    model.eval()
    exs = hm.encode(tok, [SENT, OTHERS[1]], [SPAN[0], 0], [SPAN[1], 3])
    x = collate(exs, tok.pad_token_id)
    attr, logits, _ = A.input_x_gradient(model, x, "masked")
    assert attr.shape == x["input_ids"].shape and (attr[x["attention_mask"] == 0] == 0).all() and (attr.sum(1) > 0).all()
    alone, _, _ = A.input_x_gradient(model, collate(exs[1:], tok.pad_token_id), "masked")
    n = len(exs[1]["input_ids"])
    assert torch.allclose(attr[1, :n], alone[0], rtol=1e-4, atol=1e-7)  # the batch does not mix rows
    # by hand for row 1: d(pred logit)/d(embedding output) . embedding output
    emb = model.encoder.get_input_embeddings()(hm.mask_entity(x["input_ids"][1:2, :n], x["entity_mask"][1:2, :n], tok.mask_token_id)).detach().requires_grad_()
    h = model.encoder.get_input_embeddings().register_forward_hook(lambda *_: emb)
    out = model(x["input_ids"][1:2, :n], x["attention_mask"][1:2, :n], x["entity_mask"][1:2, :n], mode="masked")
    h.remove()
    out[0, out[0].argmax()].backward()
    assert torch.allclose((emb * emb.grad).sum(-1).abs()[0], alone[0], rtol=1e-4, atol=1e-7)
    assert torch.allclose(logits, model(**x, mode="masked").detach(), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_analyse_shapes_and_shares(backbones, family):
    model, tok = load(backbones[family], attn_implementation="eager")
    df = frame([(SENT, *SPAN, -1), (OTHERS[0], 0, 6, 1), (OTHERS[1], 0, 3, 0)] * 3)
    exs = A.encode_groups(tok, df, 128, LEXICON)
    r = A.analyse(model, exs, tok.pad_token_id, "unmasked", batch_size=4)
    cfg = model.encoder.config
    assert r["masses"].shape == (9, cfg.num_hidden_layers, cfg.num_attention_heads, 2, 4)
    for key in ("attribution", "tokens"):
        assert r[key].shape == (9, 4) and np.allclose(r[key].sum(1), 1, atol=1e-5)
    assert np.allclose(r["masses"].sum(-1), 1, atol=1e-5)
    assert np.allclose(r["masses"][:3], r["masses"][3:6], atol=1e-5)  # independent of batch placement
    assert r["spearman"].shape == (9, 2) and np.nanmax(np.abs(r["spearman"])) <= 1
    x = collate(exs, tok.pad_token_id)
    with torch.no_grad():
        want = np.asarray(hm.LABELS)[model(**x, mode="unmasked").argmax(-1).numpy()]
    assert (r["pred"] == want).all()
    # token shares: SENT has 2 specials out of its tokens
    n = len(exs[0]["input_ids"])
    assert r["tokens"][0, 1] == pytest.approx(2 / n)
    tab = A.masses_frame({("initial", "unmasked"): r})
    assert len(tab) == cfg.num_hidden_layers * cfg.num_attention_heads * 2 * 4
    assert np.allclose(tab.groupby(["layer", "head", "query"])["mass"].sum(), 1, atol=1e-5)


def test_example_view_feeds_bertviz(backbones):
    from bertviz import head_view, model_view

    model, tok = load(backbones["wordpiece"], attn_implementation="eager")
    (ex,) = hm.encode(tok, [SENT], [SPAN[0]], [SPAN[1]])
    att, tokens = A.example_view(model, tok, ex, "masked", decimals=2)
    cfg = model.encoder.config
    assert len(att) == cfg.num_hidden_layers and att[0].shape == (1, cfg.num_attention_heads, len(tokens), len(tokens))
    assert [t == tok.mask_token for t in tokens] == [bool(m) for m in ex["entity_mask"]]
    assert att[0].dtype == torch.float64 and torch.equal(att[0], torch.round(att[0], decimals=2))
    raw, _ = A.example_view(model, tok, ex, "masked")
    assert torch.allclose(raw[-1].sum(-1), torch.ones(1, cfg.num_attention_heads, len(tokens)), atol=1e-5)
    assert torch.allclose(raw[-1].double(), att[-1], atol=0.0051)
    assert "bertviz" in head_view(att, tokens, html_action="return").data
    assert "bertviz" in model_view(att, tokens, html_action="return").data


def test_pick_examples_prefers_readable_correct_confident_rows():
    df = pd.DataFrame({
        "sentence": ["a b", "Путин и Путин", "x", "y", "z", "w"],
        "entity": ["a", "Путин", "x", "y", "z", "w"],
        "label": [-1, 0, -1, 1, 0, -1],
    })
    n_tokens = [20, 20, 20, 20, 20, 200]
    pred = [-1, 0, -1, 1, 0, -1]
    score = [0.5, 0.9, 0.8, 0.7, 0.6, 0.99]
    got = A.pick_examples(df, n_tokens, pred, score)
    # row 1 is the only repeated entity, so it is not spent on "neutral"; row 5 is confident but too long
    assert got == {"negative": 2, "positive": 3, "neutral": 4, "repeated entity": 1}
    assert list(got) == ["negative", "positive", "neutral", "repeated entity"]
    # a wrong prediction is used only when no correct one exists
    # boilerplate repeating its words is not readable: the other repeated-entity row wins despite its score
    df3 = pd.concat([df, pd.DataFrame({"sentence": ["Фото: Reuters Фото: Reuters Фото: Reuters"], "entity": ["Reuters"], "label": [0]})], ignore_index=True)
    got3 = A.pick_examples(df3, n_tokens + [20], pred + [0], score + [1.0])
    assert got3["repeated entity"] == 1
    got2 = A.pick_examples(df, n_tokens, [-1, 0, 1, 1, 0, -1], score)  # row 2 now wrong
    assert got2["negative"] == 0
