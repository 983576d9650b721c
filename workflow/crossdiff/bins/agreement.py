"""How far a human difficulty measure agrees with IRT (``datasets.<name>.bins.by``).

From a bins table made with ``--by`` (columns ``measure``, ``difficulty`` = IRT difficulty, ``bin`` by
the measure): the items are also binned by IRT difficulty (same equal-size rule,
:func:`crossdiff.bins.make.make_bins`), and the table reports Spearman's rho between the measure and IRT
difficulty, the share of items in the same bin under both, the share within one bin, the mean
absolute bin difference, and the number of distinct measure values. The figure shows the measure
against IRT difficulty and the bin-by-bin cross table.

With ``--measure SPEC=TABLE`` / ``--column SPEC`` (``datasets.<name>.bins.measures``, crossdiff.bins.measure_set)
the table has one row per measure (bins.by's, then each entry in order) and the figure one row of panels each.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from crossdiff.bins.make import make_bins
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_csv


def agreement(bins: pl.DataFrame, n_bins: int, by: str = "measure", path="bins table") -> tuple[dict, np.ndarray]:
    from scipy.stats import spearmanr

    require_columns(bins, ["item_id", "difficulty", "measure", "bin"], path, "bins table made with bins.by")
    irt_bins, _ = make_bins(bins.select("item_id", "difficulty"), n_bins, path)
    joined = bins.select("item_id", "measure", "difficulty", pl.col("bin").cast(pl.Int64).alias("bin_measure")).join(
        irt_bins.select("item_id", pl.col("bin").cast(pl.Int64).alias("bin_irt")), on="item_id")
    a, b = joined["bin_measure"].to_numpy(), joined["bin_irt"].to_numpy()
    cross = np.zeros((n_bins, n_bins), int)
    np.add.at(cross, (a, b), 1)
    row = {
        "by": by,
        "n_items": joined.height,
        "n_bins": n_bins,
        "distinct_measure_values": int(joined["measure"].n_unique()),
        "spearman_measure_irt": float(spearmanr(joined["measure"], joined["difficulty"]).statistic),
        "spearman_bins": float(spearmanr(a, b).statistic),
        "same_bin_share": float(np.mean(a == b)),
        "within_one_bin_share": float(np.mean(np.abs(a - b) <= 1)),
        "mean_abs_bin_difference": float(np.mean(np.abs(a - b))),
        "chance_same_bin_share": 1.0 / n_bins,
    }
    return row, cross


def plot(bins: pl.DataFrame, row: dict, cross: np.ndarray, output, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crossdiff.io import write_figure

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    rng = np.random.default_rng(0)  # jitter only, so discrete measures stay visible
    m = bins["measure"].to_numpy().astype(float)
    span = (np.ptp(m) or 1.0) / max(20, row["distinct_measure_values"] * 4) if row["distinct_measure_values"] < 30 else 0
    ax1.scatter(m + rng.uniform(-span, span, m.size), bins["difficulty"], s=6, alpha=0.5, color="#4c72b0")
    ax1.set(xlabel=f"{row['by']}", ylabel="IRT difficulty (logits)",
            title=f"Spearman rho = {row['spearman_measure_irt']:.2f}")
    sns.heatmap(cross, ax=ax2, annot=True, fmt="d", cmap="Blues", cbar=False, annot_kws={"size": 6})
    ax2.set(xlabel="bin by IRT difficulty", ylabel=f"bin by {row['by']}",
            title=f"same bin: {row['same_bin_share']:.0%} (chance {row['chance_same_bin_share']:.0%}), "
                  f"within one: {row['within_one_bin_share']:.0%}")
    fig.suptitle(f"{title}: {row['by']} vs IRT difficulty")
    write_figure(fig, output)


# ----------------------------------------------------------- several measures (datasets.<name>.bins.measures)
def agreement_rows(bins: pl.DataFrame, extra: dict[str, pl.DataFrame], n_bins: int, by: str, edges=None,
                   where="bins table") -> tuple[list[dict], list[tuple[pl.DataFrame, dict, np.ndarray]]]:
    """One agreement row per measure (bins.by's when the bins carry a measure, then each entry), and what the
    figure draws for each."""
    from scipy.stats import spearmanr

    from crossdiff.bins.measure_set import bins_of

    require_columns(bins, ["item_id", "difficulty", "bin"], where, "bins table")
    parts = []
    if "measure" in bins.columns:
        parts.append((by, bins))
    irt = bins.select("item_id", "difficulty")
    for spec, values in extra.items():
        parts.append((spec, bins_of(irt, values, spec, n_bins, edges, where)))
    by_values = bins.select(pl.col("item_id").cast(pl.Utf8), pl.col("measure").alias("by_measure")) \
        if "measure" in bins.columns else None
    rows, drawn = [], []
    for spec, table in parts:
        row, cross = agreement(table, n_bins, spec, where)
        rho = None
        if by_values is not None:
            j = table.select(pl.col("item_id").cast(pl.Utf8), "measure").join(by_values, on="item_id")
            rho = float(spearmanr(j["measure"], j["by_measure"]).statistic)
        row["spearman_measure_by"] = rho
        rows.append(row)
        drawn.append((table, row, cross))
    return rows, drawn


def plot_rows(drawn, output, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crossdiff.io import write_figure

    fig, axes = plt.subplots(len(drawn), 2, figsize=(11, 4.2 * len(drawn)), squeeze=False, constrained_layout=True)
    rng = np.random.default_rng(0)  # jitter only, so discrete measures stay visible
    for (table, row, cross), (ax1, ax2) in zip(drawn, axes):
        m = table["measure"].to_numpy().astype(float)
        span = (np.ptp(m) or 1.0) / max(20, row["distinct_measure_values"] * 4) if row["distinct_measure_values"] < 30 else 0
        ax1.scatter(m + rng.uniform(-span, span, m.size), table["difficulty"], s=6, alpha=0.5, color="#4c72b0")
        ax1.set(xlabel=row["by"], ylabel="IRT difficulty (logits)",
                title=f"{row['by']}: Spearman rho = {row['spearman_measure_irt']:.2f}")
        sns.heatmap(cross, ax=ax2, annot=True, fmt="d", cmap="Blues", cbar=False, annot_kws={"size": 6})
        ax2.set(xlabel="bin by IRT difficulty", ylabel=f"bin by {row['by']}",
                title=f"same bin: {row['same_bin_share']:.0%} (chance {row['chance_same_bin_share']:.0%}), "
                      f"within one: {row['within_one_bin_share']:.0%}")
    fig.suptitle(f"{title}: difficulty measures vs IRT difficulty")
    write_figure(fig, output)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", required=True, help="bins table made with --by (measure, difficulty, bin)")
    p.add_argument("--n-bins", type=int, required=True)
    p.add_argument("--by", default="measure", help="name of the measure (labels only)")
    p.add_argument("--title", default="")
    p.add_argument("--output", required=True, help="one-row agreement table (CSV)")
    p.add_argument("--figure", required=True, help="scatter + bin cross table (PNG)")
    # datasets.<name>.bins.measures: more measures, one row each (crossdiff.bins.measure_set)
    p.add_argument("--measure", dest="extra", action="append", default=[], metavar="SPEC=TABLE",
                   type=lambda s: ("table", s),
                   help="another measure's per-item table (item_id, measure), e.g. answer_prob:tiny=TABLE")
    p.add_argument("--column", dest="extra", action="append", default=[], metavar="SPEC", type=lambda s: ("column", s),
                   help="another measure read from the item table (--items): a numeric column or length:COLUMN")
    p.add_argument("--items", help="item table (for --column)")
    p.add_argument("--edges", type=float, nargs="+", help="bins.scheme quantiles: cut the other measures at these quantile levels")


def run(args: argparse.Namespace) -> None:
    bins = read_table(args.bins, "bins table")
    if args.extra:  # bins.measures: one row per measure, in the order given (crossdiff.bins.measure_set)
        from crossdiff.bins.measure_set import extra_values

        values = extra_values(args.extra, args.items)
        rows, drawn = agreement_rows(bins, values, args.n_bins, args.by, args.edges, args.bins)
        write_csv(pl.DataFrame(rows), args.output)
        plot_rows(drawn, args.figure, args.title)
        for row in rows:
            print(row)
        return
    if "measure" not in bins.columns:
        raise CrossdiffError(f"{args.bins}: no 'measure' column; this dataset is binned by IRT (datasets.<name>.bins.by)")
    row, cross = agreement(bins, args.n_bins, args.by, args.bins)
    write_csv(pl.DataFrame([row]), args.output)
    plot(bins, row, cross, args.figure, args.title)
    print(row)
