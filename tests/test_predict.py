"""python -m lib.predict: the headline ensemble and its OOF-chosen rule applied to a new file."""

import numpy as np
import pandas as pd

from lib import plan, predict
from lib.config import RAW_DIR


def test_predict_applies_the_fold_ensemble_and_its_oof_rule(smoke, tmp_path, monkeypatch, capsys):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path / "runs"))
    src = tmp_path / "new.tsv"
    raw = pd.read_csv(RAW_DIR / "validation_data_labeled.csv", sep="\t", dtype=str, keep_default_na=False)
    raw.head(12).drop(columns=["label"]).to_csv(src, sep="\t", index=False)

    assert predict.main(["--profile", "smoke", "--input", str(src), "--output", str(tmp_path / "o.tsv")]) == 1
    assert "run 02/hamam (smoke profile) is not trained" in capsys.readouterr().err  # names the run to train

    plan.materialise(prof, data, names=["02/hamam"], quiet=True)
    assert predict.main(["--profile", "smoke", "--input", str(src), "--output", str(tmp_path / "o.tsv")]) == 0
    out = pd.read_csv(tmp_path / "o.tsv", sep="\t")
    assert len(out) == 12 and set(out["label"]) <= {-1, 0, 1}
    probs = out[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)

    # the same rows through the cached validation logits and the OOF-chosen threshold give the same labels
    result = plan.read(prof, data, "02/hamam")
    rule, t = predict.decision_rule(result, data["train"])
    val = data["validation"]
    rows = val.index[val["row"] < 12]
    if len(rows):
        want = predict.apply_rule(result.ensemble("validation")[rows], rule, t)
        got = out.set_index(np.arange(12)).loc[val.loc[rows, "row"].to_numpy(), "label"].to_numpy()
        assert np.array_equal(got, want)


def test_predict_rejects_a_bad_file_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text(
        "sentence\tentity\tentity_tag\tentity_pos_start_rel\tentity_pos_end_rel\nПутин ушёл\tПутин\tPERSON\t0\t9\n"
    )
    assert predict.main(["--profile", "smoke", "--input", str(bad), "--output", str(tmp_path / "o.tsv")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tsv: row 1: sentence[start:end] does not equal entity" in err
