"""Figures of the central result, from the tidy table written by ``aggregate``.

Per model x dataset:
* ``{model}__{dataset}__accuracy.png``: train bin (rows, plus a zero-shot row on top) x test bin;
* ``{model}__{dataset}__gain.png``: gain over zero-shot, diverging palette centred on 0, diagonal
  masked (shown with ``show_diagonal``: train and test items are disjoint under
  ``bins.holdout_fraction``), ``*`` on cells whose paired bootstrap interval excludes 0;
Rows are the table's train labels: single bins (``3``), subsamples (``3-n100``) and train sets
(``set-easy``), in that order; cells averaged over seeds say so in the title.
Per dataset (all models):
* ``{dataset}__gain_vs_gap.png``: mean gain by signed bin gap (train - test), one line per model;
* ``{dataset}__zero_shot.png``: zero-shot accuracy per test bin, one line per model.
All PNGs are written atomically; the function returns the list of written paths.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_figure, write_json
from crossdiff.study.designs import parse_label

REQUIRED = ["model", "dataset", "train_bin", "test_bin", "value", "gain", "significant"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"


def _matrix(df: pl.DataFrame, column: str, rows: list[str], cols: list[int]) -> np.ndarray:
    m = np.full((len(rows), len(cols)), np.nan)
    lookup = {(r["train_bin"], r["test_bin"]): r[column] for r in df.iter_rows(named=True)}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            v = lookup.get((r, c))
            if v is not None:
                m[i, j] = float(v)
    return m


def _row_order(labels) -> list[str]:
    """Train labels: bins by number (then size, full size last), then sets by name (likewise)."""
    def key(label):
        p = parse_label(label)
        return (p["bin"] is None, p["bin"] if p["bin"] is not None else 0, p["set"] or "", p["n"] is None, p["n"] or 0)
    return sorted(set(labels), key=key)


def _diagonal(label: str, test_bin: int) -> bool:
    p = parse_label(label)
    return p["bin"] is not None and p["bin"] == test_bin


def _mark_missing(ax, values: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Partial results: hatch the cells with no value yet (not evaluated) and label them ``missing``."""
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.where(np.isnan(values))):
        if mask is not None and mask[i, j]:
            continue
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="0.55", linewidth=0))
        ax.text(j + 0.5, i + 0.5, "missing", ha="center", va="center", fontsize=6, color="0.35")


def _partial_note(values: np.ndarray) -> str:
    return f"PARTIAL ({int(np.isfinite(values).sum())} of {values.size} cells) "


