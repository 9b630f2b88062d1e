"""Inference cost of cross-encoders vs bi-encoders, all measured in one run on one machine.

Two questions, wall clock, each method including its tokenisation:
- throughput: score a sample of validation rows (whole sentences); the cross-encoders read every
  row (HAMAM twice: as is and half-masked, in one forward); SBERT with a marked sentence encodes
  every row's marked sentence and its entity; SBERT with a plain sentence encodes each distinct
  sentence once plus the entities;
- N new entities in a sentence whose embedding is cached: the cross-encoders and the marked
  bi-encoder re-read the sentence N times; the plain bi-encoder encodes only the N entity strings
  and applies its classifier to (cached u, v, |u - v|).
Timing does not depend on trained weights, so freshly built models are timed. Repeats are
interleaved across methods (a burst of other load hits them alike) and the best run is kept.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import torch

from . import model as hm
from . import sbert
from .train import encode_df, predict

NS = (1, 2, 4, 8, 16)


def clock(fn, repeat: int = 1, min_seconds: float = 0.2) -> float:
    """Seconds per call of `fn`: best of `repeat` runs (the one least disturbed by other work on the
    machine); a run calls `fn` until `min_seconds` have passed, so very short calls are not timed
    at the resolution of the scheduler's noise."""
    best = np.inf
    for _ in range(repeat):
        calls, t = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best


def entity_spans(sentence: str, n: int) -> pd.DataFrame:
    """n distinct word n-gram spans of the sentence (unigrams, then bigrams, then trigrams) as rows."""
    words = [m.span() for m in re.finditer(r"\w+", sentence)]
    spans = [(words[i][0], words[i + k - 1][1]) for k in (1, 2, 3) for i in range(len(words) - k + 1)][:n]
    if len(spans) < n:
        raise ValueError(f"only {len(spans)} word n-grams in {sentence!r}, {n} asked")
    return pd.DataFrame(
        {
            "sentence": sentence,
            "start": [a for a, _ in spans],
            "end": [b for _, b in spans],
            "entity": [sentence[a:b] for a, b in spans],
            "label": 0,
        }
    )


