"""Stage 3: split items into N equal-size difficulty bins (bin 0 = easiest).

Items are ordered by difficulty, ties broken by item_id, and cut into ``n_bins`` consecutive
groups whose sizes differ by at most one (the first ``n % n_bins`` bins get the extra item).
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_csv, write_parquet


def bin_sizes(n_items: int, n_bins: int) -> list[int]:
    base, extra = divmod(n_items, n_bins)
    return [base + (1 if b < extra else 0) for b in range(n_bins)]


def make_bins(items: pl.DataFrame, n_bins: int, path="item table") -> tuple[pl.DataFrame, pl.DataFrame]:
    require_columns(items, ["item_id", "difficulty"], path, "IRT item table")
    if n_bins < 1:
        raise CrossdiffError(f"bins.n_bins = {n_bins}; expected an integer >= 1")
    if items.height < n_bins:
        raise CrossdiffError(f"{path}: {items.height} items cannot fill {n_bins} bins; expected at least n_bins items")
    if items["difficulty"].is_null().any() or items["difficulty"].is_nan().any():
        bad = items.filter(pl.col("difficulty").is_null() | pl.col("difficulty").is_nan())["item_id"][0]
        raise CrossdiffError(f"{path}: item {bad!r} has no difficulty; expected a number for every item")
    ordered = items.with_columns(pl.col("item_id").cast(pl.Utf8)).sort(["difficulty", "item_id"])
    sizes = bin_sizes(ordered.height, n_bins)
    labels = np.repeat(np.arange(n_bins), sizes)
    keep = [c for c in ("item_id", "difficulty", "accuracy") if c in ordered.columns]
    table = ordered.select(keep).with_columns(pl.Series("bin", labels, dtype=pl.Int32))
    # per-bin statistics in a fixed summation order (polars' parallel group_by sums in varying
    # order, which changes the last digits between runs): the summary is byte-identical too
    rows = []
    starts = np.cumsum([0] + sizes[:-1])
    for b, (start, size) in enumerate(zip(starts, sizes)):
        part = table.slice(int(start), size)
        d = part["difficulty"].to_numpy()
        row = {"bin": b, "size": part.height, "difficulty_min": float(d.min()), "difficulty_max": float(d.max()),
               "difficulty_mean": float(np.mean(d))}
        if "accuracy" in part.columns:
            row["mean_accuracy"] = float(np.mean(part["accuracy"].to_numpy()))
        rows.append(row)
    summary = pl.DataFrame(rows).with_columns(pl.col("bin").cast(pl.Int32), pl.col("size").cast(pl.UInt32))
    return table, summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="IRT item table (parquet)")
    p.add_argument("--n-bins", type=int, required=True)
    p.add_argument("--output", required=True, help="item_id -> bin table (parquet)")
    p.add_argument("--summary", required=True, help="per-bin summary (CSV)")


def run(args: argparse.Namespace) -> None:
    items = read_table(args.items, "IRT item table")
    table, summary = make_bins(items, args.n_bins, args.items)
    write_csv(summary, args.summary)
    write_parquet(table, args.output)
    print(summary)
