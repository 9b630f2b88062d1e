import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from lib import model as hm
from lib.backbones import build_tiny_random, corpus_words, word_tokenizer
from lib.chapters.ch06 import attention as A
from lib.chapters.ch06 import report as R
from lib.config import TrainConfig
from lib.data import load_split
from lib.training import collate

# the target "Путин" is the second occurrence; "ужасный" and "провал" are lexicon words
SENT = "Путин встретился с Путиным, а Путин назвал ужасный провал ошибкой."
START = SENT.index("Путин", 10 + SENT.index("Путиным"))
SPAN = (START, START + 5)
LEXICON = {"ужасный", "провал"}
OTHERS = ["Москва похвалила отличный проект.", "Мэр сказал, что встреча прошла."]
FAMILIES = ("wordpiece", "word", "unigram")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    sents = list(load_split("train", max_rows=200)["sentence"]) + [SENT, *OTHERS]
    root = tmp_path_factory.mktemp("attn")
    build_tiny_random(sents, root / "wordpiece", vocab_size=600)
    # a navec-bert-like word-level backbone without the navec download: random vectors, 3 heads
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(corpus_words(sents))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=48,
        pad_token_id=0,
    )
    BertModel(cfg).save_pretrained(root / "word")
    word_tokenizer(vocab).save_pretrained(root / "word")
    # an e5-like XLM-R backbone: sentencepiece unigram pieces, <s> </s> <mask>, offsets that start at the space
    # before a word
    build_unigram_xlmr(sents, root / "unigram")
    return {f: str(root / f) for f in FAMILIES}


def build_unigram_xlmr(sentences, out_dir, vocab_size=400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        sentences, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    )
    ids = tok.get_vocab()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(
        vocab_size=len(ids),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        pad_token_id=ids["<pad>"],
        max_position_embeddings=300,
    )
    XLMRobertaModel(cfg).save_pretrained(out_dir)
    fast.save_pretrained(out_dir)


def load(path, **kw):
    model, tok = hm.build(path, TrainConfig(backbone=path, msd_k=2), **kw)
    return model.eval(), tok


def frame(rows):
    return pd.DataFrame(rows, columns=["sentence", "start", "end", "label"])


# --- lexicon ------------------------------------------------------------------------------------


def test_context_words_keep_lowercase_words_outside_the_entity_span():
    # "Путин"/"Путиным" (capitalised), "с", "а" (short) and the span drop out; the rest is lowercased, once each
    assert A.context_words(SENT, *SPAN) == {"встретился", "назвал", "ужасный", "провал", "ошибкой"}
    assert A.context_words("путин сказал 2024 г. из-за ковид-19", 0, 5) == {"сказал", "из-за"}
    # a sentence-initial word counts only where it is written in lower case
    assert A.context_words("Ужасный провал, а провал ужасный", 100, 101) == {"провал", "ужасный"}
    assert A.context_words("Ужасный провал", 100, 101) == {"провал"}
    # with part-of-speech tags (by token start), only content words: nouns, adjectives, verbs, adverbs
    tags = {0: "NOUN", 7: "ADP", 11: "ADJ"}
    assert A.context_words("провал для всех", 100, 101, tags) == {"провал", "всех"}


def test_pos_tags_mark_content_and_function_words():
    s = "Иванов получил отличный приз для команды."
    tags = A.pos_tags([s, s])[s]
    at = {w: tags[s.index(w)] for w in ("получил", "отличный", "приз", "для")}
    assert at == {"получил": "VERB", "отличный": "ADJ", "приз": "NOUN", "для": "ADP"}


def lexicon_frame(n=20):
    """n sentences per label; two neutral ones also use the polar words (so their z is finite)."""
    rows = []
    for i in range(n):
        year = f"в {2000 + i} году"
        # positive: lowercase polar words, a preposition, a proper name and a lowercase entity (the span)
        rows.append((f"правительство получило отличный приз для команды от Samsung {year}.", 0, 13, 1))
        neg = f"Иванов и Петров получили ужасный провал {year}."
        rows += [(neg, 0, 6, -1), (neg, neg.index("Петров"), neg.index("Петров") + 6, -1)]  # 2 rows, 1 sentence
        extra = "отличный приз для команды и ужасный провал" if i < 2 else "письмо"
        rows.append((f"Иванов получил {extra} {year}.", 0, 6, 0))
    return frame(rows)


