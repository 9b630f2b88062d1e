import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lib import cli, device, plan
from lib import training as T
from lib.chapters.study import frozen_phrase
from lib.config import TrainConfig


def test_bucketing_covers_every_index_once_and_pads_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, 1000)
    bucketed = T.batches(lengths, 32, shuffle=True, bucket=True, rng=np.random.default_rng(1))
    plain = T.batches(lengths, 32, shuffle=True, bucket=False, rng=np.random.default_rng(1))
    for bs in (bucketed, plain):
        assert sorted(i for b in bs for i in b) == list(range(1000))

    def padded(bs):
        return sum(len(b) * max(lengths[b]) for b in bs)

    assert padded(bucketed) < 0.7 * padded(plain)


def test_collate_pads_dynamically_or_to_a_fixed_width():
    exs = [{"input_ids": [2, 7, 3], "entity_mask": [0, 1, 0]}, {"input_ids": [2, 3], "entity_mask": [0, 0]}]
    x = T.collate(exs, pad_id=0, labels=[1, -1])
    assert x["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]] and x["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert x["labels"].tolist() == [2, 0]
    assert T.collate(exs, pad_id=0, pad_to=8)["input_ids"].shape == (2, 8)


def test_training_is_deterministic_for_a_seed(smoke):
    prof, data = smoke
    cfg = prof.train_config(epochs=1)
    bb = T.backbones.resolve(cfg.backbone, T.backbones.backbone_sentences(cfg.backbone, data))
    tr = data["train"]
    held = tr["fold"] == 0
    runs = [T.train_model(cfg, bb, tr[~held], tr[held], "cpu", max_steps=6)[2] for _ in range(2)]
    assert runs[0].step_loss == runs[1].step_loss and len(runs[0].step_loss) == 6


def _train(prof, data, cfg, checkpoints=True, **kw):
    """A one-off fold run through the plan's code path (lib.plan.train_runs), read back."""
    run = plan.Run("test/run", "fold", "test", (), cfg, tuple(range(prof.n_folds)), checkpoints)
    res = plan.train_runs(prof, data, [run], **kw)[0]
    return T.read_kfold(cfg, data, res.root, run.folds)


def test_kfold_writes_artifacts_and_reuses_matching_folds(smoke, tmp_path, monkeypatch):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    cfg = prof.train_config(epochs=1, msd_k=2)
    res = _train(prof, data, cfg)
    assert not np.isnan(res.oof).any() and res.logits["validation"].shape == (prof.n_folds, len(data["validation"]), 3)
    fold0 = res.root / "fold0"
    assert np.array_equal(res.logits["validation"][0], np.load(fold0 / "logits_validation.npy"))
    assert (fold0 / "checkpoint" / "config.json").is_file() and (
        fold0 / "checkpoint" / "hamam_head.safetensors"
    ).is_file()
    stamp = (fold0 / "done.json").stat().st_mtime_ns

    calls, meta0 = [], (fold0 / "done.json").read_text()

    # a stand-in for training: records the call and puts fold 0's marker back (a retrain removes it first)
    # (the job's method, not train_fold: train_fold's code is part of the key)
    def stand_in(job, *a):
        calls.append(job.fold)
        (Path(job.fold_dir) / "done.json").write_text(meta0)

    monkeypatch.setattr(T.FoldJob, "execute", stand_in)
    again = _train(prof, data, cfg)
    assert calls == [] and np.array_equal(again.oof, res.oof)  # nothing retrained
    assert (fold0 / "done.json").stat().st_mtime_ns == stamp

    # a fold without its checkpoint is retrained only when a checkpoint is asked for
    shutil.rmtree(fold0 / "checkpoint")
    _train(prof, data, cfg, checkpoints=False)
    assert calls == []
    _train(prof, data, cfg)
    assert calls == [0]  # fold 0 only
    calls.clear()

    # a done.json written under another key (another config, data, backbone or code) is not trusted
    meta = json.loads((fold0 / "done.json").read_text())
    meta["key"] = "another-key"
    (fold0 / "done.json").write_text(json.dumps(meta))
    (fold0 / "checkpoint").mkdir()
    (fold0 / "checkpoint" / "hamam_config.json").write_text("{}")
    _train(prof, data, cfg)
    assert calls == [0]
    calls.clear()
    _train(prof, data, cfg, force=True)  # force retrains every fold of the run
    assert calls == [0, 1]


def test_rows_of_a_sentence_share_batches_and_the_shared_encoding_changes_no_logit(smoke):
    prof, data = smoke
    tr = data["train"]
    bs = T.batches(
        [len(s) for s in tr["sentence"]], 16, True, True, np.random.default_rng(0), tr["sentence"].to_numpy()
    )
    assert sorted(i for b in bs for i in b) == list(range(len(tr)))
    split = sum(
        len({bi for bi, b in enumerate(bs) if i in b}) > 1
        for s, idx in tr.groupby("sentence").indices.items()
        for i in idx[:1]
        if len(idx) > 1
    )
    assert split == 0 or split < 0.2 * tr["sentence"].duplicated().sum()  # a group is cut only at batch edges
    cfg = prof.train_config()
    bb = T.backbones.resolve(cfg.backbone, T.backbones.backbone_sentences(cfg.backbone, data))
    model, tok = T.hm.build(bb, cfg)
    enc = T.encode_df(tok, tr.sort_values("sentence"), cfg)
    a = T.predict(model, enc, tok.pad_token_id, "cpu")
    model.cfg = dataclasses.replace(cfg, group_sentences=False)
    assert np.array_equal(a, T.predict(model, enc, tok.pad_token_id, "cpu"))


def _no_dropout(monkeypatch):
    build = T.hm.build

    def build_without_dropout(*a, **k):
        model, tok = build(*a, **k)
        for m in model.modules():
            if isinstance(m, T.torch.nn.Dropout):
                m.p = 0.0
        return model, tok

    monkeypatch.setattr(T.hm, "build", build_without_dropout)


def test_gradient_accumulation_equals_one_large_batch(smoke, monkeypatch):
    """k micro-batches with the weighted CE rescaled = one batch of k x the size (same update)."""
    _no_dropout(monkeypatch)
    prof, data = smoke
    tr = data["train"]
    held = tr["fold"] == 0
    bb = T.backbones.resolve("tiny-random", T.backbones.backbone_sentences("tiny-random", data))
    params = []
    for accum in (1, 4):
        cfg = prof.train_config(
            batch_size=16, grad_accum_steps=accum, warmup_ratio=0.0, precision="fp32"
        )  # atol assumes fp32
        model, _, run = T.train_model(cfg, bb, tr[~held], tr[held].head(4), "cpu", max_steps=2)
        params.append(T.torch.cat([p.detach().flatten() for p in model.parameters()]))
    # Adam's first steps divide by sqrt(v): a parameter whose true gradient is ~0 moves by rounding noise
    # scaled up towards lr, so a handful of elements (1 of ~100k on a freshly built tiny backbone) differ by
    # more than fp32 sums do. Every other element must agree to 1e-5, none by a tenth of a step.
    diff = (params[0] - params[1]).abs()
    assert (diff > 1e-5).sum().item() <= 1e-4 * diff.numel(), int((diff > 1e-5).sum())
    assert diff.max().item() < 0.1 * cfg.lr, diff.max().item()


def test_accumulated_gradients_equal_the_one_batch_gradient(smoke, monkeypatch):
    """Before the optimiser step (AdamW is nearly scale-invariant, so comparing parameters after it would hide a
    wrong loss scale): 4 micro-batches give the gradient of one batch of 16, in fp32 to 1e-5 of its norm; a
    plain mean of the micro-batch losses (the usual mistake with a class-weighted loss) does not."""
    _no_dropout(monkeypatch)
    prof, data = smoke
    tr = data["train"].head(16)
    bb = T.backbones.resolve("tiny-random", T.backbones.backbone_sentences("tiny-random", data))
    cfg = prof.train_config(batch_size=16, precision="fp32", neutral_weight=0.1)
    model, tok = T.hm.build(bb, cfg)
    model.train()
    enc = T.encode_df(tok, tr, cfg)
    y = tr["label"].to_numpy()  # collate maps labels to class ids
    loss_fn = T.losses.make(cfg.loss, cfg.neutral_weight, cfg.focal_gamma)
    row_weight = T.losses.class_weights(cfg.neutral_weight)

    class Capture:  # an optimiser that records the gradients it would apply
        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

        def step(self):
            self.grad = T.torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def grad(pieces, weight=row_weight):
        parts = [T.collate([enc[i] for i in part], tok.pad_token_id, None, y[np.array(part)]) for part in pieces]
        opt = Capture()
        scaler = T.torch.amp.GradScaler(enabled=False)
        T.optimiser_step(model, opt, scaler, parts, loss_fn, weight, "cpu", "fp32", grad_clip=1e9)
        return opt.grad

    rows = list(range(16))
    one = grad([rows])
    four = grad([rows[i : i + 4] for i in range(0, 16, 4)])
    assert len({tuple(sorted(y[i : i + 4])) for i in range(0, 16, 4)}) > 1  # pieces differ in class mix
    assert (four - one).norm() <= 1e-5 * one.norm(), float((four - one).norm() / one.norm())
    naive = grad([rows[i : i + 4] for i in range(0, 16, 4)], weight=T.torch.ones(3))  # each piece counts 1/4
    assert (naive - one).norm() > 1e-3 * one.norm()


def test_mask_mentions_reaches_training_through_the_config(smoke):
    prof, data = smoke
    tr = data["train"].iloc[7:]  # an index that does not start at 0, as a fold's part has
    bb = T.backbones.resolve("tiny-random", T.backbones.backbone_sentences("tiny-random", data))
    cfg = prof.train_config(mask_mentions=True)
    _, tok = T.hm.build(bb, cfg)
    enc = T.encode_df(tok, tr, cfg)
    assert all(len(e["mention_mask"]) == len(e["input_ids"]) for e in enc)
    assert all(all(m >= p for m, p in zip(e["mention_mask"], e["entity_mask"])) for e in enc)  # a superset of the span
    assert sum(e["mention_mask"] != e["entity_mask"] for e in enc) >= 1  # smoke train has repeated entities
    assert "mention_mask" not in T.encode_df(tok, tr.head(5), prof.train_config())[0]
    assert "mention_mask" in T.collate(enc[:4], tok.pad_token_id)
    assert T.fold_key(cfg, data, bb) != T.fold_key(prof.train_config(), data, bb)


def test_bf16_autocast_learns_like_fp32(smoke):
    """Autocast wraps each forward only: a context around the loop would keep the first step's weights."""
    prof, data = smoke
    tr = data["train"]
    held = tr["fold"] == 0
    bb = T.backbones.resolve("tiny-random", T.backbones.backbone_sentences("tiny-random", data))

    def run(p, lr):
        cfg = prof.train_config(precision=p, lr=lr, head_lr=lr)
        return T.train_model(cfg, bb, tr[~held], tr[held].head(8), "cpu", max_steps=12)[2]

    fp32, bf16, frozen = run("fp32", 3e-3), run("bf16", 3e-3), run("fp32", 0.0)
    f, b, z = (np.array(r.step_loss) for r in (fp32, bf16, frozen))
    assert bf16.precision == "bf16" and np.abs(f - b).max() < 0.05  # bf16 tracks fp32 step by step ...
    assert np.abs(b - z)[6:].mean() > 0.05  # ... while both move away from a run that does not learn


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(device, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else T.Path(p))
    cpuinfo.write_text("flags : fpu avx2 fma\n")
    assert T.resolve_precision("auto", "cpu") == "fp32"
    cpuinfo.write_text("flags : fpu avx2 avx512_bf16 amx_bf16\n")
    assert T.resolve_precision("auto", "cpu") == "bf16"
    assert T.resolve_precision("fp16", "cpu") == "fp16"


def test_cli_trains_named_runs_of_the_plan(smoke, tmp_path, monkeypatch, capsys):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    argv = ["--profile", "smoke", "--runs", "04/k1-seed13", "--folds", "0"]
    assert cli.main(argv, prog="python -m lib.train") == 0  # lib.train's command line is the plan's
    assert plan.resolve(prof, plan.get(prof, "04/k1-seed13"), data).done == [0]
    assert cli.main(argv, prog="python -m lib.train") == 0
    assert "every run cached" in capsys.readouterr().out
    assert cli.main(["--profile", "smoke", "--runs", "02/no-such-run"]) == 2
    assert "no run '02/no-such-run'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--profile", "smoke", "--no_such_option", "1"])


