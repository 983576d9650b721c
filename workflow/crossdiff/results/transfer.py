"""Cross-dataset cells (``datasets.<d>.test_on``) in the results' consumers: summary, heatmaps.

The results table (:mod:`crossdiff.results.aggregate`) holds a cross-dataset cell as a row with ``dataset`` =
the dataset the checkpoint was trained on and ``test_dataset`` = the one whose bin it was scored on; the
zero-shot row of a test bin is the scored dataset's own (``dataset`` = ``test_dataset``), the baseline of every
cell scored there. :func:`with_test_datasets` gives each (train dataset, test dataset) pair its zero-shot rows
(copies of the test dataset's, ``dataset`` set to the train dataset), so a consumer that groups by (model,
dataset[, test_dataset]) finds them in the group; a dataset scored only as another's test set has no
fine-tuned cells of its own and its zero-shot-only group is left out.

``crossdiff plot-transfer`` writes the heatmaps of one (train dataset, test dataset) pair, per trained method:
``results/figures/<train>/on-<test>/[<label>/]<model>/{accuracy,gain}.png`` and ``.../{gain_vs_gap,zero_shot}.png``
(the diagonal is not masked: train and test items are different datasets' items).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table


def has_transfer(df: pl.DataFrame) -> bool:
    return "test_dataset" in df.columns and bool((df["test_dataset"] != df["dataset"]).any())


def with_test_datasets(df: pl.DataFrame, s: dict | None = None):
    """(table, settings): the test dataset's zero-shot rows copied into every cross-dataset group and
    ``test_dataset`` added to ``group_by``; unchanged when the table has no cross-dataset cell. With ``s`` None
    only the table is returned."""
    if not has_transfer(df) or (s is not None and "test_dataset" in s["group_by"]):
        return df if s is None else (df, s)
    zero = df.filter(pl.col("train_bin") == "zero-shot")
    tuned = df.filter(pl.col("train_bin") != "zero-shot")
    pairs = tuned.select("model", "dataset", "test_dataset").unique(maintain_order=True)
    own = pairs.filter(pl.col("dataset") == pl.col("test_dataset")).select("model", "dataset")
    parts = [tuned, zero.join(own, on=["model", "dataset"], how="semi")]  # zero-shot rows of trained datasets
    for model, train, test in pairs.iter_rows():
        if train == test:
            continue
        z = zero.filter((pl.col("model") == model) & (pl.col("test_dataset") == test))
        if z.height == 0:
            raise CrossdiffError(f"results table: no zero-shot cells of {model} on {test} (the baseline of the "
                                 f"checkpoints trained on {train} and scored on {test})")
        parts.append(z.with_columns(pl.lit(train).alias("dataset")))
    out = pl.concat(parts, how="vertical_relaxed")
    return out if s is None else (out, {**s, "group_by": [*s["group_by"], "test_dataset"]})


def pair_table(df: pl.DataFrame, dataset: str, test_dataset: str, method: str) -> pl.DataFrame:
    """One (train dataset, test dataset, method)'s cells and the test dataset's zero-shot rows, the dataset column
    relabelled ``<train> on <test>`` (the heatmaps' titles)."""
    if "test_dataset" not in df.columns:
        raise CrossdiffError("results table has no test_dataset column; re-run aggregate")
    cells = df.filter((pl.col("dataset") == dataset) & (pl.col("test_dataset") == test_dataset)
                      & (pl.col("method") == method))
    if cells.height == 0:
        raise CrossdiffError(f"results table: no {method} cells trained on {dataset!r} and scored on {test_dataset!r}")
    zero = df.filter((pl.col("train_bin") == "zero-shot") & (pl.col("test_dataset") == test_dataset)
                     & (pl.col("dataset") == test_dataset))
    label = f"{dataset} on {test_dataset}"
    return pl.concat([cells, zero], how="vertical_relaxed").with_columns(pl.lit(label).alias("dataset"))


def plot_pair(table, dataset: str, test_dataset: str, methods: list[str], outdir) -> list[str]:
    from crossdiff.results.heatmaps import plot_all
    from crossdiff.study.methods import figure_dir

    df = read_table(table, "results table") if not isinstance(table, pl.DataFrame) else table
    written = []
    for method in methods:
        sub = pair_table(df, dataset, test_dataset, method)
        written += plot_all(sub, Path(outdir) / figure_dir(method), f"{dataset} on {test_dataset}",
                            show_diagonal=True, method=method)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="tidy results table (parquet, from aggregate)")
    p.add_argument("--dataset", required=True, help="the dataset the checkpoints were trained on")
    p.add_argument("--test-dataset", required=True, help="the dataset whose bins they were scored on")
    p.add_argument("--methods", nargs="+", default=["sft"], help="trained method labels (sft, dft)")
    p.add_argument("--outdir", required=True, help="results/figures/<dataset>/on-<test dataset>")


def run(args: argparse.Namespace) -> None:
    paths = plot_pair(args.table, args.dataset, args.test_dataset, args.methods, args.outdir)
    print(f"wrote {len(paths)} figure(s) to {args.outdir}")