def test_lexicon_keeps_lowercase_polar_words_and_drops_names_entities_and_function_words():
    lex = A.sentiment_lexicon(lexicon_frame(), min_count=3)
    words = dict(zip(lex["word"], lex["label"]))
    assert {w: words.get(w) for w in ("отличный", "приз", "команды", "ужасный", "провал")} == {
        "отличный": 1,
        "приз": 1,
        "команды": 1,
        "ужасный": -1,
        "провал": -1,
    }
    assert "samsung" not in words  # a proper name: always capitalised, though always in positive rows
    assert "правительство" not in words  # only ever the entity span of positive rows
    assert "для" not in words  # a preposition: not a content word
    assert not {"году", "иванов", "петров"} & set(words)  # in every label's rows, or names
    row = lex.set_index("word").loc["ужасный"]
    assert (row["count"], row["neutral_count"]) == (20, 2)  # a sentence counts a word once per label
    assert (lex["z"] > 1.96).all() and (lex["count"] >= 3).all() and (lex["log_odds"] > 0).all()
    assert lex[lex["label"] == 1]["z"].is_monotonic_decreasing and list(lex["label"]) == sorted(lex["label"])
    assert lex.attrs["tested"][1] >= 5
    # without the part-of-speech filter the preposition gets in; names and the entity span still do not
    loose = set(A.sentiment_lexicon(lexicon_frame(), min_count=3, content_only=False)["word"])
    assert "для" in loose and not {"samsung", "правительство"} & loose
    # too few sentences, or not significant: out
    assert A.sentiment_lexicon(lexicon_frame(), min_count=21).empty
    strict = A.sentiment_lexicon(lexicon_frame(), min_count=3, z_min=50)
    assert strict.empty and list(strict.columns) == ["word", "label", "count", "neutral_count", "log_odds", "z"]


def test_lexicon_prior_lets_frequent_consistent_words_outrank_rare_exclusive_ones():
    rows = [(f"Иванов частый {i} раз сказал", 0, 6, -1) for i in range(30)]
    rows += [(f"Иванов редкий {i} раз", 0, 6, -1) for i in range(3)]
    rows += [(f"Иванов частый сказал {i} раз", 0, 6, 0) for i in range(3)]
    rows += [(f"Иванов сказал {i} раз", 0, 6, 0) for i in range(40)]
    lex = A.sentiment_lexicon(frame(rows), min_count=3, content_only=False)
    neg = lex[lex["label"] == -1]
    assert neg["word"].iloc[0] == "частый"  # 30 of 33 vs 3 of 43 outranks 3 of 3 vs 0 of 43


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
    # (a sentencepiece token's offsets start at the space before its word: its first non-space character counts)
    lex_chars = {c for w in LEXICON for c in range(SENT.index(w), SENT.index(w) + len(w))}
    enc = tok(SENT, return_offsets_mapping=True, return_special_tokens_mask=True)
    first = [a + (len(SENT[a:b]) - len(SENT[a:b].lstrip())) for a, b in enc["offset_mapping"]]
    want = [
        0 if m else 1 if sp else 2 if a in lex_chars else 3
        for a, m, sp in zip(first, same[0]["entity_mask"], enc["special_tokens_mask"])
    ]
    assert exs[0]["groups"] == want
    assert want.count(2) >= 2 and want[1] == 3 and want.count(0) >= 1
    if family == "unigram":  # the case the first-non-space rule is for
        assert any(SENT[a] == " " for a, _ in enc["offset_mapping"][1:-1])


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
    att = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0], [0.5, 0.1, 0.1, 0.3, 0.0]] + [[0.2] * 4 + [0.0]] * 3).reshape(
        1, 1, 1, 5, 5
    )
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
    assert att.shape == (
        3,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        x["input_ids"].shape[1],
        x["input_ids"].shape[1],
    )
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
    model, tok = hm.build(
        path, TrainConfig(backbone=path, msd_k=2, freeze_embeddings=freeze), attn_implementation="eager"
    )
    model.eval()
    exs = hm.encode(tok, [SENT, OTHERS[1]], [SPAN[0], 0], [SPAN[1], 3])
    x = collate(exs, tok.pad_token_id)
    attr, logits, _ = A.input_x_gradient(model, x, "masked")
    assert (
        attr.shape == x["input_ids"].shape and (attr[x["attention_mask"] == 0] == 0).all() and (attr.sum(1) > 0).all()
    )
    alone, _, _ = A.input_x_gradient(model, collate(exs[1:], tok.pad_token_id), "masked")
    n = len(exs[1]["input_ids"])
    assert torch.allclose(attr[1, :n], alone[0], rtol=1e-4, atol=1e-7)  # the batch does not mix rows
    # by hand for row 1: d(pred logit)/d(embedding output) . embedding output
    emb = (
        model.encoder.get_input_embeddings()(
            hm.mask_entity(x["input_ids"][1:2, :n], x["entity_mask"][1:2, :n], tok.mask_token_id)
        )
        .detach()
        .requires_grad_()
    )
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
    att, tokens = R.example_view(model, tok, ex, "masked", decimals=2)
    cfg = model.encoder.config
    assert len(att) == cfg.num_hidden_layers and att[0].shape == (1, cfg.num_attention_heads, len(tokens), len(tokens))
    marked = f"⟦{tok.mask_token}⟧"  # the masked entity, in double brackets: bertviz highlights no token itself
    assert [t == marked for t in tokens] == [bool(m) for m in ex["entity_mask"]]
    assert att[0].dtype == torch.float64 and torch.equal(att[0], torch.round(att[0], decimals=2))
    raw, _ = R.example_view(model, tok, ex, "masked")
    assert torch.allclose(raw[-1].sum(-1), torch.ones(1, cfg.num_attention_heads, len(tokens)), atol=1e-5)
    assert torch.allclose(raw[-1].double(), att[-1], atol=0.0051)
    assert "bertviz" in head_view(att, tokens, html_action="return").data
    assert "bertviz" in model_view(att, tokens, html_action="return").data


