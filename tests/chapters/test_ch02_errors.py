import numpy as np
import pandas as pd

from lib.chapters.ch02 import errors
from lib.metrics import f1pn, softmax


def frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice([-1, 0, 1], n)
    return pd.DataFrame(
        {
            "sentence": [f"s{i // 2} " + "w " * int(rng.integers(5, 60)) for i in range(n)],
            "entity": [f"e{i}" for i in range(n)],
            "entity_tag": rng.choice(["PERSON", "COUNTRY"], n),
            "entity_seen_in_train": rng.random(n) < 0.5,
            "label": y,
        }
    )


def test_groups_score_their_own_rows_and_lengths_come_in_order():
    df = frame()
    logits = np.random.default_rng(1).normal(size=(len(df), 3))
    t = errors.by_group(df, logits, n_boot=50)
    pred = np.array([-1, 0, 1])[logits.argmax(1)]
    person = t[(t["by"] == "entity type") & (t["group"] == "PERSON")].iloc[0]
    m = df["entity_tag"].to_numpy() == "PERSON"
    assert person["rows"] == m.sum() and np.isclose(person["f1pn"], f1pn(df["label"][m], pred[m]))
    lengths = t[t["by"] == "sentence length (words)"]["group"].tolist()
    assert lengths == sorted(lengths, key=["≤15", "16–25", "26–40", ">40"].index)
    assert (t["f1pn_lo"] <= t["f1pn"]).all() and (t["f1pn"] <= t["f1pn_hi"]).all()


def test_confident_errors_are_wrong_and_sorted_by_confidence():
    df = frame()
    logits = np.random.default_rng(2).normal(size=(len(df), 3)) * 3
    e = errors.confident_errors(df, logits, k=10)
    assert len(e) == 10 and (e["true"] != e["predicted"]).all()
    assert e["p(predicted)"].is_monotonic_decreasing and (e["p(predicted)"] > e["p(true)"]).all()
    # under a threshold rule the predicted label need not be the most probable: its own probability ranks the rows
    polar = errors.confident_errors(df, logits, k=10, decide=lambda z: np.where(softmax(z)[:, 1] > 0.9, 0, 1))
    p_pred = softmax(logits)[:, [1, 2]]  # neutral, positive columns (labels -1, 0, 1)
    assert polar["p(predicted)"].is_monotonic_decreasing
    assert set(polar["p(predicted)"]) <= set(np.round(p_pred.ravel(), 3))


def test_the_seen_group_says_what_is_seen_and_the_figure_reads_cleanly():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.chapters import plots
    from lib.chapters.figcheck import text_problems

    df = frame()
    t = errors.by_group(df, np.random.default_rng(3).normal(size=(len(df), 3)), n_boot=50)
    assert set(t[t["by"] == "entity string in train"]["group"]) == {"seen entity", "unseen entity"}
    with matplotlib.rc_context():
        plots.setup()
        fig = errors.figure(t)
        assert text_problems(fig) == []
        plt.close(fig)
