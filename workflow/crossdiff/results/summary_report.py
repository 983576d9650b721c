"""The summary figure (across models and datasets) and the generated paragraph stating the numbers."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.io import atomic_path


def _fmt(x, signed: bool = True, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(row: dict, key: str, confidence: float) -> str:
    return f"{_fmt(row[key])} ({round(confidence * 100)}% CI {_fmt(row[key + '_lo'])} to {_fmt(row[key + '_hi'])})"


def _excludes_zero(row: dict, key: str) -> bool:
    lo, hi = row[f"{key}_lo"], row[f"{key}_hi"]
    return lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


_ICL = re.compile(r"^icl-k(\d+)$")


def _words(method) -> dict:
    """The paragraph's nouns for a method: fine-tuning (sft and any other training method) or in-context
    learning (``icl-k<k>``: k demonstrations drawn from the train bin, no weights changed)."""
    m = _ICL.match(str(method or ""))
    if m:
        k = int(m.group(1))
        return {"cells": f"in-context cells ({k} demonstration{'s' if k != 1 else ''} from the train bin in each "
                         "prompt, no fine-tuning)",
                "source": "the demonstrations' bin", "easier": "Demonstrations from easier bins than the test bin",
                "harder": "demonstrations from harder ones", "gain": "gain", "best": "The best demonstration bin"}
    if str(method or "") == "grpo":  # issue 29: reinforcement learning on the train bin (crossdiff.finetune.grpo)
        return {"cells": "GRPO cells (reinforcement learning on the train bin, the evaluation score as reward)",
                "source": "the training bin", "easier": "Training on easier bins than the test bin",
                "harder": "training on harder ones", "gain": "gains", "best": "The best training bin"}
    return {"cells": "fine-tuned cells", "source": "the training bin",
            "easier": "Training on easier bins than the test bin", "harder": "training on harder ones",
            "gain": "gains", "best": "The best training bin"}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _trend(slope: float, near, far) -> str:
    """What a slope clearly below or above 0 means, in the words the gains' signs call for (a negative
    gain is a loss: it does not "fade", it deepens or shrinks)."""
    if not (_finite(near) and _finite(far)):
        return "the gain falls as the gap grows." if slope < 0 else "the gain rises as the gap grows."
    if slope < 0:
        if near > 0:
            return ("gains fade as the gap grows." if far > 0
                    else "gains near the diagonal fade and turn into losses as the gap grows.")
        return "losses deepen as the gap grows."
    if near >= 0:
        return "gains grow with the gap."
    return ("losses shrink as the gap grows." if far <= 0
            else "losses near the diagonal turn into gains as the gap grows.")


def _direction(row: dict) -> str:
    """Which direction does better, in the words the signs call for."""
    if row["asymmetry"] > 0:
        better, gain = "easy-to-hard", row["easy_to_hard"]
    else:
        better, gain = "hard-to-easy", row["hard_to_easy"]
    if _finite(gain) and gain <= 0:
        return f"{better} hurts less."
    return f"{better} transfers better."


def paragraph(row: dict, confidence: float, near_gap: int, group_by: list[str] | None = None) -> str:
    """One group's numbers in a few plain sentences, worded for the group's method (``row['method']``:
    fine-tuning or in-context learning) and for the signs of its numbers."""
    name = f"**{row['model']}** on **{row['dataset']}**"
    if row.get("test_dataset") not in (None, row["dataset"]):  # datasets.<d>.test_on: trained on one, tested on another
        name = f"**{row['model']}** trained on **{row['dataset']}**, tested on **{row['test_dataset']}**"
    words = _words(row.get("method"))
    extra = [f"{k}={row[k]}" for k in group_by or [] if k != "test_dataset"]
    if "train_size" in row and "train_size" not in (group_by or []):  # one paragraph per study.train_sizes entry
        n = row["train_size"]
        extra.append(f"n={n} training items per bin" if n is not None else "all training items of each bin")
    diag = ("the diagonal included" if row["diagonal"] == "included"
            else "the diagonal left out (its train and test items are the same)")
    how = "test items resampled" if row["resample"] == "items" else "cells resampled"
    s = [f"{name}{' (' + ', '.join(extra) + ')' if extra else ''}: over {row['n_cells']} {words['cells']} ({diag}; "
         f"{row['n_boot']} bootstrap resamples, {how}), the gain over zero-shot changes by "
         f"{_ci(row, 'slope', confidence)} per bin of train/test difficulty gap"]
    if _excludes_zero(row, "slope"):
        s[-1] += ": " + _trend(row["slope"], row.get("near_gain"), row.get("far_gain"))
    else:
        s[-1] += ": the interval includes 0, so no clear trend with the gap."
    s.append(f"Mean gain within {near_gap} bin(s) of {words['source']}: {_ci(row, 'near_gain', confidence)}; "
             f"farther away: {_ci(row, 'far_gain', confidence)}.")
    asym = (f"{words['easier']} (easy-to-hard) {words['gain']} {_ci(row, 'easy_to_hard', confidence)} on "
            f"average, {words['harder']} (hard-to-easy) {_ci(row, 'hard_to_easy', confidence)}; "
            f"the asymmetry (easy-to-hard minus hard-to-easy) is {_ci(row, 'asymmetry', confidence)}")
    if _excludes_zero(row, "asymmetry"):
        asym += ", " + _direction(row)
    else:
        asym += ", no clear direction."
    s.append(asym)
    s.append(f"{words['best']} lies within {near_gap} bin(s) of the test bin for "
             f"{row['best_within_near_gap']} of {row['n_test_bins']} test bins.")
    return " ".join(s)


def text_rst(summary: pl.DataFrame, settings: dict, images: list[str] | None = None) -> str:
    """reStructuredText for the report's front page: the paragraphs, then the images embedded."""
    conf, near = float(settings["confidence"]), int(settings["near_gap"])
    lines = ["The answer in numbers", "---------------------", ""]
    for row in summary.iter_rows(named=True):
        lines += [paragraph(row, conf, near, settings.get("group_by")), ""]
    for img in images or []:
        # docutils refuses lines over 10,000 characters: the base64 goes in 76-character lines
        # (browsers skip whitespace inside a base64 data URL)
        data = base64.encodebytes(Path(img).read_bytes()).decode("ascii").split()
        lines += [".. raw:: html", "", f'   <p><img alt="{Path(img).name}" style="max-width: 100%" src="data:image/png;base64,',
                  *(f"   {chunk}" for chunk in data), '   "/></p>', ""]
    return "\n".join(lines)


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def figure(summary: pl.DataFrame, best: pl.DataFrame, results: pl.DataFrame, settings: dict, path) -> None:
    """Three panels across models and datasets: mean gain by |gap| with the fitted line; slope with
    its interval; easy-to-hard vs hard-to-easy mean gain with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crossdiff.io import write_figure

    sns.set_theme(style="whitegrid", context="notebook")
    labels = [f"{r['model']} / {r['dataset']}" + (f" -> {r['test_dataset']}" if r.get("test_dataset") not in (None, r["dataset"]) else "")
              + (f" (n={r['train_size']})" if r.get("train_size") is not None else "")
              + (f" [{r['method']}]" if r.get("method") else "")
              for r in summary.iter_rows(named=True)]
    colors = sns.color_palette("tab10", max(1, len(labels)))
    fig, axes = plt.subplots(1, 3, figsize=(15, 1.5 + max(3.0, 0.45 * len(labels))),
                             gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    # single-bin runs only (study.train_sets rows have no train bin, hence no gap)
    bin_of = (pl.col("train_bin_index") if "train_bin_index" in results.columns
              else pl.col("train_bin").cast(pl.Int64, strict=False))
    ft = results.filter(pl.col("train_bin") != "zero-shot").with_columns(
        (bin_of - pl.col("test_bin")).abs().alias("abs_gap")).drop_nulls("abs_gap")
    if settings["diagonal"] == "exclude":
        ft = ft.filter(pl.col("abs_gap") > 0)
    for color, label, row in zip(colors, labels, summary.iter_rows(named=True)):
        sub = ft.filter((pl.col("model") == row["model"]) & (pl.col("dataset") == row["dataset"]))
        if "train_size" in row and "train_size" in sub.columns:  # one summary row per train size
            size = row["train_size"]
            sub = sub.filter(pl.col("train_size").is_null() if size is None else pl.col("train_size") == size)
        if row.get("method") and "method" in sub.columns:  # one summary row per method (sft, icl-k<k>)
            sub = sub.filter(pl.col("method") == row["method"])
        if row.get("test_dataset") and "test_dataset" in sub.columns:  # one summary row per test dataset (test_on)
            sub = sub.filter(pl.col("test_dataset") == row["test_dataset"])
        mean = sub.group_by("abs_gap").agg(pl.col("gain").mean()).sort("abs_gap")
        ax.plot(mean["abs_gap"], mean["gain"], "o", color=color, label=label)
        if math.isfinite(row["slope"]):
            x = np.array([mean["abs_gap"].min(), mean["abs_gap"].max()], float)
            ax.plot(x, row["intercept"] + row["slope"] * x, "-", color=color, lw=1.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="|train bin - test bin|", ylabel="mean gain over zero-shot", title="gain vs difficulty gap (OLS fit)")
    ax.legend(fontsize=7, loc="best")
    y = np.arange(len(labels))
    conf = round(float(settings["confidence"]) * 100)
    for ax, keys, title in ((axes[1], [("slope", "slope")], f"slope of gain on |gap| ({conf}% CI)"),
                            (axes[2], [("easy_to_hard", "easy-to-hard"), ("hard_to_easy", "hard-to-easy")],
                             f"mean gain by direction ({conf}% CI)")):
        for k, (key, name) in enumerate(keys):
            off = (k - (len(keys) - 1) / 2) * 0.25
            v = summary[key].to_numpy()
            lo, hi = summary[f"{key}_lo"].to_numpy(), summary[f"{key}_hi"].to_numpy()
            ax.errorbar(v, y + off, xerr=[v - lo, hi - v], fmt="o" if k == 0 else "s", capsize=3,
                        label=name, color="C0" if k == 0 else "C3")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.invert_yaxis()
        ax.set_title(title)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    axes[1].set_xlabel("gain per bin of gap")
    axes[2].set_xlabel("mean gain over zero-shot")
    fig.tight_layout()
    write_figure(fig, path)