def spans(sentences, entities):
    """A frame with the first occurrence of each entity as the span."""
    starts = [s.index(e) for s, e in zip(sentences, entities)]
    return pd.DataFrame({"sentence": sentences, "entity": entities, "start": starts})


def test_pick_examples_prefers_readable_correct_confident_rows():
    sents = ["a b", "Путин и Путин", "Путин и путин", "Путин и Путинский", "x", "y", "z", "w"]
    df = spans(sents, ["a", "Путин", "Путин", "Путин", "x", "y", "z", "w"])
    df = df.assign(end=df["start"] + df["entity"].str.len(), label=[-1, 0, 0, 0, -1, 1, 0, -1])
    n_tokens = [20, 20, 20, 20, 20, 20, 20, 200]
    pred = [-1, 0, 0, 0, -1, 1, 0, -1]
    score = [0.5, 0.8, 0.95, 0.95, 0.8, 0.7, 0.6, 0.99]
    got = R.pick_examples(df, n_tokens, pred, score)
    # the study's "repeated" (lib.folds.subset_mask: whole word, case-sensitive) is row 1 only, though rows
    # 2 and 3 are more confident; it is not spent on "neutral"; row 7 is confident but too long
    assert got == {"negative": 4, "positive": 5, "neutral": 2, "repeated entity": 1}
    assert list(got) == ["negative", "positive", "neutral", "repeated entity"]
    # boilerplate repeating its words is not readable: the other repeated-entity row wins despite its score
    boiler = "Фото: Reuters Фото: Reuters Фото: Reuters"
    extra = spans([boiler], ["Reuters"]).assign(end=13, label=0)
    df3 = pd.concat([df, extra], ignore_index=True)
    assert R.pick_examples(df3, n_tokens + [20], pred + [0], score + [1.0])["repeated entity"] == 1
    # a wrong prediction is used only when no correct one exists
    got2 = R.pick_examples(df, n_tokens, [-1, 0, 0, 0, 1, 1, 0, -1], score)  # row 4 now wrong
    assert got2["negative"] == 0
    # no repeated-entity row of readable length: the shortest one, not the most confident long one
    varied = [" ".join(f"слово{i}" for i in range(n)) for n in (60, 20)]  # real sentences: words seldom repeat
    long_rep = spans([f"Путин и Путин {v}" for v in varied], ["Путин", "Путин"]).assign(end=5, label=0)
    df4 = pd.concat([df.drop(index=1), long_rep], ignore_index=True)
    got4 = R.pick_examples(df4, [20] * 7 + [120, 45], [-1, 0, 0, -1, 1, 0, -1, 0, 0], [0.5] * 7 + [0.99, 0.6])
    assert got4["repeated entity"] == 8
    # ... and never boilerplate that repeats its words, however short
    df5 = pd.concat([df4, extra], ignore_index=True)
    pred5 = [-1, 0, 0, -1, 1, 0, -1, 0, 0, 0]
    got5 = R.pick_examples(df5, [20] * 7 + [120, 45, 8], pred5, [0.5] * 7 + [0.99, 0.6, 0.9])
    assert got5["repeated entity"] == 8


# --- the scan, its summaries and the answer -------------------------------------------------------