def test_set_trains_a_named_cached_experiment_beside_the_plan(smoke, tmp_path, monkeypatch, capsys):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    argv = ["--profile", "smoke", "--runs", "04/k1-seed13", "--folds", "0", "--set", "lr=0.002", "--set", "epochs=1"]
    assert cli.main(argv) == 0
    name = "04/k1-seed13@epochs=1,lr=0.002"
    assert name in capsys.readouterr().out
    run = plan.get(prof, name)  # registered: status lists it, chapters' readers do not
    assert run.cfg.lr == 0.002 and run.readers == () and plan.resolve(prof, run, data).done == [0]
    base = plan.resolve(prof, plan.get(prof, "04/k1-seed13"), data)
    assert plan.resolve(prof, run, data).key != base.key and base.done == []  # its own key; the plan's run untouched
    assert name in [r["name"] for r in plan.status(prof, data)]
    assert cli.main(argv) == 0 and "every run cached" in capsys.readouterr().out
    for bad, word in (["no_such_field=1"], "no_such_field"), (["lr=fast"], "lr"), (["mode=both"], "mode"):
        assert cli.main(["--profile", "smoke", "--runs", "02/hamam", "--set", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[-1] and "Traceback" not in err[-1]


def test_help_lists_every_trainconfig_field(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--set" in out
    for f in dataclasses.fields(TrainConfig):
        assert f"  {f.name} (" in out


def test_frozen_phrase_says_what_the_fold_runs_did():
    cfg = TrainConfig(freeze_layers=6)
    on, off = [{"frozen_cached": True}] * 5, [{"frozen_cached": False}] * 2
    assert frozen_phrase(cfg, 12, on).endswith("computed once per distinct input in 5 of 5 fold runs)")
    assert frozen_phrase(cfg, 12, on).startswith("embeddings and lowest 6 of 12 layers frozen")
    assert "recomputed at every step" in frozen_phrase(cfg, 12, off)
    assert "recomputed at every step" in frozen_phrase(cfg, 12, [{}])  # runs from code before the cache
    assert frozen_phrase(TrainConfig(), 2, on) == "all 2 layers trained"


def test_status_estimates_minutes_on_a_fresh_machine_from_a_few_timed_steps(smoke, tmp_path, monkeypatch):
    """No run trained here yet: each kind of fold run is timed for a few steps (lib.calibrate), once; the second
    status reads calibration.json; a run's own measurement would replace the estimate."""
    from lib import calibrate

    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    rows = {r["name"]: r for r in plan.status(prof, data, chapters=["02"], calibrate_here=True)}
    assert rows["02/hamam"]["seconds"] > 0 and rows["02/hamam"]["estimate"].endswith("min")
    stored = json.loads((tmp_path / "smoke" / "calibration.json").read_text())
    assert stored["hardware"] == T.hardware() and len(stored["rates"]) >= 2  # hamam and its halves differ in cost

    def no_timing(*a, **k):
        raise AssertionError("timed again")

    monkeypatch.setattr(calibrate, "seconds_per_step", no_timing)
    again = {r["name"]: r["seconds"] for r in plan.status(prof, data, chapters=["02"], calibrate_here=True)}
    assert again["02/hamam"] == rows["02/hamam"]["seconds"]
    plain = {r["name"]: r["estimate"] for r in plan.status(prof, data, chapters=["02"])}
    assert plain["02/hamam"] == "not measured"  # without calibration nothing is guessed


def test_status_on_a_fresh_clone_estimates_from_the_committed_run_record_of_the_same_run(smoke, tmp_path, monkeypatch):
    """run_record.py stores each run's seconds with a signature; a clone with nothing trained estimates a run by
    them when signature and hardware match, and by nothing (not measured) when either differs."""
    import importlib.util

    from lib.config import RunPaths

    prof, data = smoke
    name = "04/k1-seed13"
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / "trained"))
    plan.materialise(prof, data, names=[name], quiet=True)
    spec = importlib.util.spec_from_file_location("run_record", Path(__file__).parents[1] / "scripts" / "run_record.py")
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    runs = rec.run_seconds(prof, data)
    assert runs[name]["folds"] == len(plan.get(prof, name).folds) and runs[name]["signature"]

    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / "fresh"))  # a clone: nothing trained, the record committed
    results = RunPaths(prof.name).figures / "results.json"
    results.parent.mkdir(parents=True)

    def estimate(hardware, signature):
        entry = {**runs[name], "signature": signature}
        results.write_text(json.dumps({"run": {"hardware": hardware, "runs": {name: entry}}}))
        return {r["name"]: r for r in plan.status(prof, data, chapters=["04"])}[name]

    assert estimate(T.hardware(), runs[name]["signature"])["seconds"] == pytest.approx(runs[name]["seconds"])
    assert estimate("another machine", runs[name]["signature"])["estimate"] == "not measured"
    assert estimate(T.hardware(), "0" * 12)["estimate"] == "not measured"  # another config or training code


