import pandas as pd

from lib.chapters import ch01


def _answer(final_seen: float) -> str:
    rows = lambda n: pd.DataFrame({"sentence": [f"s{i}" for i in range(n)], "label": [0] * n})  # noqa: E731
    data = {"train": rows(10), "validation": rows(4), "final": rows(3)}
    lab = pd.Series({-1: 0.2, 0: 0.7, 1: 0.1})
    seen = pd.DataFrame({"sentence": [0.3, final_seen], "entity": [0.8, 0.6]}, index=["validation", "final"])
    return ch01.answer("smoke", 5, data, lab, pd.Series({"neutral": 0.012}), seen, 0)


def test_the_answer_claims_unseen_final_rows_only_where_none_repeats_a_train_sentence():
    assert "So every final row is an unseen-sentence row:" in _answer(0.0).replace("\n", " ")
    text = _answer(0.05).replace("\n", " ")
    assert "So every final row" not in text
    assert "Apart from 5.0% repeated sentences, final rows are unseen-sentence rows:" in text
    assert "1.2 percentage points" in text and "70.0% of train rows are neutral" in text