def fake_scan(n=40, layers=4, heads=3, freeze=2, seed=0):
    """A Scan over made-up masses: frozen layers identical in both models, as fine-tuning leaves them."""
    rng = np.random.default_rng(seed)
    results = {}
    for m, mode in A.CONDITIONS:
        tuned = m == "fine-tuned"
        results[m, mode] = {
            "masses": rng.dirichlet(np.ones(4), size=(n, layers, heads, 2)),
            "attribution": rng.dirichlet(np.ones(4), size=n) if tuned else np.full((n, 4), np.nan),
            "tokens": rng.dirichlet(np.ones(4) * 5, size=n),
            "spearman": rng.uniform(-1, 1, (n, 2)) if tuned else np.full((n, 2), np.nan),
            "pred": rng.choice([-1, 0, 1], n),
        }
    for m, mode in A.CONDITIONS:  # token shares depend on the row only
        results[m, mode]["tokens"] = results["initial", "unmasked"]["tokens"]
        if m == "fine-tuned":
            results[m, mode]["masses"][:, :freeze] = results["initial", mode]["masses"][:, :freeze]
    rows = pd.DataFrame({"sentence": [f"s{i // 2}" for i in range(n)], "label": np.resize([-1, 0, 1], n)})
    return A.Scan(results, rows, freeze)


def test_scan_indexes_layers_and_heads_from_one():
    scan = fake_scan()
    assert scan.shape == (4, 3) and scan.frozen == [1, 2] and scan.trained == [3, 4]
    t = scan.table
    assert sorted(t["layer"].unique()) == [1, 2, 3, 4] and sorted(t["head"].unique()) == [1, 2, 3]
    m = scan.results["fine-tuned", "masked"]["masses"]
    g = scan.grid("fine-tuned", "masked", "entity", "sentiment")
    assert list(g.index) == [1, 2, 3, 4] and list(g.columns) == [1, 2, 3]
    assert g.loc[3, 2] == pytest.approx(m[:, 2, 1, 1, 2].mean())  # layer 3, head 2, query entity, group sentiment
    # row_mass: mean over the chosen layers and all heads; a tuple of groups is summed
    assert np.allclose(scan.row_mass("fine-tuned", "masked", "cls", "other", [3, 4]), m[:, 2:4, :, 0, 3].mean((1, 2)))
    assert np.allclose(scan.row_mass("fine-tuned", "masked", "cls", A.CONTEXT), m[:, :, :, 0, 2:].sum(-1).mean((1, 2)))
    assert np.allclose(scan.row_mass("initial", "unmasked", "entity", A.GROUPS), 1)
    prof = scan.layer_profile()
    assert len(prof) == 4 * 2 * 4 * 4
    assert np.allclose(prof.groupby(["model", "mode", "query", "layer"])["mass"].sum(), 1)


def test_head_gain_and_difference_panels():
    scan = fake_scan()
    scan.results["fine-tuned", "unmasked"]["masses"][:, 3, 0, 1] = [
        0.0,
        0.0,
        1.0,
        0.0,
    ]  # layer 4 head 1: all on sentiment
    scan = A.Scan(scan.results, scan.rows, scan.freeze)
    h = A.head_gain(scan, "entity", "sentiment")
    assert (h["layer"], h["head"], h["after"]) == (4, 1, 1.0) and h["n"] == 2 * 3
    assert h["gain"] == pytest.approx(1.0 - scan.grid("initial", "unmasked", "entity", "sentiment").loc[4, 1])
    tune = R.diff_panels(scan, "finetuning")
    assert len(tune) == 2 * 2 * 4
    d = tune["from entity · unmasked", "→ corpus-assoc. words"]
    assert (d.loc[[1, 2]] == 0).all().all() and d.loc[4, 1] == pytest.approx(h["gain"])  # frozen layers do not move
    mask = R.diff_panels(scan, "masking")["from [CLS] · initial", "→ entity"]
    assert np.allclose(
        mask, scan.grid("initial", "masked", "cls", "entity") - scan.grid("initial", "unmasked", "cls", "entity")
    )
    with pytest.raises(ValueError):
        R.diff_panels(scan, "other")
    panels = R.mass_panels(scan, "cls")
    assert list(dict.fromkeys(r for r, _ in panels)) == [f"{m} · {c}" for m, c in A.CONDITIONS]


def test_cluster_mean_resamples_whole_sentences():
    rng = np.random.default_rng(1)
    values = rng.normal(size=30)
    one = A.cluster_mean(values, np.arange(30), n=200)
    two = A.cluster_mean(np.repeat(values, 2), np.repeat(np.arange(30), 2), n=200)  # each sentence twice
    assert one == pytest.approx(two)  # a cluster of identical rows counts once, as a row would
    assert one[1] < one[0] < one[2]
    assert A.cluster_mean(np.full(10, 0.3), np.arange(10), n=50) == pytest.approx([0.3, 0.3, 0.3])