def test_paired_oof_script_compares_two_runs_on_the_same_oof_rows(smoke, tmp_path, monkeypatch, capsys):
    import importlib.util

    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    base, argv = "04/k1-seed13", ["--profile", "smoke", "--runs", "04/k1-seed13", "--folds", "0"]
    assert cli.main(argv) == 0 and cli.main([*argv, "--set", "lr=0.002"]) == 0
    spec = importlib.util.spec_from_file_location(
        "paired_oof", T.Path(__file__).parents[1] / "scripts" / "paired_oof.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    capsys.readouterr()
    assert (
        script.main(["--profile", "smoke", "--a", base, "--b", f"{base}@lr=0.002", "--folds", "0", "--boot", "50"]) == 0
    )
    out = capsys.readouterr().out
    assert f"argmax: {base}@lr=0.002 - {base} = " in out and "own OOF threshold" in out and "fold 0, argmax" in out


def test_status_lists_one_artifact_once_unless_a_second_name_needs_more_folds(smoke, tmp_path, monkeypatch):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    base = plan.get(prof, "02/unmasked")
    assert len(base.folds) > 1
    one = dataclasses.replace(base, name="x/one", folds=base.folds[:1])
    alias = dataclasses.replace(base, name="x/alias", folds=base.folds[:1])
    more = dataclasses.replace(base, name="x/more", folds=base.folds)
    monkeypatch.setattr(plan, "select", lambda prof, chapters: [one, alias, more])
    rows = plan.status(prof, data, chapters=["02"])
    assert [r["name"] for r in rows] == ["x/one = x/alias", "x/more"]
    assert rows[0]["status"] == "missing 1/1 folds"
    assert rows[1]["status"] == f"missing {len(base.folds)}/{len(base.folds)} folds"  # not hidden behind x/one
