"""python -m lib.predict: the headline ensemble and its OOF-chosen rule applied to a new file."""

import numpy as np
import pandas as pd

from lib import ensembles, plan, predict
from lib.config import RAW_DIR


def test_predict_applies_the_headline_or_one_run_under_its_oof_rule(smoke, tmp_path, monkeypatch, capsys):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / "runs"))
    src = tmp_path / "new.tsv"
    raw = pd.read_csv(RAW_DIR / "validation_data_labeled.csv", sep="\t", dtype=str, keep_default_na=False)
    raw.head(12).drop(columns=["label"]).to_csv(src, sep="\t", index=False)
    args = ["--profile", "smoke", "--input", str(src), "--output", str(tmp_path / "o.tsv")]

    assert predict.main(args) == 1
    assert "run 02/hamam (smoke profile) is not trained" in capsys.readouterr().err  # names the run to train

    names = [plan.seed_run("hamam", s, prof) for s in plan.seeds(prof)]
    assert len(names) >= 2  # the headline pools seeds
    plan.materialise(prof, data, names=names, quiet=True)
    val = data["validation"]
    rows = val.index[val["row"] < 12]
    assert len(rows)

    def labels_of(run_args, want):
        assert predict.main([*args, *run_args]) == 0
        out = pd.read_csv(tmp_path / "o.tsv", sep="\t")
        assert len(out) == 12 and set(out["label"]) <= {-1, 0, 1}
        assert np.allclose(out[["p_negative", "p_neutral", "p_positive"]].to_numpy().sum(1), 1, atol=1e-4)
        got = out.set_index(np.arange(12)).loc[val.loc[rows, "row"].to_numpy(), "label"].to_numpy()
        assert np.array_equal(got, want)

    # the headline: chapter 02's pooled ensemble of every seed under the rule it picks on OOF transfer, read
    # from the cached validation logits, gives the labels the predictor computes from the checkpoints
    results = predict.headline_runs(prof, data)
    decide, _ = ensembles.headline_rule(results, data["train"])
    labels_of([], decide(ensembles.pooled(results).ensemble("validation")[rows]))

    # one run under its own OOF-chosen threshold
    result = plan.read(prof, data, "02/hamam")
    rule, t = predict.decision_rule(result, data["train"])
    labels_of(["--run", "02/hamam"], predict.apply_rule(result.ensemble("validation")[rows], rule, t))


def test_predict_rejects_a_bad_file_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text(
        "sentence\tentity\tentity_tag\tentity_pos_start_rel\tentity_pos_end_rel\nПутин ушёл\tПутин\tPERSON\t0\t9\n"
    )
    assert predict.main(["--profile", "smoke", "--input", str(bad), "--output", str(tmp_path / "o.tsv")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tsv: row 1: sentence[start:end] does not equal entity" in err