def test_headline_and_answer_on_a_made_up_scan():
    scan = fake_scan()
    nums = A.headline(scan, n_boot=50)
    assert nums["06.frozen_layers.max_abs_change"] == [0.0]
    for k, v in nums.items():
        assert k.startswith("06.") and len(v) in ((1, 2) if k.endswith("_at") else (1, 3)) and all(np.isfinite(v))
        if len(v) == 3:
            assert v[1] <= v[0] <= v[2]
    g = A.head_gain(scan, "entity", "sentiment", "masked")  # head level: what the answer cites, in results.json
    assert nums["06.heads.entity_to_sentiment.masked.largest_gain_at"] == [g["layer"], g["head"]]
    assert nums["06.heads.entity_to_sentiment.masked.largest_change"] == [g["abs_change"]]
    assert nums["06.heads.cls_to_entity.gaining"][0] <= nums["06.heads.cls_to_entity.of"][0] == g["n"]
    a = scan.row_mass("initial", "unmasked", "entity", "sentiment", [3, 4])
    b = scan.row_mass("fine-tuned", "unmasked", "entity", "sentiment", [3, 4])
    assert nums["06.entity_to_sentiment.trained_layers.finetuned_minus_initial"][0] == pytest.approx((b - a).mean())
    assert nums["06.attribution.entity_share.finetuned"][0] == pytest.approx(
        scan.results["fine-tuned", "unmasked"]["attribution"][:, 0].mean()
    )
    text = R.answer(scan, nums, profile="cpu", backbone="e5-small", lexicon_size=7)
    assert "layers 1–2 frozen" in text and "trained layers 3–4" in text and "7 corpus-associated words" in text
    h = A.head_gain(scan, "entity", "sentiment")
    assert f"the largest gain of the {h['n']}, layer {h['layer']} head {h['head']}" in text  # a selected maximum
    assert f"the largest change in either direction, layer {h['abs_layer']} head {h['abs_head']}" in text
    assert abs(h["abs_change"]) >= abs(h["gain"])  # the largest |change| is at least the largest gain
    assert "**Does our model do what the reference inspection reported" in text and "corpus-associated" in text
    # it points at committed files only, never at the git-ignored runs/ folder
    assert "`figures/06_layer_head_masses.csv`" in text and "`reports/06_attention.html`" in text
    assert "runs/" not in text
    assert "nan" not in text.lower() and "Smoke profile" not in text
    assert f"{nums['06.entity_to_sentiment.trained_layers.finetuned_minus_initial'][0]:+.3f}" in text
    # nothing frozen, no attribution (initial-only scans): the text adapts instead of failing
    free = fake_scan(freeze=0)
    for mode in A.COPIES:
        free.results["fine-tuned", mode]["attribution"][:] = np.nan
    nums0 = A.headline(free, n_boot=20)
    assert "06.frozen_layers.max_abs_change" not in nums0 and "06.attribution.entity_share.finetuned" not in nums0
    text0 = R.answer(free, nums0, profile="smoke", backbone="tiny", lexicon_size=3)
    assert (
        "All layers were fine-tuned" in text0 and "Smoke profile" in text0 and "Attention vs attribution" not in text0
    )


def test_tables_from_a_scan():
    scan = fake_scan()
    bl = A.sentiment_by_label(scan)
    labels = scan.rows["label"].to_numpy()
    tokens = scan.results["initial", "unmasked"]["tokens"][:, 2]
    assert bl.loc[("uniform attention", "", "(token share)"), "neutral"] == pytest.approx(tokens[labels == 0].mean())
    last = scan.results["fine-tuned", "masked"]["masses"][:, -1, :, 1, 2].mean(1)
    assert bl.loc[("fine-tuned", "masked", "entity"), "positive"] == pytest.approx(last[labels == 1].mean())
    ag = A.agreement(scan).reset_index()
    assert ag[ag["model"] == "initial"]["input × gradient"].isna().all()
    assert np.allclose(ag[(ag["model"] == "fine-tuned") & (ag["mode"] == "masked")]["input × gradient"].sum(), 1)
    sp = A.spearman_summary(scan)
    assert set(sp.index.get_level_values("model")) == {"fine-tuned"} and (sp["rows"] == 40).all()
    mm = R.mean_mass_table(scan, scan.trained)
    assert np.allclose(mm.sum(1), 1) and mm.shape == (8, 4)


def test_sample_rows_and_layers_to_show():
    assert list(A.sample_rows(5, None)) == list(range(5)) and list(A.sample_rows(5, 9)) == list(range(5))
    s = A.sample_rows(100, 10)
    assert len(s) == 10 == len(set(s)) and list(s) == sorted(s) and list(A.sample_rows(100, 10)) == list(s)
    assert R.show_layers(12, 6) == [6, 9, 12] and R.show_layers(2, 0) == [1, 2] and R.show_layers(1, 0) == [1]