def plot_all(table, outdir, dataset: str | None = None, show_diagonal: bool = False, method: str = "sft",
             partial: bool = False) -> list[str]:
    """Write the figures; with ``dataset``, only that dataset's, laid out as the workflow declares them:
    ``outdir/{model}/accuracy.png``, ``outdir/{model}/gain.png``, ``outdir/gain_vs_gap.png``,
    ``outdir/zero_shot.png``. Without it, every dataset's with flat ``{model}__{dataset}__*.png`` names.
    ``partial``: a table with rows of null value for planned cells not evaluated yet
    (:mod:`crossdiff.results.partial`): those cells are hatched and labelled missing, titles say PARTIAL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = read_table(table, "results table") if not isinstance(table, pl.DataFrame) else table
    require_columns(df, REQUIRED, table if not isinstance(table, pl.DataFrame) else "results table", "results table")
    outdir = Path(outdir)
    if "method" in df.columns:  # one method's cells (sft, or icl-k<k>) against the shared zero-shot row
        if method != "sft" and not df.filter(pl.col("method") == method).height:
            raise CrossdiffError(f"{table}: no rows of method {method!r}; methods: {sorted(set(df['method'].drop_nulls()))}")
        df = df.filter(pl.col("method").is_in([method, "zero-shot"]))
    tag = "" if method == "sft" else f" [{method}]"
    if dataset is not None:
        df = df.filter(pl.col("dataset") == dataset)
        if df.height == 0:
            raise CrossdiffError(f"{table}: no rows for dataset {dataset!r}")

    def path(kind: str, model: str | None, ds: str) -> Path:
        if dataset is not None:
            # the model column holds the workflow's slug: used as-is, it is the path the rule declares
            return outdir / model / f"{kind}.png" if model else outdir / f"{kind}.png"
        return outdir / (f"{_safe(model)}__{_safe(ds)}__{kind}.png" if model else f"{_safe(ds)}__{kind}.png")

    written: list[str] = []

    def save(fig, kind: str, model: str | None, ds: str) -> None:
        out = path(kind, model, ds)
        write_figure(fig, out)
        written.append(str(out))

    for (model, dataset_), sub in df.group_by(["model", "dataset"], maintain_order=True):
        test_bins = sorted(sub["test_bin"].unique().to_list())
        train = _row_order(t for t in sub["train_bin"].to_list() if t != "zero-shot")
        rows = (["zero-shot"] if "zero-shot" in sub["train_bin"].to_list() else []) + train
        seeds = sub["n_seeds"].max() if "n_seeds" in sub.columns else 1
        seeds_note = f", mean of {seeds} seeds" if seeds and seeds > 1 else ""
        acc = _matrix(sub, "value", rows, test_bins)
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(test_bins), 1.0 + 0.55 * len(rows)))
        sns.heatmap(acc, ax=ax, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=max(1e-9, np.nanmax(acc)) if np.isfinite(acc).any() else 1,
                    xticklabels=test_bins, yticklabels=rows, cbar_kws={"label": "accuracy"}, annot_kws={"size": 7})
        ax.set_xlabel("test bin (0 = easiest)")
        ax.set_ylabel("train bin / set")
        ax.set_title(f"{_partial_note(acc) if partial else ''}{model} / {dataset_}{tag}: accuracy{seeds_note}")
        if partial:
            _mark_missing(ax, acc)
        save(fig, "accuracy", model, dataset_)

        ft = sub.filter(pl.col("train_bin") != "zero-shot")
        if ft.height:
            trows = train
            gain = _matrix(ft, "gain", trows, test_bins)
            sig = _matrix(ft.with_columns(pl.col("significant").cast(pl.Float64)), "significant", trows, test_bins)
            mask = np.array([[(not show_diagonal) and _diagonal(r, c) for c in test_bins] for r in trows])
            annot = np.array([[("" if np.isnan(gain[i, j]) else f"{gain[i, j]:+.2f}") + ("*" if sig[i, j] == 1 else "")
                               for j in range(len(test_bins))] for i in range(len(trows))], dtype=object)
            lim = np.nanmax(np.abs(np.where(mask, np.nan, gain))) if np.isfinite(np.where(mask, np.nan, gain)).any() else 1.0
            lim = max(lim, 1e-6)
            fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(test_bins), 1.0 + 0.55 * len(trows)))
            sns.heatmap(gain, mask=mask, ax=ax, annot=annot, fmt="", cmap="RdBu", center=0, vmin=-lim, vmax=lim,
                        xticklabels=test_bins, yticklabels=trows, cbar_kws={"label": "gain over zero-shot"},
                        annot_kws={"size": 7}, linewidths=0.3, linecolor="white")
            ax.set_xlabel("test bin (0 = easiest)")
            ax.set_ylabel("train bin / set")
            diag = "held-out test items" if show_diagonal else "diagonal masked"
            ax.set_title(f"{_partial_note(gain) if partial else ''}{model} / {dataset_}{tag}: gain over zero-shot"
                         f"{seeds_note}\n(* = CI excludes 0; {diag})")
            if partial:
                _mark_missing(ax, gain, mask)
            save(fig, "gain", model, dataset_)

    for (dataset_,), sub in df.group_by(["dataset"], maintain_order=True):
        # single-bin runs only (a set has no gap); one line per model, and per size when subsampled
        single = [t for t in sub["train_bin"].unique().to_list() if t != "zero-shot" and parse_label(t)["bin"] is not None]
        size = {t: parse_label(t)["n"] for t in single}
        ft = sub.filter(pl.col("train_bin").is_in(single)).with_columns(
            (pl.col("train_bin").replace_strict({t: parse_label(t)["bin"] for t in single}, return_dtype=pl.Int64)
             - pl.col("test_bin")).alias("gap"),
            pl.col("train_bin").replace_strict({t: "full" if n is None else f"n={n}" for t, n in size.items()},
                                               return_dtype=pl.Utf8).alias("n"),
        ) if single else sub.clear()
        if ft.height:
            mean = ft.group_by(["model", "n", "gap"]).agg(pl.col("gain").mean()).sort(["model", "n", "gap"])
            fig, ax = plt.subplots(figsize=(6, 4))
            style = "n" if mean["n"].n_unique() > 1 else None
            sns.lineplot(data=mean.to_pandas(), x="gap", y="gain", hue="model", style=style, marker="o", ax=ax)
            ax.axhline(0, color="grey", lw=0.8)
            ax.axvline(0, color="grey", lw=0.8, ls=":")
            ax.set_xlabel("bin gap (train bin - test bin)")
            ax.set_ylabel("mean gain over zero-shot")
            ax.set_title(f"{'PARTIAL: ' if partial else ''}{dataset_}: gain vs difficulty gap")
            save(fig, "gain_vs_gap", None, dataset_)
        elif sub.filter(pl.col("train_bin") != "zero-shot").height:
            # only train sets (study.train_bins: []): no gap to speak of; the gain per test bin per set
            sets = sub.filter(pl.col("train_bin") != "zero-shot")
            mean = sets.group_by(["train_bin", "test_bin"]).agg(pl.col("gain").mean()).sort(["train_bin", "test_bin"])
            fig, ax = plt.subplots(figsize=(6, 4))
            sns.lineplot(data=mean.to_pandas(), x="test_bin", y="gain", hue="train_bin", marker="o", ax=ax)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("test bin (0 = easiest)")
            ax.set_ylabel("gain over zero-shot (mean over models)")
            ax.set_title(f"{'PARTIAL: ' if partial else ''}{dataset_}: gain per test bin of each train set (no single-bin runs, so no gap)")
            save(fig, "gain_vs_gap", None, dataset_)
        zs = sub.filter(pl.col("train_bin") == "zero-shot").sort(["model", "test_bin"])
        if zs.height:
            fig, ax = plt.subplots(figsize=(6, 4))
            sns.lineplot(data=zs.select(["model", "test_bin", "value"]).to_pandas(), x="test_bin", y="value",
                         hue="model", marker="o", ax=ax)
            ax.set_xlabel("test bin (0 = easiest)")
            ax.set_ylabel("zero-shot accuracy")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{'PARTIAL: ' if partial else ''}{dataset_}: zero-shot accuracy per bin")
            save(fig, "zero_shot", None, dataset_)
    if not written:
        raise CrossdiffError(f"{table}: no rows to plot")
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="tidy results table (parquet, from aggregate)")
    p.add_argument("--outdir", required=True, help="folder for the PNGs")
    p.add_argument("--dataset", help="only this dataset, in the workflow's layout (outdir/{model}/accuracy.png, ...)")
    p.add_argument("--manifest", help="JSON listing the written PNGs (a stable Snakemake output)")
    p.add_argument("--method", default="sft", help="the cells to plot: sft (fine-tunes) or icl-k<k> (in-context learning)")
    p.add_argument("--show-diagonal", action="store_true",
                   help="do not mask train bin = test bin (train and test items disjoint: bins.holdout_fraction > 0)")


def run(args: argparse.Namespace) -> None:
    paths = plot_all(args.table, args.outdir, args.dataset, args.show_diagonal, args.method)
    if args.manifest:
        write_json({"figures": paths}, args.manifest)
    print(f"wrote {len(paths)} figure(s) to {args.outdir}")