def sample_rows(df: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """Whole sentences of `df` in random (seeded) order until at least `rows` rows."""
    sents = df["sentence"].drop_duplicates().sample(frac=1.0, random_state=seed)
    counts = df["sentence"].value_counts()
    keep = sents[counts.loc[sents].cumsum().to_numpy() - counts.loc[sents].to_numpy() < rows]
    return df[df["sentence"].isin(set(keep))]


def sample_sentences(df: pd.DataFrame, k: int, n_max: int, seed: int = 0) -> list[str]:
    """k distinct sentences with at least `n_max` distinct word n-grams (seeded)."""
    pool = [s for s in df["sentence"].drop_duplicates() if len(re.findall(r"\w+", s)) >= (n_max + 3) // 3 + 2]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)]


def planned_tokens(tokens_per_example: dict, rows: int, sentences: int, ns=NS, repeat: int = 2) -> float:
    """Tokens `run` will push through an encoder (HAMAM-equivalent work), for the time budget."""
    t = tokens_per_example
    per_row = t["HAMAM"] + t["CLS cross-encoder"] + t["softmax-entity"] + t["softmax-plain"] + t["encode"]
    per_entity = t["HAMAM"] + t["CLS cross-encoder"] + t["softmax-entity"] + t["entity"]
    return repeat * rows * per_row + (repeat + 1) * sentences * sum(ns) * per_entity


class Scorers:
    """Freshly built HAMAM, CLS pair classifier and SBERT (softmax head) over one backbone."""

    def __init__(self, backbone: str, cfg_hamam, cfg_cls, cfg_sbert, device="cpu"):
        self.device, self.cfg_hamam, self.cfg_cls = device, cfg_hamam, cfg_cls
        self.hamam, self.tok = hm.build(backbone, cfg_hamam)
        self.cls, _ = hm.build(backbone, cfg_cls)
        self.hamam, self.cls = self.hamam.to(device).eval(), self.cls.to(device).eval()
        self.st = sbert.build(backbone, cfg_sbert, device)
        self.loss = sbert.make_loss(self.st, "softmax", cfg_sbert).eval()
        self.cache: dict[str, torch.Tensor] = {}

    def cross(self, model, cfg, df, batch_size: int = 64):
        return predict(model, encode_df(self.tok, df, cfg), self.tok.pad_token_id, self.device, batch_size)

    def jobs(self, df: pd.DataFrame) -> dict:
        """Throughput jobs over `df`: name -> (items, unit, fn)."""
        distinct = df["sentence"].drop_duplicates().tolist()
        return {
            "HAMAM (cross)": (len(df), "rows", lambda: self.cross(self.hamam, self.cfg_hamam, df)),
            "CLS pair (cross)": (len(df), "rows", lambda: self.cross(self.cls, self.cfg_cls, df)),
            "SBERT marked u": (
                len(df),
                "rows",
                lambda: sbert.softmax_logits(self.loss, *sbert.pair_texts(df, "entity")),
            ),
            "SBERT plain u": (len(df), "rows", lambda: sbert.softmax_logits(self.loss, *sbert.pair_texts(df, "plain"))),
            "SBERT encode sentences": (len(distinct), "distinct sentences", lambda: sbert.embed(self.st, distinct)),
        }

    @torch.no_grad()
    def cached_plain(self, df: pd.DataFrame):
        v = sbert.embed(self.st, list(df["entity"]))
        u = self.cache[df["sentence"].iloc[0]].expand(len(v), -1)
        return self.loss.classifier(sbert.pair_features(u, v))

    def per_entity(self) -> dict:
        """Scoring the entity rows of one sentence: name -> fn(df)."""
        return {
            "HAMAM (cross)": lambda df: self.cross(self.hamam, self.cfg_hamam, df, len(df)),
            "CLS pair (cross)": lambda df: self.cross(self.cls, self.cfg_cls, df, len(df)),
            "SBERT marked u": lambda df: sbert.softmax_logits(self.loss, *sbert.pair_texts(df, "entity")),
            "SBERT plain u, cached": self.cached_plain,
        }


def run(
    scorers: Scorers, val: pd.DataFrame, rows: int = 256, sentences: int = 8, ns=NS, repeat: int = 2, seed: int = 13
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(throughput per method, ms per sentence for N new entities per method and N)."""
    sample = sample_rows(val, rows, seed)
    jobs = scorers.jobs(sample)
    for _, _, fn in jobs.values():  # warm-up
        fn()
    best = {}
    for _ in range(repeat):
        for name, (_, _, fn) in jobs.items():
            best[name] = min(best.get(name, np.inf), clock(fn))
    throughput = pd.DataFrame(
        [{"method": k, "items": n, "unit": unit, "seconds": best[k]} for k, (n, unit, _) in jobs.items()]
    )
    throughput["per_second"] = throughput["items"] / throughput["seconds"]

    sents = sample_sentences(val, sentences, max(ns), seed)
    scorers.cache = {s: sbert.embed(scorers.st, [s]) for s in sents}  # the cache the plain bi-encoder scores against
    batch = {n: [entity_spans(s, n) for s in sents] for n in ns}
    fns = scorers.per_entity()
    for fn in fns.values():  # warm-up
        [fn(df) for df in batch[min(ns)]]
    best = {}
    for _ in range(repeat + 1):
        for n in ns:
            for method, fn in fns.items():
                best[method, n] = min(best.get((method, n), np.inf), clock(lambda: [fn(df) for df in batch[n]]))
    cost = pd.DataFrame([{"method": m, "N": n, "ms_per_sentence": 1000 * t / len(sents)} for (m, n), t in best.items()])
    cost.attrs["sentences"] = len(sents)
    throughput.attrs["rows"] = len(sample)
    return throughput, cost


def plot(axes, throughput: pd.DataFrame, cost: pd.DataFrame, ns=NS):
    """Left: items/s per method (bars, labelled); right: ms per sentence vs N (log-log), legend outside."""
    import seaborn as sns
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter

    ax = axes[0]
    sns.barplot(throughput, y="method", x="per_second", hue="unit", dodge=False, ax=ax)
    for c in ax.containers:
        ax.bar_label(c, fmt="%.0f", padding=2, fontsize=8)
    ax.set(
        title=f"Throughput ({throughput.attrs.get('rows', '?')} validation rows)",
        xlabel="items / s (higher is faster)",
        ylabel="",
    )
    ax.set_xlim(0, 1.18 * throughput["per_second"].max())  # room for the bar labels
    ax.legend(title="", fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax = axes[1]
    sns.lineplot(cost, x="N", y="ms_per_sentence", hue="method", marker="o", ax=ax)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="N new entities in the sentence",
        ylabel="ms per sentence",
        title=f"N new entities in a cached sentence ({cost.attrs.get('sentences', '?')} sentences)",
    )
    ax.set_xticks(list(ns), [str(n) for n in ns])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def headline(throughput: pd.DataFrame, cost: pd.DataFrame, prefix: str = "") -> dict:
    """Speed ratios to HAMAM (one run, one machine): throughput of the SBERT inputs, and N new entities in a cached sentence."""
    tp = throughput.set_index("method")["per_second"]
    c = cost.set_index(["method", "N"])["ms_per_sentence"]
    out = {
        f"{prefix}throughput_ratio.sbert_marked_vs_hamam": tp["SBERT marked u"] / tp["HAMAM (cross)"],
        f"{prefix}throughput_ratio.sbert_plain_vs_hamam": tp["SBERT plain u"] / tp["HAMAM (cross)"],
    }
    for n in sorted(cost["N"].unique()):
        out[f"{prefix}cached_entities_speedup_vs_hamam.n{n}"] = c["HAMAM (cross)", n] / c["SBERT plain u, cached", n]
    return out