# --- the pieces that touch a model ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_analyse_without_attribution_gives_the_same_attention(backbones, family):
    model, tok = load(backbones[family], attn_implementation="eager")
    exs = A.encode_groups(tok, frame([(SENT, *SPAN, -1), (OTHERS[0], 0, 6, 1), (OTHERS[1], 0, 3, 0)]), 128, LEXICON)
    full = A.analyse(model, exs, tok.pad_token_id, "masked", batch_size=2)
    cheap = A.analyse(model, exs, tok.pad_token_id, "masked", batch_size=2, attribution=False)
    assert np.allclose(full["masses"], cheap["masses"], atol=1e-6) and (full["pred"] == cheap["pred"]).all()
    assert np.isnan(cheap["attribution"]).all() and np.isnan(cheap["spearman"]).all()


def test_load_models_and_run_scan(backbones, tmp_path):
    path = backbones["word"]
    cfg = TrainConfig(backbone=path, msd_k=2, freeze_layers=1)
    tuned, tok = hm.build(path, cfg)
    with torch.no_grad():  # "fine-tuning" that touches only layers above the frozen one
        for p in tuned.encoder.encoder.layer[1:].parameters():
            p.add_(0.05 * torch.randn_like(p))
    hm.save(tuned, tok, tmp_path / "ckpt")
    models, tok2 = A.load_models(path, tmp_path / "ckpt", cfg)
    assert set(models) == set(A.MODELS) and not any(m.training for m in models.values())
    assert A.encoder_shape(models["initial"]) == (3, 3)
    df = frame([(SENT, *SPAN, -1), (OTHERS[0], 0, 6, 1), (OTHERS[1], 0, 3, 0)] * 2).assign(entity="x")
    exs = A.encode_groups(tok2, df, 128, LEXICON)
    scan = A.run_scan(models, exs, tok2.pad_token_id, df, freeze=1, batch_size=4)
    assert set(scan.results) == set(A.CONDITIONS) and set(scan.seconds) == {f"{m} {c}" for m, c in A.CONDITIONS}
    assert np.isnan(scan.results["initial", "unmasked"]["attribution"]).all()
    assert np.isfinite(scan.results["fine-tuned", "masked"]["attribution"]).all()
    nums = A.headline(scan, n_boot=20)
    assert nums["06.frozen_layers.max_abs_change"][0] < 1e-6  # layer 1 really is the same in both models
    assert abs(nums["06.entity_to_sentiment.trained_layers.finetuned_minus_initial"][0]) > 0
    assert "layers 1–1 frozen" in R.answer(scan, nums, profile="cpu", backbone="word", lexicon_size=2)
    other = tmp_path / "other"
    build_tiny_random(OTHERS * 5, other, vocab_size=60)
    with pytest.raises(ValueError, match="tokenizers differ"):
        A.load_models(other, tmp_path / "ckpt", cfg)


def test_token_table_matches_the_example_view(backbones):
    model, tok = load(backbones["wordpiece"], attn_implementation="eager")
    (ex,) = A.encode_groups(tok, frame([(SENT, *SPAN, -1)]), 128, LEXICON)
    for mode in A.COPIES:
        t = R.token_table(model, tok, ex, mode)
        att, tokens = R.example_view(model, tok, ex, mode)
        plain = [tk[1:-1] if tk.startswith("⟦") else tk for tk in tokens]  # the view brackets the entity
        assert list(t["token"]) == plain and list(t["group"]) == [A.GROUPS[g] for g in ex["groups"]]
        assert np.allclose(t[["attention (entity → token)", "|input × gradient|"]].sum(), 1)
        ent = torch.tensor(ex["entity_mask"], dtype=torch.float32)
        row = (att[-1][0].mean(0) * (ent / ent.sum())[:, None]).sum(0)
        assert np.allclose(t["attention (entity → token)"], (row / row.sum()).numpy(), atol=1e-5)


def test_show_limits_the_embedded_layers(backbones):
    model, tok = load(backbones["word"], attn_implementation="eager")
    (ex,) = hm.encode(tok, [SENT], [SPAN[0]], [SPAN[1]])
    view = R.example_view(model, tok, ex, "unmasked")
    full = R.show(view, "head", html_action="return").data
    one = R.show(view, "head", layers=[3], html_action="return").data
    assert "bertviz" in one and len(one) < len(full)
    assert "bertviz" in R.show(view, "model", layers=[2, 3], html_action="return").data
    with pytest.raises(ValueError):
        R.show(view, "neuron")


# --- figures: readable with 12 layers x 12 heads, no text drawn over other text -------------------------


def drawn_texts(fig):
    """(text, window extent, font size in points) of every drawn, non-empty text of the figure."""
    from matplotlib.text import Text

    drawn, orig = [], Text.draw

    def draw(self, renderer):
        orig(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self.get_text(), self.get_window_extent(renderer), self.get_fontsize()))

    Text.draw = draw
    try:
        fig.canvas.draw()
    finally:
        Text.draw = orig
    return drawn


