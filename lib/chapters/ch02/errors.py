"""Error analysis: where the model is right and wrong (F1pn by entity type, by whether the entity
string occurs in train, by sentence length) and its most confident mistakes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...metrics import sentence_groups, softmax, to_labels


def by_group(df: pd.DataFrame, logits: np.ndarray, n_boot: int, min_rows: int = 30, decide=to_labels) -> pd.DataFrame:
    """F1pn with sentence-clustered CIs per entity type, entity seen/unseen in train and length bin, under
    `decide` (logits -> labels: the headline's decision rule; default argmax)."""
    from ...metrics import score

    pred, y = decide(logits), df["label"].to_numpy()
    words = df["sentence"].str.split().str.len()
    bins = ["≤15", "16–25", "26–40", ">40"]
    keys = {
        "entity type": df["entity_tag"].astype(str),
        "entity string in train": np.where(df["entity_seen_in_train"].to_numpy(bool), "seen entity", "unseen entity"),
        "sentence length (words)": pd.cut(words, [0, 15, 25, 40, 1000], labels=bins).astype(str),
    }
    groups = sentence_groups(df)
    rows = []
    for name, key in keys.items():
        key = np.asarray(key)
        for value in pd.unique(key):
            m = key == value
            if m.sum() >= min_rows:
                order = bins.index(value) if value in bins else -int(m.sum())  # lengths in order, other groups by size
                rows.append(
                    {
                        "by": name,
                        "group": value,
                        "order": order,
                        "rows": int(m.sum()),
                        "polar_share": float(np.isin(y[m], [-1, 1]).mean()),
                        **{
                            k: v
                            for k, v in score(y[m], pred[m], n_boot, groups=groups[m]).items()
                            if k in ("f1pn", "f1pn_lo", "f1pn_hi")
                        },
                    }
                )
    return pd.DataFrame(rows).sort_values(["by", "order"], ignore_index=True).drop(columns="order")


def confident_errors(df: pd.DataFrame, logits: np.ndarray, k: int = 20, decide=to_labels) -> pd.DataFrame:
    """The k wrong predictions (under `decide`) with the highest probability of the predicted label, with their
    sentences (under a threshold rule the predicted label need not be the most probable one)."""
    from ...config import LABELS

    p = softmax(logits)
    pred = decide(logits)
    p_pred = p[np.arange(len(p)), [LABELS.index(v) for v in pred]]
    wrong = np.flatnonzero(pred != df["label"].to_numpy())
    top = wrong[np.argsort(-p_pred[wrong], kind="stable")[:k]]
    names = {-1: "negative", 0: "neutral", 1: "positive"}
    return pd.DataFrame(
        {
            "entity": df["entity"].to_numpy()[top],
            "type": df["entity_tag"].to_numpy()[top],
            "true": [names[v] for v in df["label"].to_numpy()[top]],
            "predicted": [names[v] for v in pred[top]],
            "p(predicted)": p_pred[top].round(3),
            "p(true)": p[top, [LABELS.index(v) for v in df["label"].to_numpy()[top]]].round(3),
            "sentence": df["sentence"].to_numpy()[top],
        }
    )


def figure(table: pd.DataFrame, model: str = "HAMAM"):
    """F1pn per group with its 95% CI, a point per group (in `model`'s colour), one panel per grouping."""
    import matplotlib.pyplot as plt

    from ..plots import model_color

    bys = list(dict.fromkeys(table["by"]))
    fig, axes = plt.subplots(
        1,
        len(bys),
        figsize=(5 * len(bys), 5.4 if table["by"].value_counts().max() > 4 else 4.2),  # room for upright labels
        sharey=True,
        gridspec_kw={"width_ratios": [max(2, (table["by"] == b).sum()) for b in bys]},
        layout="constrained",
    )
    for ax, b in zip(np.atleast_1d(axes), bys):
        t = table[table["by"] == b]
        x = np.arange(len(t))
        err = [t["f1pn"] - t["f1pn_lo"], t["f1pn_hi"] - t["f1pn"]]
        ax.errorbar(x, t["f1pn"], yerr=err, fmt="o", capsize=3, color=model_color(model))
        many = len(t) > 4  # then one line per label, upright: rotated two-line labels collide
        ax.set_xticks(
            x,
            [f"{g}{' ' if many else chr(10)}(n={n})" for g, n in zip(t["group"], t["rows"])],
            rotation=90 if many else 0,
            fontsize=9,
        )
        ax.set_xlim(-0.6, len(t) - 0.4)
        ax.set_title(f"by {b.replace('_', ' ')}")
    np.atleast_1d(axes)[0].set_ylabel("F1pn (validation, 95% CI)")
    return fig
