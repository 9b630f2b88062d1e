import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from lib import model as hm
from lib.config import TrainConfig
from lib.data import load_split
from lib.training import collate

from .checkpoints import FAMILIES, build

# entity at the start, in the middle, at the end, and a word that occurs twice (second one is the target)
SENT = "Путин встретился с Путиным в Москве, а Путин похвалил Москву"
CASES = [(0, 5), (19, 26), (54, 60), (39, 44)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    sents = list(load_split("train", max_rows=400)["sentence"]) + [SENT]
    root = tmp_path_factory.mktemp("ckpt")
    return {f: str(build(f, sents, root / f)) for f in FAMILIES}


def test_cases_are_what_they_claim():
    assert [SENT[a:b] for a, b in CASES] == ["Путин", "Путиным", "Москву", "Путин"]
    assert SENT.find("Путин") == 0 and CASES[3][0] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_through_auto_classes(checkpoints, family):
    tok = AutoTokenizer.from_pretrained(checkpoints[family])
    assert tok.is_fast and tok.mask_token_id is not None and tok.mask_token in tok.get_vocab()
    assert AutoModel.from_pretrained(checkpoints[family]).config.hidden_size == 32


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("span", CASES)
def test_masked_copy_differs_exactly_at_the_entity_tokens(checkpoints, family, span):
    tok = AutoTokenizer.from_pretrained(checkpoints[family])
    (ex,) = hm.encode(tok, [SENT], [span[0]], [span[1]])
    ids, ent = torch.tensor([ex["input_ids"]]), torch.tensor([ex["entity_mask"]])
    masked = hm.mask_entity(ids, ent, tok.mask_token_id)
    assert masked.shape == ids.shape
    changed = (masked != ids)[0].numpy()
    assert np.array_equal(changed | (ent[0].numpy() == 1), ent[0].numpy() == 1)  # only entity tokens change
    assert (masked[0][ent[0] == 1] == tok.mask_token_id).all()
    # the entity tokens are exactly those whose characters overlap the span, and together cover it
    enc = tok(SENT, return_offsets_mapping=True, return_special_tokens_mask=True)
    s, e = span
    marked = [o for o, m in zip(enc["offset_mapping"], ex["entity_mask"]) if m]
    assert min(a for a, _ in marked) <= s and max(b for _, b in marked) >= e
    for (a, b), m, sp in zip(enc["offset_mapping"], ex["entity_mask"], enc["special_tokens_mask"]):
        assert not (m and sp)
        if not m and not sp:
            assert b <= s or a >= e


def test_repeated_word_is_marked_only_at_its_span(checkpoints):
    tok = AutoTokenizer.from_pretrained(checkpoints["bert"])
    first, second = hm.encode(tok, [SENT, SENT], [0, 39], [5, 44])
    pos1 = {i for i, m in enumerate(first["entity_mask"]) if m}
    pos2 = {i for i, m in enumerate(second["entity_mask"]) if m}
    assert pos1 and pos2 and not pos1 & pos2
    assert [first["input_ids"][i] for i in sorted(pos1)] == [second["input_ids"][i] for i in sorted(pos2)]


def test_mention_spans_are_whole_words_only():
    # "Путин" at 0 and 39; "Путиным" at 19 is another word form, not a mention
    assert hm.mention_spans(SENT, 39, 44) == [(0, 5), (39, 44)]
    assert hm.mention_spans(SENT, 19, 26) == [(19, 26)]
    assert hm.mention_spans("ЕСЛИ ЕС, то ЕС.", 5, 7) == [(5, 7), (12, 14)]


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_mentions_hides_every_mention_but_pools_the_labelled_span(checkpoints, family):
    tok = AutoTokenizer.from_pretrained(checkpoints[family])
    (plain,) = hm.encode(tok, [SENT], [39], [44])
    (ex,) = hm.encode(tok, [SENT], [39], [44], mask_mentions=True)
    (first,) = hm.encode(tok, [SENT], [0], [5])
    assert (
        "mention_mask" not in plain and ex["entity_mask"] == plain["entity_mask"]
    )  # off by default; pooling unchanged
    assert ex["mention_mask"] == [int(a or b) for a, b in zip(first["entity_mask"], ex["entity_mask"])]
    (single,) = hm.encode(tok, [SENT], [19], [26], mask_mentions=True)
    assert single["mention_mask"] == single["entity_mask"]  # one mention: same as the labelled span
    cfg = TrainConfig(backbone=checkpoints[family], mode="masked", mask_mentions=True)
    model, _ = hm.build(checkpoints[family], cfg)
    model.eval()
    x = collate([ex], tok.pad_token_id)
    with torch.no_grad():
        for mode in ("masked", "hamam"):
            every, only_span = (
                model(**x, mode=mode),
                model(**{k: v for k, v in x.items() if k != "mention_mask"}, mode=mode),
            )
            assert not torch.allclose(every, only_span)
        unmasked = model(**x, mode="unmasked")
        assert torch.equal(unmasked, model(**{k: v for k, v in x.items() if k != "mention_mask"}, mode="unmasked"))
        assert torch.allclose(model(**x, mode="hamam"), (unmasked + model(**x, mode="masked")) / 2, atol=1e-5)


def test_mask_mentions_needs_a_masked_copy():
    with pytest.raises(ValueError, match="mask_mentions"):
        TrainConfig(mode="unmasked", mask_mentions=True)


def test_long_sentence_keeps_a_window_around_the_entity(checkpoints):
    tok = AutoTokenizer.from_pretrained(checkpoints["bert"])
    long = " ".join(["слово"] * 200) + " Путин " + " ".join(["слово"] * 200)
    a = long.index("Путин")
    (ex,) = hm.encode(tok, [long], [a], [a + 5], max_length=32)
    assert len(ex["input_ids"]) == 32 and sum(ex["entity_mask"]) >= 1
    assert ex["input_ids"][0] == tok.cls_token_id and ex["input_ids"][-1] == tok.sep_token_id


def test_pair_encoding_marks_only_the_sentence_segment(checkpoints):
    tok = AutoTokenizer.from_pretrained(checkpoints["bert"])
    (ex,) = hm.encode(tok, [SENT], [0], [5], entities=["Путин"])
    sep = ex["input_ids"].index(tok.sep_token_id)
    assert sum(ex["entity_mask"][:sep]) >= 1 and sum(ex["entity_mask"][sep:]) == 0


def test_pooling_is_concat_of_mean_and_max_over_entity_tokens():
    h = torch.tensor([[[1.0, -2.0], [3.0, 5.0], [100.0, 100.0], [-1.0, 4.0]]])
    m = torch.tensor([[0, 1, 0, 1]])
    assert torch.equal(hm.pool_entity(h, m), torch.tensor([[1.0, 4.5, 3.0, 5.0]]))


def test_class_weights_downweight_neutral_only():
    w = hm.class_weights(0.1)
    assert w[hm.LABEL2ID[0]].item() == pytest.approx(0.1)
    assert w[hm.LABEL2ID[1]].item() == w[hm.LABEL2ID[-1]].item() == 1.0
    logits, y = torch.tensor([[0.0, 2.0, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([hm.LABEL2ID[0], hm.LABEL2ID[1]])
    per_row = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    expected = (0.1 * per_row[0] + 1.0 * per_row[1]) / 1.1
    assert hm.loss_fn(0.1)(logits, y).item() == pytest.approx(expected.item())


def test_msd_head_averages_k_dropout_masks_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    head = hm.MultiSampleDropoutHead(4, 3, k=5, rate=0.5)
    x = torch.randn(2, 4)
    head.train()
    torch.manual_seed(1)
    got = head(x)
    torch.manual_seed(1)
    h = torch.tanh(head.dense(x))
    want = torch.stack([head.out(head.dropout(h)) for _ in range(5)]).mean(0)
    assert torch.allclose(got, want)
    head.eval()
    assert torch.equal(head(x), head(x)) and torch.allclose(head(x), head.out(h))


@pytest.mark.parametrize("family", FAMILIES)
def test_hamam_forward_backward_and_mode_semantics(checkpoints, family):
    cfg = TrainConfig(backbone=checkpoints[family], msd_k=2)
    model, tok = hm.build(checkpoints[family], cfg)
    exs = hm.encode(tok, [SENT] * 2, [0, 19], [5, 26])
    x = collate(exs, tok.pad_token_id, labels=[1, -1])
    y = x.pop("labels")
    loss = hm.loss_fn(0.1)(model(**x, mode="hamam"), y)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.get_input_embeddings().weight.grad is not None
    model.eval()
    with torch.no_grad():
        un, ma, ha = (model(**x, mode=m) for m in ("unmasked", "masked", "hamam"))
    assert torch.allclose(ha, (un + ma) / 2, atol=1e-5)
    assert not torch.allclose(un, ma)


@pytest.mark.parametrize("freeze", [0, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(checkpoints, family, freeze):
    """With frozen lower layers too: checkpointing must not switch gradients back on below them."""
    exs = hm.encode(AutoTokenizer.from_pretrained(checkpoints[family]), [SENT] * 3, [0, 19, 54], [5, 26, 60])
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)  # same head init and the same dropout masks in both runs
        cfg = TrainConfig(backbone=checkpoints[family], msd_k=2, gradient_checkpointing=ckpt, freeze_layers=freeze)
        model, tok = hm.build(checkpoints[family], cfg)
        frozen_out = model.encoder.get_input_embeddings().weight
        assert frozen_out.requires_grad == (freeze == 0)
        model.train()
        assert model.encoder.is_activation_checkpointing == ckpt
        seen = []  # does the embedding output carry gradients (a backward through the frozen layers)?
        hook = model.encoder.embeddings.register_forward_hook(
            lambda m, i, out, seen=seen: seen.append(out.requires_grad)
        )
        x = collate(exs, tok.pad_token_id, labels=[1, -1, 0])
        y = x.pop("labels")
        hm.loss_fn(0.1)(model(**x, mode="hamam"), y).backward()
        hook.remove()
        assert seen and all(s == (freeze == 0) for s in seen)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape and torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(checkpoints, family, tmp_path):
    cfg = TrainConfig(backbone=checkpoints[family])
    model, tok = hm.build(checkpoints[family], cfg)
    model.eval()
    x = collate(hm.encode(tok, [SENT], [0], [5]), tok.pad_token_id)
    with torch.no_grad():
        before = model(**x)
    hm.save(model, tok, tmp_path / "m")
    enc = AutoModel.from_pretrained(tmp_path / "m")  # plain transformers can load the encoder
    assert all(torch.equal(p, q) for p, q in zip(enc.state_dict().values(), model.encoder.state_dict().values()))
    again, tok2 = hm.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(again(**x), before, atol=1e-6)
    assert again.cfg == cfg


def test_built_backbones_are_cached_by_corpus(tmp_path):
    from lib.backbones import resolve

    sents = sorted(set(load_split("train", max_rows=120)["sentence"]))
    a = resolve("tiny-random", sents, tmp_path)
    assert resolve("tiny-random", list(reversed(sents)), tmp_path) == a  # same corpus, same directory
    assert resolve("tiny-random", sents[:-5], tmp_path) != a
    assert resolve("some/hub-id") == "some/hub-id"
    with pytest.raises(ValueError, match="pass its sentences"):
        resolve("navec-bert")


def test_frozen_layers_stay_in_eval_mode(checkpoints):
    cfg = TrainConfig(backbone=checkpoints["bert"], freeze_layers=1)
    model, _ = hm.build(checkpoints["bert"], cfg)
    model.train()
    frozen = [model.encoder.embeddings, model.encoder.encoder.layer[0]]
    assert model.frozen_modules() == frozen
    assert not any(m.training for f in frozen for m in f.modules())
    assert model.encoder.encoder.layer[1].training and model.head.training


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_frozen_output_gives_the_same_logits_and_gradients(checkpoints, family, group):
    """The replayed lower-layer output must be what the full encoder computes: the same training loss and
    gradients (same dropout masks above the frozen part), and the same eval logits in other batches."""
    tok = AutoTokenizer.from_pretrained(checkpoints[family])
    sents = [SENT, SENT, "Москва ответила", SENT]
    exs = hm.encode(tok, sents, [0, 19, 0, 54], [5, 26, 6, 60])
    x = collate(exs, tok.pad_token_id, labels=[1, -1, 0, 1])
    y = x.pop("labels")
    cfg = TrainConfig(backbone=checkpoints[family], msd_k=2, freeze_layers=1, group_sentences=group)
    runs = []
    for cache in (False, True):
        torch.manual_seed(0)  # the same head init and the same dropout masks in both runs
        model, _ = hm.build(checkpoints[family], cfg)
        on = model.cache_frozen(cache)
        if family == "rembert":  # its embedding projection sits inside the encoder: not replayable
            assert not on and model.prefix_cache is None
            return
        assert on == cache
        model.train()
        loss = hm.loss_fn(0.1)(model(**x, mode="hamam"), y)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        model.eval()
        with torch.no_grad():  # a batch of another width and composition: rows replayed from the cache
            sub = collate([exs[2], exs[3]], tok.pad_token_id)
            rows = len(model.prefix_cache or ())
            sub_logits = model(**sub, mode="hamam")
            assert len(model.prefix_cache or ()) == rows  # nothing new to compute
        runs.append((loss.detach(), grads, sub_logits))
    (l0, g0, s0), (l1, g1, s1) = runs
    assert torch.allclose(l0, l1, atol=1e-6) and torch.allclose(s0, s1, atol=1e-5)
    assert g0.shape == g1.shape and torch.allclose(g0, g1, atol=1e-6)
    # each distinct row once: 2 sentences unmasked + 4 masked copies (SENT's 3 rows share one unmasked row)
    assert rows == 6
