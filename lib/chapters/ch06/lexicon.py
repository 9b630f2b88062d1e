"""A sentiment lexicon learnt from the training rows (chapter 06's "sentiment" token group): context words whose
association with negative or positive labels against neutral ones is significant."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from ...backbones import WORD_PATTERN

WORD = re.compile(WORD_PATTERN)  # the navec tokenizer's word definition, so "word" means one thing here
CONTENT_POS = ("NOUN", "ADJ", "VERB", "ADV")  # Universal Dependencies tags of content words


# --- sentiment lexicon --------------------------------------------------------------------------


def pos_tags(sentences) -> dict[str, dict[int, str]]:
    """{sentence: {character offset where a token starts: its Universal Dependencies part of speech}}
    from natasha's news morphology tagger (slovnet) over razdel tokens; the tagger and the navec
    vectors it reads ship inside the pinned natasha wheel, so this runs offline."""
    from natasha import NewsEmbedding, NewsMorphTagger
    from razdel import tokenize

    sents = list(dict.fromkeys(sentences))
    tokens = [list(tokenize(s)) for s in sents]
    markups = NewsMorphTagger(NewsEmbedding()).map([[t.text for t in ts] for ts in tokens])
    return {s: {t.start: m.pos for t, m in zip(ts, mk.tokens)} for s, ts, mk in zip(sents, tokens, markups)}


def context_words(sentence: str, start: int, end: int, tags: dict[int, str] | None = None) -> set[str]:
    """The lexicon candidates of one row, lowercased: words outside the entity span [start, end) of at
    least 3 letters (inner hyphens allowed; no digits) whose first letter is lower case as written,
    so proper names and sentence-initial words count only where they also occur in lower case. With
    `tags` ({token start: part of speech}, see `pos_tags`), only content words (CONTENT_POS) count."""
    out = set()
    for m in WORD.finditer(sentence):
        w = m.group()
        if m.start() < end and m.end() > start or len(w) < 3 or not w[0].islower():
            continue
        if w.replace("-", "").isalpha() and (tags is None or tags.get(m.start()) in CONTENT_POS):
            out.add(w.lower())
    return out


def sentiment_lexicon(
    train: pd.DataFrame, min_count: int = 5, z_min: float = 1.96, prior: float = 0.01, content_only: bool = True
) -> pd.DataFrame:
    """Words used significantly more in negative, or in positive, rows than in neutral ones.

    No published Russian sentiment lexicon installs from PyPI (`rusentilex` is not there, the
    `ru-sentiment` sdist does not build, `dostoevsky` ships a classifier), so the lexicon is learnt
    from `train`. Counts: a sentence counts a word once per label it carries (a sentence has several
    entity rows), over each row's `context_words` (with `content_only`, content words by `pos_tags`).
    Statistic: the log-odds ratio of the label vs neutral with an informative Dirichlet prior and its
    z-score (Monroe, Colaresi & Quinn 2008, "Fightin' Words"); each word's prior pseudo-count is
    `prior` times its count over all labels. A word enters for a label when z > z_min and at least
    `min_count` of that label's sentences use it; one significant for both labels goes to the larger
    z. Columns: word, label (-1 or 1), count, neutral_count, log_odds, z; best first per label.
    attrs["tested"]: {label: words with count >= min_count}, of which about 2.5% pass
    z > 1.96 by chance.
    """
    tags = pos_tags(train["sentence"]) if content_only else {}
    words: dict[tuple[str, int], set[str]] = {}
    for s, a, b, lab in zip(train["sentence"], train["start"], train["end"], train["label"]):
        words.setdefault((s, int(lab)), set()).update(
            context_words(s, int(a), int(b), tags[s] if content_only else None)
        )
    counts = {lab: Counter() for lab in (-1, 0, 1)}
    for (_, lab), ws in words.items():
        counts[lab].update(ws)
    vocab = sorted(set().union(*counts.values()))
    y = {lab: np.array([c[w] for w in vocab], dtype=float) for lab, c in counts.items()}
    total = sum(y.values())
    alpha = prior * total
    a0 = alpha.sum()

    def logit(c):
        return np.log((c + alpha) / (c.sum() + a0 - c - alpha))

    out, tested = [], {}
    for lab in (-1, 1):
        d = logit(y[lab]) - logit(y[0])
        z = d / np.sqrt(1 / (y[lab] + alpha) + 1 / (y[0] + alpha))
        frame = pd.DataFrame(
            {"word": vocab, "label": lab, "count": y[lab], "neutral_count": y[0], "log_odds": d, "z": z}
        )
        tested[lab] = int((frame["count"] >= min_count).sum())
        out.append(frame[(frame["count"] >= min_count) & (frame["z"] > z_min)])
    lex = pd.concat(out).sort_values(["z", "word"], ascending=[False, True]).drop_duplicates("word")
    lex = lex.sort_values(["label", "z", "word"], ascending=[True, False, True], kind="stable").reset_index(drop=True)
    lex[["count", "neutral_count"]] = lex[["count", "neutral_count"]].astype(int)
    lex.attrs["tested"] = tested
    return lex
