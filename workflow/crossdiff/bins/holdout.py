"""Items of a bin and the held-out split: which items of each bin train and which test.

``bins.holdout_fraction`` > 0 adds a boolean ``heldout`` column to ``results/bins/{dataset}/bins.parquet``
(``make-bins``): in every bin ``round(fraction * size)`` items drawn with ``SeedSequence([holdout_seed,
bin])`` are held out. Training uses only the other items (:func:`training_part`), evaluation only the
held-out ones (:func:`heldout_part`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns


def holdout_split(bins: pl.DataFrame, fraction: float, seed: int = 0) -> pl.DataFrame:
    """Add a boolean ``heldout`` column: ``round(fraction * size)`` items per bin, seeded per bin."""
    if not 0 < fraction < 1:
        raise CrossdiffError(f"bins.holdout_fraction = {fraction}; expected a number in (0, 1) (0 disables the split)")
    held: set[str] = set()
    for b in sorted(bins["bin"].unique().to_list()):
        ids = sorted(bins.filter(pl.col("bin") == b)["item_id"].cast(pl.Utf8).to_list())
        k = int(round(fraction * len(ids)))
        if k < 1 or k >= len(ids):
            raise CrossdiffError(
                f"bins.holdout_fraction = {fraction}: bin {b} has {len(ids)} items, so {k} would be held out; "
                "expected at least one held-out and one training item per bin"
            )
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(b)]))
        held.update(ids[i] for i in rng.choice(len(ids), size=k, replace=False))
    return bins.with_columns(pl.col("item_id").cast(pl.Utf8).is_in(sorted(held)).alias("heldout"))


def training_part(bins: pl.DataFrame) -> pl.DataFrame:
    return bins.filter(~pl.col("heldout")) if "heldout" in bins.columns else bins


def heldout_part(bins: pl.DataFrame) -> pl.DataFrame:
    return bins.filter(pl.col("heldout")) if "heldout" in bins.columns else bins


def bin_items(items_path, bins_path, b: int | None) -> pl.DataFrame:
    """Items of bin ``b`` (all binned items if None) joined with their bin and difficulty."""
    items = read_table(items_path, "item table")
    require_columns(items, ["item_id", "question", "answer"], items_path, "item table")
    bins = read_table(bins_path, "bins table")
    require_columns(bins, ["item_id", "bin"], bins_path, "bins table")
    items = items.with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("answer").cast(pl.Utf8))
    bins = bins.with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("bin").cast(pl.Int64))
    if items["item_id"].is_duplicated().any():
        dup = items.filter(pl.col("item_id").is_duplicated())["item_id"][0]
        raise CrossdiffError(f"{items_path}: duplicate item_id {dup!r}")
    if b is not None:
        known = sorted(bins["bin"].unique().to_list())
        if b not in known:
            raise CrossdiffError(f"{bins_path}: no items in bin {b}; bins present: {known}")
        bins = bins.filter(pl.col("bin") == b)
    keep = [c for c in ("item_id", "bin", "difficulty", "measure", "heldout") if c in bins.columns]
    joined = bins.select(keep).join(items, on="item_id", how="left", suffix="_bins")
    missing = joined.filter(pl.col("question").is_null())["item_id"].to_list()
    if missing:
        raise CrossdiffError(
            f"{bins_path}: {len(missing)} item_id(s) not in item table {items_path}, e.g. {missing[:3]}"
        )
    return joined.sort("item_id")
