"""Bin stability: the share of items whose difficulty bin changes between two IRT fits.

Binning is what the rest of the study stands on. With py-irt's defaults item ranks move between
seeds; this stage reports, per dataset, how many items change bin between the chosen fit and each
replicate fit (another seed of the same engine, or another engine such as py-irt), how far they
move, and the rank correlation of the difficulties.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from crossdiff.bins.make import make_bins
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_csv


def compare(reference: pl.DataFrame, replicate: pl.DataFrame, n_bins: int) -> dict:
    ref_bins, _ = make_bins(reference, n_bins)
    rep_bins, _ = make_bins(replicate, n_bins)
    j = ref_bins.select("item_id", "difficulty", "bin").join(
        rep_bins.select("item_id", pl.col("difficulty").alias("d2"), pl.col("bin").alias("b2")), on="item_id")
    if j.height != ref_bins.height:
        raise CrossdiffError(f"replicate fit has {j.height} of the reference's {ref_bins.height} items; expected the same items")
    moved = (j["bin"] - j["b2"]).abs().to_numpy()
    return {
        "n_items": j.height,
        "share_changed_bin": float(np.mean(moved > 0)),
        "share_moved_2plus_bins": float(np.mean(moved >= 2)),
        "max_bin_shift": int(moved.max()),
        "spearman_difficulty": float(spearmanr(j["difficulty"], j["d2"]).statistic),
        "scale_ratio": float(np.std(j["d2"].to_numpy()) / np.std(j["difficulty"].to_numpy())),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, help="IRT item table of the chosen fit")
    p.add_argument("--replicate", action="append", required=True, metavar="LABEL=PATH",
                   help="IRT item table of another fit (repeatable)")
    p.add_argument("--n-bins", type=int, required=True)
    p.add_argument("--output", required=True, help="CSV: one row per replicate")


def run(args: argparse.Namespace) -> None:
    reference = read_table(args.reference, "IRT item table")
    rows = []
    for spec in args.replicate:
        label, sep, path = spec.partition("=")
        if not sep:
            raise CrossdiffError(f"--replicate {spec!r}: expected LABEL=PATH")
        rows.append({"comparison": label, **compare(reference, read_table(path, "IRT item table"), args.n_bins)})
    df = pl.DataFrame(rows)
    write_csv(df, args.output)
    print(df)
