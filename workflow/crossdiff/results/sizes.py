"""Data size x difficulty (``study.train_sizes``): accuracy over (train bin, n), best train bin per n.

From the evaluation results of the single-bin runs (``bin<b>`` at full size, ``bin<b>-n<k>``, with
or without seeds) of one dataset:

* ``{outdir}/{model}/size_difficulty.png``: one heatmap per test bin plus ``overall`` (all test items
  pooled), x = train bin, y = training size n, colour = test accuracy (mean over seeds); the best
  train bin of each n is outlined in the overall panel;
* ``{outdir}/best_train_bin.png``: the best train bin (highest overall accuracy) against n, one line
  per model, with its bootstrap interval;
* the table (CSV): model, dataset, train_size, best_train_bin (empty when bins tie), tied_train_bins
  (the bins sharing the best accuracy), best_lo, best_hi, best_share (share of resamples won by those
  bins, a resample's tie among k bins counting 1/k each), best_accuracy, n_boot.

The interval of the best bin is a percentile interval of the argmax over resamples of the same
two-level bootstrap as :func:`crossdiff.results.aggregate.hierarchical_bootstrap`: seeds drawn with
replacement, test items drawn with replacement within each test bin (the same draw for every run, so
runs are compared on the same items). A full-size run's n is the number of training items of its
bin (from the bins table: bin size minus held-out items).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.results.aggregate import _stable_int
from crossdiff.results.ties import split_quantiles, split_share, winners
from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_csv

DEFAULTS = {"n_boot": 1000, "seed": 0, "confidence": 0.95}


def collect_runs(df: pl.DataFrame, samples: dict, train_counts: dict) -> dict:
    """Single-bin runs of every (model, dataset, test_dataset, method):
    ``{(model, dataset, test_dataset, method): {(train_bin, n): {seed: {test_bin: {item: score}}}}}``.

    ``df``/``samples`` are :func:`crossdiff.results.aggregate.load_results`'s; ``train_counts`` maps a train
    dataset to ``{bin: training items}`` (a full-size run's n). Train sets (no single difficulty) and the
    zero-shot cells are left out."""
    from crossdiff.study.designs import parse_label
    from crossdiff.study.methods import split_label

    out: dict = {}
    for r in df.iter_rows(named=True):
        if r["train_bin"] == "zero-shot":
            continue
        method, rest = split_label(r["train_bin"])
        p = parse_label(rest)
        if p["bin"] is None:
            continue  # train sets have no single difficulty
        test_ds = r.get("test_dataset") or r["dataset"]
        n = p["n"] if p["n"] is not None else train_counts.get(r["dataset"], {}).get(p["bin"])
        key = (r["model"], r["dataset"], test_ds, method)
        out.setdefault(key, {}).setdefault((p["bin"], n), {}).setdefault(p["seed"], {})[r["test_bin"]] = \
            samples[(r["model"], r["dataset"], test_ds, r["train_bin"], r["test_bin"])]
    return out


def train_counts_of(bins_path) -> dict[int, int]:
    """{bin: training items} of a bins table (bin size minus held-out items)."""
    from crossdiff.bins.holdout import training_part

    bins = read_table(bins_path, "bins table")
    return {int(b): int(c) for b, c in training_part(bins).group_by("bin").len().iter_rows()}


def _runs(paths, bins_path):
    """Per model: {(train_bin, n): {seed: {test_bin: {item: score}}}} of sft's single-bin runs scored on their own
    dataset (the per-dataset figure and table of rule size_difficulty; every method and test dataset:
    :mod:`crossdiff.results.optimum`)."""
    from crossdiff.results.aggregate import load_results

    df, samples = load_results(paths)
    counts = train_counts_of(bins_path)
    runs = collect_runs(df, samples, {d: counts for d in df["dataset"].unique().to_list()})
    return {(m, d): cells for (m, d, t, method), cells in runs.items() if t == d and method == "sft"}


def size_grid(model: str, dataset: str, cells: dict, s: dict, rng) -> dict:
    """Accuracy over (train bin, n) of one group's runs, with bootstrap replicates of the overall accuracy.

    Returns ``{"test_bins", "sizes", "n": {n: {"bins", "point" (bins,), "boots" (n_boot, bins)}}, "acc": rows}``.
    One draw of test items per test bin per replicate is shared by every run (runs are compared on the same
    items), the seeds of each run are drawn with replacement (the two-level bootstrap of the module doc)."""
    test_bins = sorted({t for seeds in cells.values() for per_test in seeds.values() for t in per_test})
    item_ids = {}
    for t in test_bins:
        for seeds in cells.values():
            for per_test in seeds.values():
                if t in per_test:
                    ids = sorted(per_test[t])
                    if t in item_ids and ids != item_ids[t]:
                        raise CrossdiffError(f"{model}/{dataset}: runs were scored on different items of test bin {t}")
                    item_ids[t] = ids
    sizes = sorted({n for (_, n) in cells})
    # one item draw per test bin, shared by every run (weights: share of each item in the draw)
    w = {t: _weights(rng, s["n_boot"], len(item_ids[t])) for t in test_bins}
    n_total = sum(len(item_ids[t]) for t in test_bins)
    grid, acc_rows = {}, []
    for n in sizes:
        bins_here = sorted(b for (b, m) in cells if m == n)
        point, boots = [], []
        for b in bins_here:
            seeds = cells[(b, n)]
            missing = [t for t in test_bins if any(t not in per_test for per_test in seeds.values())]
            if missing:
                raise CrossdiffError(f"{model}/{dataset}: run bin{b} n={n} lacks results on test bins {missing}")
            # (seeds, items) per test bin
            mats = {t: np.array([[per_test[t][i] for i in item_ids[t]] for per_test in seeds.values()]) for t in test_bins}
            for t in test_bins:
                acc_rows.append({"train_bin": b, "train_size": n, "test": str(t), "accuracy": float(mats[t].mean())})
            overall = sum(mats[t].mean(axis=0).sum() for t in test_bins) / n_total
            acc_rows.append({"train_bin": b, "train_size": n, "test": "overall", "accuracy": float(overall)})
            point.append(overall)
            u = _weights(rng, s["n_boot"], len(seeds))
            # overall accuracy per resample: items re-weighted within each test bin, seeds re-weighted
            boots.append(sum(np.einsum("bk,kn,bn->b", u, mats[t], w[t]) * len(item_ids[t]) for t in test_bins) / n_total)
        grid[n] = {"bins": bins_here, "point": np.array(point), "boots": np.vstack(boots).T}  # (n_boot, bins)
    return {"test_bins": test_bins, "sizes": sizes, "n": grid, "acc": acc_rows}


def best_row(g: dict, s: dict) -> dict:
    """The best train bin of one n of :func:`size_grid`: a tie is reported as one (``best_train_bin`` None,
    ``tied_train_bins`` lists them); its percentile interval and share over the resamples."""
    bins_here, point, boot_m = g["bins"], g["point"], g["boots"]
    top = winners(point)
    best = bins_here[int(top[0])] if len(top) == 1 else None
    alpha = (1 - s["confidence"]) / 2
    lo, hi = split_quantiles(boot_m, bins_here, [alpha, 1 - alpha])
    return {"best_train_bin": best, "tied_train_bins": " ".join(str(bins_here[int(i)]) for i in top),
            "best_lo": int(lo), "best_hi": int(hi), "best_share": split_share(boot_m, top),
            "best_accuracy": float(point.max()), "n_train_bins": len(bins_here), "n_boot": s["n_boot"]}


def best_bins(paths, bins_path, settings: dict | None = None):
    """(table of best train bin per n, long table of accuracies per model, bin, n, test bin or 'overall')."""
    s = {**DEFAULTS, **(settings or {})}
    runs = _runs(paths, bins_path)
    if not runs:
        raise CrossdiffError("no single-bin fine-tuned results given; study.train_sizes needs train bins")
    best_rows, acc_rows = [], []
    for (model, dataset), cells in runs.items():
        rng = np.random.default_rng(np.random.SeedSequence([s["seed"], _stable_int(model), _stable_int(dataset)]))
        grid = size_grid(model, dataset, cells, s, rng)
        acc_rows += [{"model": model, "dataset": dataset, **r} for r in grid["acc"]]
        for n in grid["sizes"]:
            best_rows.append({"model": model, "dataset": dataset, "train_size": n, **best_row(grid["n"][n], s)})
    return pl.DataFrame(best_rows, schema_overrides={"best_train_bin": pl.Int64}), pl.DataFrame(acc_rows)


def _weights(rng, n_boot, size):
    from crossdiff.results.aggregate import _resample_weights

    return _resample_weights(rng, n_boot, size)


def plot(best: pl.DataFrame, acc: pl.DataFrame, outdir, dataset: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crossdiff.io import write_figure

    outdir = Path(outdir)
    written = []
    for (model,), sub in acc.filter(pl.col("dataset") == dataset).group_by(["model"], maintain_order=True):
        tests = sorted({t for t in sub["test"].to_list() if t != "overall"}, key=int) + ["overall"]
        sizes = sorted(sub["train_size"].unique().to_list())
        tbins = sorted(sub["train_bin"].unique().to_list())
        vmax = float(sub["accuracy"].max()) or 1.0
        ncol = min(4, len(tests))
        nrow = -(-len(tests) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(0.6 * len(tbins) * ncol + 2, 0.45 * len(sizes) * nrow + 1.5),
                                 squeeze=False, constrained_layout=True)
        for ax, test in zip(axes.ravel(), tests):
            part = sub.filter(pl.col("test") == test)
            m = np.full((len(sizes), len(tbins)), np.nan)
            for r in part.iter_rows(named=True):
                m[sizes.index(r["train_size"]), tbins.index(r["train_bin"])] = r["accuracy"]
            sns.heatmap(m, ax=ax, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=vmax, cbar=False,
                        xticklabels=tbins, yticklabels=sizes, annot_kws={"size": 6})
            ax.set_title("overall (all test bins)" if test == "overall" else f"test bin {test}", fontsize=9)
            ax.set_xlabel("train bin")
            ax.set_ylabel("train size n")
            if test == "overall":
                for i, n in enumerate(sizes):
                    row = best.filter((pl.col("model") == model) & (pl.col("train_size") == n))
                    for tied in (row["tied_train_bins"][0].split() if row.height else []):
                        j = tbins.index(int(tied))
                        ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="red", lw=2))
        for ax in axes.ravel()[len(tests):]:
            ax.axis("off")
        fig.suptitle(f"{model} / {dataset}: test accuracy by train difficulty and size (red: best train bin)")
        p = outdir / model / "size_difficulty.png"
        write_figure(fig, p)
        written.append(str(p))
    sub = best.filter(pl.col("dataset") == dataset).sort(["model", "train_size"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model,), part in sub.group_by(["model"], maintain_order=True):
        x = part["train_size"].to_numpy()
        y = part["best_train_bin"].cast(pl.Float64).to_numpy()  # a tie: no point (NaN)
        err = np.vstack([y - part["best_lo"].to_numpy(), part["best_hi"].to_numpy() - y])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=model)
    ax.set_xscale("log")
    ax.set_xlabel("training examples n (log scale)")
    ax.set_ylabel("best train bin (0 = easiest)")
    ax.set_title(f"{dataset}: best training difficulty per data size\n(bars: bootstrap interval over items and seeds)")
    ax.legend(fontsize=7)
    p = outdir / "best_train_bin.png"
    write_figure(fig, p)
    written.append(str(p))
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", nargs="+", required=True, help="result JSON files of one dataset (from evaluate)")
    p.add_argument("--bins", required=True, help="the dataset's bins table (training counts of full-size runs)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--outdir", required=True, help="folder for the PNGs (outdir/{model}/size_difficulty.png, outdir/best_train_bin.png)")
    p.add_argument("--table", required=True, help="best train bin per size (CSV)")
    p.add_argument("--settings", type=json_arg, default={}, help='JSON object: {"n_boot": 1000, "seed": 0, "confidence": 0.95}')


def run(args: argparse.Namespace) -> None:
    best, acc = best_bins(args.results, args.bins, args.settings)
    write_csv(best, args.table)
    paths = plot(best, acc, args.outdir, args.dataset)
    print(best)
    print(f"wrote {args.table} and {len(paths)} figure(s)")
