"""Inference cost of cross-encoders vs bi-encoders, all measured in one run on one machine.

Two questions, wall clock, each method including its tokenisation:
- throughput: score a sample of validation rows (whole sentences); the cross-encoders read every
  row (HAMAM twice: as is and half-masked, in one forward); SBERT with a marked sentence encodes
  every row's marked sentence and its entity; SBERT with a plain sentence encodes each distinct
  sentence once plus the entities;
- N new entities in a sentence whose embedding is cached: the cross-encoders and the marked
  bi-encoder re-read the sentence N times; the plain bi-encoder encodes only the N entity strings
  and applies its classifier to (cached u, v, |u - v|).
Timing does not depend on trained weights, so freshly built models are timed. Repeats (>= 3) are
interleaved across methods (a burst of other load hits them alike); every timing is kept and each method is
reported as its median run with the min and max of its runs (`aggregate`).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ... import model as hm
from ... import sbert
from ... import training as T
from ...calibrate import timing_batches
from ...training import encode_df, predict

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


def planned_tokens(tokens_per_example: dict, rows: int, sentences: int, ns=NS, repeat: int = 3) -> float:
    """Tokens `run` will push through an encoder (HAMAM-equivalent work), for the time budget."""
    t = tokens_per_example
    per_row = t["HAMAM"] + t["CLS cross-encoder"] + t["softmax-entity"] + t["softmax-plain"] + t["encode"]
    per_entity = t["HAMAM"] + t["CLS cross-encoder"] + t["softmax-entity"] + t["entity"]
    return repeat * rows * per_row + repeat * sentences * sum(ns) * per_entity


class Scorers:
    """Freshly built HAMAM, CLS cross-encoder (CLS-pooled pair classifier) and SBERT (softmax head), one backbone."""

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


def aggregate(times: dict, keys=("method",)) -> pd.DataFrame:
    """{key (or tuple of keys): [seconds of each timing run]} -> one row per key with the median, min and max
    seconds and the number of runs."""
    rows = []
    for k, ts in times.items():
        ts = np.asarray(ts, dtype=float)
        k = k if isinstance(k, tuple) else (k,)
        rows.append(
            {
                **dict(zip(keys, k)),
                "seconds": float(np.median(ts)),
                "seconds_min": float(ts.min()),
                "seconds_max": float(ts.max()),
                "repeats": len(ts),
            }
        )
    return pd.DataFrame(rows)


def run(
    scorers: Scorers, val: pd.DataFrame, rows: int = 256, sentences: int = 8, ns=NS, repeat: int = 3, seed: int = 13
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(throughput per method, ms per sentence for N new entities per method and N): each the median of `repeat`
    interleaved timing runs, with their min and max."""
    if repeat < 3:
        raise ValueError(f"repeat must be >= 3 to report a spread (min, median, max), got {repeat}")
    sample = sample_rows(val, rows, seed)
    jobs = scorers.jobs(sample)
    for _, _, fn in jobs.values():  # warm-up
        fn()
    times = {}
    for _ in range(repeat):
        for name, (_, _, fn) in jobs.items():
            times.setdefault(name, []).append(clock(fn))
    throughput = aggregate(times)
    throughput.insert(1, "items", [jobs[m][0] for m in throughput["method"]])
    throughput.insert(2, "unit", [jobs[m][1] for m in throughput["method"]])
    throughput["per_second"] = throughput["items"] / throughput["seconds"]  # at the median run
    throughput["per_second_min"] = throughput["items"] / throughput["seconds_max"]
    throughput["per_second_max"] = throughput["items"] / throughput["seconds_min"]

    sents = sample_sentences(val, sentences, max(ns), seed)
    scorers.cache = {s: sbert.embed(scorers.st, [s]) for s in sents}  # the cache the plain bi-encoder scores against
    batch = {n: [entity_spans(s, n) for s in sents] for n in ns}
    fns = scorers.per_entity()
    for fn in fns.values():  # warm-up
        [fn(df) for df in batch[min(ns)]]
    times = {}
    for _ in range(repeat):
        for n in ns:
            for method, fn in fns.items():
                times.setdefault((method, n), []).append(clock(lambda fn=fn, dfs=batch[n]: [fn(df) for df in dfs]))
    cost = aggregate(times, keys=("method", "N"))
    for col, sec in (("ms_per_sentence", "seconds"), ("ms_min", "seconds_min"), ("ms_max", "seconds_max")):
        cost[col] = 1000 * cost[sec] / len(sents)
    cost = cost.drop(columns=["seconds", "seconds_min", "seconds_max"])
    cost.attrs["sentences"] = len(sents)
    throughput.attrs["rows"] = len(sample)
    return throughput, cost


