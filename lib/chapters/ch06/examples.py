"""Which validation rows chapter 06 draws: one negative, positive and neutral example and one whose entity
repeats, readable on a page (`report` draws them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...folds import subset_mask
from . import attention as A


def pick_examples(df: pd.DataFrame, n_tokens, pred, score, min_tokens=10, max_tokens=20) -> dict[str, int]:
    """Row positions of one negative, positive and neutral example and one whose entity string occurs
    again in the sentence (`lib.folds.subset_mask(df, "repeated")`: whole word, case-sensitive):
    readable (length, and not boilerplate such as "Фото: Reuters Фото: Reuters") and correctly
    predicted where possible, then the most confident. Constraints are dropped one by one when
    nothing fits (small smoke sets; a kind with no row of readable length takes its shortest row)."""
    n_tokens, pred, score = np.asarray(n_tokens), np.asarray(pred), np.asarray(score, dtype=float)
    label = df["label"].to_numpy()
    words = [[w.lower() for w in A.WORD.findall(s)] for s in df["sentence"]]
    varied = np.array([len(set(w)) >= 0.6 * len(w) for w in words])
    readable_rows = (n_tokens >= min_tokens) & (n_tokens <= max_tokens) & varied  # 20: 3 maps, 8-pt labels, 11.5 in
    correct = pred == label
    # the rarest kind first, so it is not taken by another; returned in the display order
    wanted = {"repeated entity": subset_mask(df, "repeated"), "negative": label == -1}
    wanted |= {"positive": label == 1, "neutral": label == 0}
    picked: dict[str, int] = {}
    for name, want in wanted.items():
        free = ~np.isin(np.arange(len(df)), list(picked.values()))
        # past the readable length, the shortest row (correct first): a 60-token map is 3,600 px wide
        fits = ((want & readable_rows & correct, False), (want & readable_rows, False))
        fits += ((want & varied & correct, True), (want & varied, True), (want, True), (readable_rows, False))
        for cond, shortest in fits:
            cand = np.flatnonzero(cond & free)
            if len(cand):
                order = np.lexsort((-score[cand], n_tokens[cand])) if shortest else [np.argmax(score[cand])]
                picked[name] = int(cand[order[0]])
                break
    return {k: picked[k] for k in ("negative", "positive", "neutral", "repeated entity") if k in picked}
