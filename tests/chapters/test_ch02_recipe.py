"""The recipe table reads every cached HAMAM fold run and names what each changes from the profile's recipe."""

import json
import shutil

from lib import plan
from lib.chapters.ch02 import recipe


def test_recipe_table_scores_cached_runs_on_their_oof_rows(smoke, tmp_path, monkeypatch):
    prof, data = smoke
    monkeypatch.setenv("HAMAM_RUNS_DIR", str(tmp_path))
    res = plan.materialise(prof, data, names=["02/hamam"], quiet=True)[0]
    # an exploratory run left by other code: another learning rate, same data
    other = tmp_path / "smoke" / "models" / "explore" / "fold0"
    shutil.copytree(res.root / "fold0", other, ignore=shutil.ignore_patterns("checkpoint"))
    meta = json.loads((other / "done.json").read_text())
    meta["config"]["lr"] = 0.5
    meta["config"].pop("loss")  # written before the field existed: read as its default
    (other / "done.json").write_text(json.dumps(meta))
    df = recipe.table(prof, data["train"], n_boot=50)
    assert sorted(df["candidate"]) == ["(the profile's recipe)", "(the profile's recipe)", "lr=0.5"]
    for _, r in df.iterrows():
        assert r.argmax_ci[0] <= r.oof_f1pn_argmax <= r.argmax_ci[1]
        assert r.threshold_ci[0] <= r.oof_f1pn_threshold <= r.threshold_ci[1]
        assert 0.0 <= r.threshold <= 1.0
    assert "| lr=0.5 | 0 |" in recipe.markdown(df)