# bench method -> (the model it times, by chapter 05's model key; what of it is timed)
METHODS = {
    "HAMAM (cross)": ("HAMAM", ""),
    "CLS pair (cross)": ("CLS cross-encoder", ""),
    "SBERT marked u": ("softmax-entity", ""),
    "SBERT plain u": ("softmax-plain", ""),
    "SBERT encode sentences": ("softmax-plain", ": distinct sentences only"),
    "SBERT plain u, cached": ("softmax-plain", ", sentence cached"),
}
DEFAULT_LABELS = {
    "HAMAM": "HAMAM",
    "CLS cross-encoder": "CLS cross-encoder",
    "softmax-entity": "SBERT softmax-entity",
    "softmax-plain": "SBERT softmax-plain",
}


def method_model(method: str, labels: dict | None = None) -> str:
    """The display name of the model a timed method runs (`labels`: chapter 05's key -> display name)."""
    return {**DEFAULT_LABELS, **(labels or {})}[METHODS[method][0]]


def method_label(method: str, labels: dict | None = None) -> str:
    """A timed method's display name: its model's one name, plus what is timed where that is not the model."""
    return method_model(method, labels) + METHODS[method][1]


def plot(axes, throughput: pd.DataFrame, cost: pd.DataFrame, ns=NS, labels: dict | None = None):
    """Left: items/s per method, the median run as a point with min-max whiskers; right: ms per sentence vs N
    (log-log), the same way, methods side by side; colours are the models' (`lib.chapters.plots`); legend below."""
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter

    from ..plots import legend_below, model_color

    n_runs = int(throughput["repeats"].max())
    ax = axes[0]
    tp = throughput.iloc[::-1].reset_index(drop=True)
    for i, r in tp.iterrows():
        err = [[r.per_second - r.per_second_min], [r.per_second_max - r.per_second]]
        color = model_color(method_model(r.method, labels))
        ax.errorbar(r.per_second, i, xerr=err, fmt="o" if r.unit == "rows" else "s", color=color, capsize=4, ms=7)
        text = f"{r.per_second:.0f} {r.unit}/s"
        ax.annotate(text, (r.per_second_max, i), xytext=(6, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_yticks(range(len(tp)), [method_label(m, labels) for m in tp["method"]])
    ax.set_ylim(-0.6, len(tp) - 0.4)
    ax.set_xlim(0, 1.4 * tp["per_second_max"].max())
    ax.set(
        title=f"Throughput ({throughput.attrs.get('rows', '?')} validation rows)",
        xlabel=f"items per second (median of {n_runs} runs, whiskers min–max)",
        ylabel="",
    )
    ax = axes[1]
    methods = list(dict.fromkeys(cost["method"]))
    for j, m in enumerate(methods):
        c = cost[cost["method"] == m].sort_values("N")
        x = c["N"] * 1.06 ** (j - (len(methods) - 1) / 2)  # side by side on the log axis
        err = [c["ms_per_sentence"] - c["ms_min"], c["ms_max"] - c["ms_per_sentence"]]
        color = model_color(method_model(m, labels))
        marker = "D" if m.endswith("cached") else "o"
        ax.errorbar(
            x, c["ms_per_sentence"], yerr=err, fmt=marker, color=color, capsize=3, ms=5, label=method_label(m, labels)
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="N new entities in the sentence",
        ylabel=f"ms per sentence (median of {n_runs} runs)",
        title=f"N new entities in a cached sentence ({cost.attrs.get('sentences', '?')} sentences)",
    )
    ax.set_xticks(list(ns), [str(n) for n in ns])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    legend_below(ax.figure, *ax.get_legend_handles_labels(), title="whiskers: min–max", fontsize=9)


def headline(throughput: pd.DataFrame, cost: pd.DataFrame, prefix: str = "") -> dict:
    """Speed ratios to HAMAM (one run, one machine; medians of the timing runs): throughput of the SBERT inputs,
    and N new entities in a cached sentence."""
    tp = throughput.set_index("method")["per_second"]
    c = cost.set_index(["method", "N"])["ms_per_sentence"]
    out = {
        f"{prefix}throughput_ratio.sbert_marked_vs_hamam": tp["SBERT marked u"] / tp["HAMAM (cross)"],
        f"{prefix}throughput_ratio.sbert_plain_vs_hamam": tp["SBERT plain u"] / tp["HAMAM (cross)"],
    }
    for n in sorted(cost["N"].unique()):
        out[f"{prefix}cached_entities_speedup_vs_hamam.n{n}"] = c["HAMAM (cross)", n] / c["SBERT plain u, cached", n]
    return out


# --- what the recipe's two additions cost to deploy: the masked pass and multi-sample dropout --------------
DEPLOYMENT = (("hamam", 5), ("hamam", 1), ("unmasked", 5), ("unmasked", 1))  # (mode, K); the first is the recipe


def deployment_label(mode: str, k: int) -> str:
    return f"{'HAMAM (+ masked pass)' if mode == 'hamam' else 'unmasked (one pass)'}, K = {k}"


def deployment_cost(
    backbone: str, cfg, train: pd.DataFrame, val: pd.DataFrame, device="cpu", steps=4, rows=128, repeat=5, seed=13
) -> pd.DataFrame:
    """Training seconds per optimiser step and inference ms per validation row of the recipe `cfg` with and
    without the masked pass and with K = 5 vs K = 1, freshly built models (cost does not depend on weights).
    Every variant trains on the same `steps` batches and predicts the same `rows` rows; the `repeat` timing runs
    are interleaved across variants, and each run's ratio to the recipe is kept, so a ratio comes with the
    min and max over runs. Steps are those of the first epoch: where the recipe freezes layers, later epochs
    replay the frozen layers' outputs (`HamamModel.cache_frozen`) and cost less for every variant."""
    if repeat < 3:
        raise ValueError(f"repeat must be >= 3 to report a spread (min, median, max), got {repeat}")
    dev = T.pick_device(str(device))
    precision = T.resolve_precision(cfg.precision, dev)
    sample = sample_rows(val, rows, seed)
    built = {(m, k): hm.build(backbone, replace(cfg, mode=m, msd_k=k)) for m, k in DEPLOYMENT}
    tok = built[DEPLOYMENT[0]][1]  # inputs depend on the tokenizer and max_length, not on the mode or K: encoded once
    enc_tr, enc_val, y = encode_df(tok, train, cfg), encode_df(tok, sample, cfg), train["label"].to_numpy()
    micro = cfg.batch_size // cfg.grad_accum_steps
    picked = timing_batches(enc_tr, train, cfg, np.linspace(0.2, 0.8, steps))
    parts = [T.step_parts(enc_tr, b, y, tok.pad_token_id, micro, dev) for b in picked]
    jobs = {}
    for key, (model, _) in built.items():
        model.to(dev)
        loss_fn, row_weight = T.step_objective(model.cfg, dev)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        scaler = torch.amp.GradScaler(enabled=precision == "fp16")

        def train_steps(model=model, opt=opt, scaler=scaler, loss_fn=loss_fn, rw=row_weight):
            model.train()
            for p in parts:
                T.optimiser_step(model, opt, scaler, p, loss_fn, rw, dev, precision, cfg.grad_clip)

        def infer(model=model):
            predict(model, enc_val, tok.pad_token_id, dev, precision=precision)

        jobs[key] = (train_steps, infer)
    for train_steps, infer in jobs.values():  # warm-up: allocation and kernels' first use
        train_steps(), infer()
    times = {key: ([], []) for key in jobs}
    for _ in range(repeat):
        for key, (train_steps, infer) in jobs.items():
            for fn, out in zip((train_steps, infer), times[key]):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    ref = [np.asarray(t) for t in times[DEPLOYMENT[0]]]
    out = []
    for (mode, k), (tr, inf) in times.items():
        r_tr, r_inf = np.asarray(tr) / ref[0], np.asarray(inf) / ref[1]  # each timing run against the recipe's
        tr, inf = np.asarray(tr) / steps, 1000 * np.asarray(inf) / len(sample)
        out.append(
            {
                "variant": deployment_label(mode, k),
                "masked_pass": mode == "hamam",
                "K": k,
                "train_s_per_step": float(np.median(tr)),
                "train_s_per_epoch": float(np.median(tr)) * -(-len(train) // cfg.batch_size),
                "train_ratio": float(np.median(r_tr)),
                "train_ratio_min": float(r_tr.min()),
                "train_ratio_max": float(r_tr.max()),
                "infer_ms_per_row": float(np.median(inf)),
                "infer_ratio": float(np.median(r_inf)),
                "infer_ratio_min": float(r_inf.min()),
                "infer_ratio_max": float(r_inf.max()),
                "repeats": repeat,
            }
        )
    table = pd.DataFrame(out)
    table.attrs.update(steps=steps, rows=len(sample), train_rows=len(train), precision=precision)
    return table


def deployment_sentence(table: pd.DataFrame) -> str:
    """The cost answer in words, from the measured table (ratios to the recipe, min-max over timing runs)."""
    t = table.set_index(["masked_pass", "K"])

    def ratio(col, key):
        r = t.loc[key]
        return f"{r[col]:.2f}× [{r[col + '_min']:.2f}, {r[col + '_max']:.2f}]"

    k1 = int(table["K"].min())
    return (
        f"Relative to the recipe (masked pass, K = {int(table['K'].max())}), dropping the masked pass costs "
        f"{ratio('train_ratio', (False, int(table['K'].max())))} of its training time per step and "
        f"{ratio('infer_ratio', (False, int(table['K'].max())))} of its inference time per row; K = {k1} "
        f"costs {ratio('train_ratio', (True, k1))} of its training time and {ratio('infer_ratio', (True, k1))} "
        f"of its inference time (median over {int(table['repeats'].max())} interleaved timing runs, min–max in "
        f"brackets; {table.attrs.get('steps', '?')} training steps and {table.attrs.get('rows', '?')} validation "
        f"rows per run, {table.attrs.get('precision', '?')}). At inference dropout is off, so the K samples are one "
        "head pass: K can only cost at training."
    )


def deployment_numbers(table: pd.DataFrame, prefix: str = "") -> dict:
    """results.json entries: each variant's training and inference cost as [ratio to the recipe, min, max]."""
    out = {}
    for _, r in table.iterrows():
        slug = f"{'hamam' if r.masked_pass else 'unmasked'}_k{int(r.K)}"
        for what in ("train", "infer"):
            out[f"{prefix}deployment.{what}_ratio.{slug}"] = [
                r[f"{what}_ratio"],
                r[f"{what}_ratio_min"],
                r[f"{what}_ratio_max"],
            ]
        out[f"{prefix}deployment.train_s_per_step.{slug}"] = r.train_s_per_step
        out[f"{prefix}deployment.infer_ms_per_row.{slug}"] = r.infer_ms_per_row
    return out