def overlapping_text(fig, pad=0.5):
    """Pairs of drawn, non-empty texts whose boxes overlap by more than `pad` pixels."""
    drawn = drawn_texts(fig)
    return [
        (ta, tb)
        for i, (ta, a, _) in enumerate(drawn)
        for tb, b, _ in drawn[i + 1 :]
        if a.x0 < b.x1 - pad and b.x0 < a.x1 - pad and a.y0 < b.y1 - pad and b.y0 < a.y1 - pad
    ]


def test_the_overlap_check_sees_overlaps():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.52, 0.5, "another")
    assert overlapping_text(fig) == [("one label", "another")]
    plt.close(fig)


TOKENS = (
    ["<s>", "▁Президент", "▁России", "▁Владимир", "▁Путин", "▁назвал", "▁ужасн", "ым", "▁провал"]
    + [f"▁слово{i}" for i in range(21)]
    + [".", "</s>"]
)
TOKEN_GROUPS = (
    ["special", "other", "other", "other", "entity", "other", "sentiment", "sentiment", "sentiment"]
    + ["other"] * 22
    + ["special"]
)
NAMES = ("negative", "positive", "neutral", "repeated entity")


def fake_view(seed=0):
    """A 12-layer, 12-head attention tuple over TOKENS whose sink tokens take most of the weight."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(12, 1, 12, 32, 32, generator=g)
    logits[..., [0, 31]] += 4.0
    return tuple(torch.softmax(logits, -1)), TOKENS


def chapter_figures(scan, groups=TOKEN_GROUPS):
    """Every figure the chapter draws, as the notebook draws them."""
    from lib.chapters import plots

    table = pd.DataFrame(
        {"token": TOKENS, "group": groups, "attention (entity → token)": 1 / 32, "|input × gradient|": 1 / 32}
    )
    diff = R.diff_panels(scan, "finetuning")
    tiny = {k: v.iloc[:2, :2] * 1e-4 for k, v in R.diff_panels(scan, "masking").items()}
    lex = pd.DataFrame({"word": [f"слово{i}" for i in range(30)], "z": np.linspace(5, 2, 30)})
    return {
        "mass": plots.layer_head_grid(R.mass_panels(scan, "entity"), "Attention mass from the entity tokens", frozen=6),
        "diff": plots.layer_head_grid(diff, "fine-tuned − initial", diverging=True, frozen=6, cbar_label="Δ mass"),
        "tiny diff": plots.layer_head_grid(tiny, "smoke-sized", diverging=True),
        "profile": plots.layer_profile(scan.layer_profile(), 6),
        "lexicon": plots.lexicon_bars({-1: lex.iloc[:15], 1: lex.iloc[15:]}),
        "attribution": plots.attribution_summary(A.agreement(scan), A.spearman_long(scan)),
        "example": R.example_maps({c: fake_view() for c in A.CONDITIONS}, groups, R.show_layers(12, 6), "negative"),
        "heads": R.head_maps(
            {(n, *c): fake_view() for n in NAMES for c in A.CONDITIONS}, {n: groups for n in NAMES}, 9, 4, "Layer 9"
        ),
        "one example's heads": R.head_maps(
            {(NAMES[0], *c): fake_view() for c in A.CONDITIONS}, {NAMES[0]: groups}, 9, 4, "Layer 9"
        ),
        "tokens": R.token_bars({(n, m): table for n in NAMES for m in A.COPIES}),
    }


def test_chapter_figures_are_readable_at_12_layers_by_12_heads():
    import matplotlib.pyplot as plt

    from lib.chapters import plots

    plots.setup()
    for name, fig in chapter_figures(fake_scan(n=30, layers=12, heads=12, freeze=6)).items():
        R.readable(fig)
        texts = drawn_texts(fig)
        assert overlapping_text(fig) == [], name
        small = [(t, size) for t, _, size in texts if size < R.MIN_PT]
        assert not small, (name, small[:5])
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:  # an axes legend sits beside its data, not on it
            if ax.get_legend() is not None:
                leg, box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
                assert leg.x0 >= box.x1 - 1 or leg.x1 <= box.x0 + 1 or leg.y0 >= box.y1 - 1, name
        plt.close(fig)


def test_sink_free_colour_scale():
    att = np.array([[0.9, 0.06, 0.04], [0.7, 0.2, 0.1], [0.5, 0.1, 0.4]])
    assert R.sink_free_vmax(att, ["special", "other", "sentiment"]) == pytest.approx(0.4)
    assert R.sink_free_vmax(att, ["entity", "other", "special"]) == pytest.approx(0.9)
    assert R.sink_free_vmax(att, ["special"] * 3) == pytest.approx(0.9)  # nothing else: the whole map
    assert R.sink_free_vmax(np.zeros((2, 2)), ["other"] * 2) > 0


def test_example_maps_have_a_colour_bar_each_scaled_without_the_sinks():
    import matplotlib.pyplot as plt

    views = {c: fake_view(i) for i, c in enumerate(A.CONDITIONS)}
    fig = R.example_maps(views, TOKEN_GROUPS, [6, 12], "negative")
    maps = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(maps) == len(bars) == 4 * 2
    for ax, (cond, layer) in zip(maps, [(c, layer) for c in A.CONDITIONS for layer in (6, 12)]):
        att = views[cond][0][layer - 1][0].mean(0).numpy()
        im = ax.get_images()[0]
        assert im.norm.vmax == pytest.approx(R.sink_free_vmax(att, TOKEN_GROUPS))
        assert im.norm.vmax < att.max()  # the sinks are clipped
    assert "<s>, </s> left out" in fig.get_suptitle()
    plt.close(fig)


def test_a_long_example_labels_every_few_tokens_and_its_maps_read_cleanly():
    import matplotlib
    import matplotlib.pyplot as plt

    from lib.chapters.figcheck import text_problems
    from lib.chapters.plots import fit_width, setup

    n = 34  # the cpu run's repeated-entity example: 3 maps of 34 labelled tokens would not fit a page
    tokens = ["<s>"] + [f"▁слово{i}" for i in range(n - 2)] + ["</s>"]
    groups = ["special"] + ["entity" if i in (5, 20) else "other" for i in range(n - 2)] + ["special"]
    att = np.random.default_rng(0).dirichlet(np.ones(n), size=n)
    rows = ("a · x", "a · y", "b · x", "b · y")
    cells = {(row, f"layer {k}"): (att, tokens, groups) for row in rows for k in (6, 9, 12)}
    with matplotlib.rc_context():
        setup()
        fig = R.attention_maps(cells, "long", x_labels_every_row=False)
        fit_width(fig)
        assert text_problems(fig) == []
        assert "every 3rd token labelled" in fig.get_suptitle()  # three 2.7-in maps side by side
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert labels[:2] == ["<s>", "▁слово2"] and len(labels) == -(-n // 3)
    plt.close(fig)


def test_the_legend_names_only_the_token_groups_drawn():
    import matplotlib.pyplot as plt

    def legend_texts(fig):
        return {t.get_text() for leg in fig.legends for t in leg.get_texts()}

    no_lexicon = ["other" if g == "sentiment" else g for g in TOKEN_GROUPS]
    views = {c: fake_view() for c in A.CONDITIONS}
    with_words, without = R.example_maps(views, TOKEN_GROUPS, [12], "a"), R.example_maps(views, no_lexicon, [12], "b")
    assert any("corpus-associated word" in t for t in legend_texts(with_words))
    assert not any("corpus-associated word" in t for t in legend_texts(without))
    assert any("entity" in t for t in legend_texts(without)) and any("special" in t for t in legend_texts(without))
    table = pd.DataFrame(
        {"token": TOKENS, "group": no_lexicon, "attention (entity → token)": 0.1, "|input × gradient|": 0.1}
    )
    bars = R.token_bars({("a", "masked"): table})
    texts = legend_texts(bars)
    assert len(bars.legends) == 1 and "|input × gradient|" in texts and not any("corpus-associated" in t for t in texts)
    for fig in (with_words, without, bars):
        plt.close(fig)


def test_one_examples_head_maps_are_a_two_by_two_grid_that_fits_a_page():
    from lib.chapters import plots

    plots.setup()
    fig = R.head_maps({("negative", *c): fake_view() for c in A.CONDITIONS}, {"negative": TOKEN_GROUPS}, 9, 4, "L9")
    assert len([ax for ax in fig.axes if ax.get_images()]) == 4 and "example: negative" in fig._suptitle.get_text()
    assert plots.fit_width(fig) <= plots.MAX_WIDTH + 0.01


def test_verdict_weighs_a_rise_against_uniform_attention():
    from lib.chapters.ch06.report import verdict

    k = "06.{}.trained_layers.{}"
    nums = {
        k.format("cls_to_entity", "finetuned_minus_initial"): [-0.007, -0.008, -0.006],
        k.format("cls_to_entity", "finetuned"): [0.027],
        k.format("entity_to_sentiment", "finetuned_minus_initial"): [0.0011, 0.0007, 0.0015],
        k.format("entity_to_sentiment", "finetuned"): [0.0057],
        "06.uniform.sentiment_share": [0.011],
    }
    text = verdict(nums)
    assert "toward the entity: **no, it moves away**" in text
    assert "corpus-associated words: **yes, yet still below uniform attention**" in text
    nums["06.uniform.sentiment_share"] = [0.004]
    assert "corpus-associated words: **yes**" in verdict(nums)
