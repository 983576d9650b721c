"""Stage 3: split items into N equal-size difficulty bins (bin 0 = easiest).

Items are ordered by difficulty, ties broken by item_id, and cut into ``n_bins`` consecutive
groups whose sizes differ by at most one (the first ``n % n_bins`` bins get the extra item).

Options (both off by default, leaving today's table unchanged):

* ``--by COLUMN`` (``datasets.<name>.bins.by``): bin by an item-table measure instead of IRT
  difficulty: a numeric column (``n_ops``, MATH ``level``, ``question_length``) or ``length:COLUMN``
  (characters of a text column, e.g. ``length:solution``). The table gets a ``measure`` column;
  ``difficulty`` stays the IRT difficulty. Ties are broken by item_id, so a measure with fewer distinct
  values than bins splits a value across bins (the log says how many distinct values there are).
* ``--by zero_shot:<model slug>`` with ``--measure-table`` (from ``crossdiff zero-shot-measure``): bin
  by the base model's own zero-shot error (``measure = 1 - correct``); its ties are broken by IRT
  difficulty, then item_id (:mod:`crossdiff.evaluate.zero_shot`).
* ``--by loss:<model slug>`` with ``--measure-table`` (from ``crossdiff loss-measure``): bin by the base
  model's mean NLL of each item's training target (:mod:`crossdiff.evaluate.loss_measure`); ties as for
  the zero-shot measure.
* ``--by published`` with ``--measure-table`` (from ``crossdiff published-difficulty``): bin by the
  authors' published difficulty, ``--rule equal`` (equal-size bins, ties by IRT difficulty, then item_id)
  or ``--rule quantile`` (their ``b/n <= q < (b+1)/n`` rule, :mod:`crossdiff.bins.published`).
* ``--no-irt`` (``responses.source: none``): ``--items`` is the item table itself (no IRT fit); the bins come
  from the measure alone (``--by`` a column, ``length:COLUMN``, or a measure table such as
  ``length_tokens:COLUMN``), ties by item_id, and ``difficulty`` is that measure (the only difficulty there is).
* ``--holdout-fraction F`` (``bins.holdout_fraction``): a seeded ``heldout`` column per bin
  (:func:`crossdiff.bins.holdout.holdout_split`): training uses the other items, evaluation the held-out ones.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from crossdiff.bins.holdout import holdout_split
from crossdiff.bins.measures import parse as parse_measure
from crossdiff.bins.published import quantile_bins
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_csv, write_parquet


def bin_sizes(n_items: int, n_bins: int) -> list[int]:
    base, extra = divmod(n_items, n_bins)
    return [base + (1 if b < extra else 0) for b in range(n_bins)]


def make_bins(items: pl.DataFrame, n_bins: int, path="item table", key: str = "difficulty",
              tiebreak: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Equal-size bins by ``key`` (``difficulty``, or ``measure`` after :func:`add_measure`).

    Ties of ``key`` are broken by the ``tiebreak`` columns, then item_id.
    """
    require_columns(items, ["item_id", "difficulty"], path, "IRT item table")
    if key != "difficulty":
        return _bins_by(items, n_bins, path, key, tiebreak)
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


def cut_bins(items: pl.DataFrame, cuts, path="item table", key: str = "difficulty",
             what: str = "bins.cutoffs") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bins at given values of ``key`` (Hase et al. 2024's levels, allenai/easy-to-hard-generalization
    utils/data_utils.py:910-920, main.py:433-447): bin 0 = ``x <= cuts[0]``, else bin k = ``x >= cuts[-1]``,
    else the bin i with ``cuts[i-1] < x <= cuts[i]``; ties at a cut go to the outer bins, as theirs.
    Sizes follow the data; an empty bin stops with the values that left it empty."""
    require_columns(items, ["item_id", key], path, "item table")
    cuts = [float(c) for c in cuts]
    x = items[key].cast(pl.Float64).to_numpy()
    if np.isnan(x).any():
        bad = items.filter(pl.col(key).is_nan() | pl.col(key).is_null())["item_id"][0]
        raise CrossdiffError(f"{path}: item {bad!r} has no {key}; expected a number for every item")
    k = len(cuts)
    labels = np.where(x <= cuts[0], 0, np.where(x >= cuts[-1], k, np.searchsorted(cuts, x, side="left")))
    table = items.with_columns(pl.col("item_id").cast(pl.Utf8), pl.Series("bin", labels.astype(np.int32), dtype=pl.Int32))
    keep = [c for c in ("item_id", "difficulty", "accuracy", key) if c in table.columns] + ["bin"]
    table = table.select(list(dict.fromkeys(keep))).sort([key, "item_id"])
    rows = []
    for b in range(k + 1):
        part = table.filter(pl.col("bin") == b)
        if part.height == 0:
            lo = "-inf" if b == 0 else f"{cuts[b - 1]:g}"
            hi = "inf" if b == k else f"{cuts[b]:g}"
            raise CrossdiffError(f"{path}: bin {b} ({key} in {lo}..{hi}) is empty under {what} "
                                 f"{[round(c, 6) for c in cuts]} (values {x.min():g}..{x.max():g}); use fewer bins "
                                 "or other cuts")
        m, d = part[key].to_numpy(), part["difficulty"].to_numpy()
        rows.append({"bin": b, "size": part.height, f"{key}_min": float(m.min()), f"{key}_max": float(m.max()),
                     f"{key}_mean": float(np.mean(m)), "difficulty_mean": float(np.mean(d))})
    summary = pl.DataFrame(rows).with_columns(pl.col("bin").cast(pl.Int32), pl.col("size").cast(pl.UInt32))
    return table, summary


def quantile_cuts(items: pl.DataFrame, key: str, edges) -> list[float]:
    """The measure's values at quantile levels ``edges`` (numpy's default linear interpolation, as Hase et al.'s
    ``np.quantile(hardness_scores, [.3, .7])``)."""
    return [float(v) for v in np.quantile(items[key].cast(pl.Float64).to_numpy(), list(edges))]


def add_measure(irt_items: pl.DataFrame, item_table: pl.DataFrame, by: str, path="item table") -> pl.DataFrame:
    """IRT items joined with a ``measure`` column taken from the item table (see the module doc)."""
    column = by.split(":", 1)[1] if by.startswith("length:") else by
    require_columns(item_table, ["item_id", column], path, f"item table (bins.by = {by!r})")
    col = pl.col(column)
    if by.startswith("length:"):
        col = col.cast(pl.Utf8).str.len_chars()
    elif not item_table.schema[column].is_numeric():
        raise CrossdiffError(
            f"{path}: bins.by = {by!r}: column {column!r} is {item_table.schema[column]}, expected numbers "
            f"(use 'length:{column}' to bin by its length)"
        )
    m = item_table.select(pl.col("item_id").cast(pl.Utf8), col.cast(pl.Float64).alias("measure"))
    out = irt_items.with_columns(pl.col("item_id").cast(pl.Utf8)).join(m, on="item_id", how="left")
    bad = out.filter(pl.col("measure").is_null() | pl.col("measure").is_nan())
    if bad.height:
        raise CrossdiffError(
            f"{path}: bins.by = {by!r}: {bad.height} item(s) have no value, e.g. {bad['item_id'][:3].to_list()}; "
            "expected a number for every item of the IRT table"
        )
    return out


def _bins_by(items: pl.DataFrame, n_bins: int, path, key: str, tiebreak=()) -> tuple[pl.DataFrame, pl.DataFrame]:
    if items.height < n_bins:
        raise CrossdiffError(f"{path}: {items.height} items cannot fill {n_bins} bins; expected at least n_bins items")
    ordered = items.with_columns(pl.col("item_id").cast(pl.Utf8)).sort([key, *tiebreak, "item_id"])
    sizes = bin_sizes(ordered.height, n_bins)
    keep = [c for c in ("item_id", "difficulty", "accuracy", key) if c in ordered.columns]
    table = ordered.select(keep).with_columns(pl.Series("bin", np.repeat(np.arange(n_bins), sizes), dtype=pl.Int32))
    rows = []
    for b, (start, size) in enumerate(zip(np.cumsum([0] + sizes[:-1]), sizes)):
        part = table.slice(int(start), size)
        m, d = part[key].to_numpy(), part["difficulty"].to_numpy()
        rows.append({"bin": b, "size": part.height, f"{key}_min": float(m.min()), f"{key}_max": float(m.max()),
                     f"{key}_mean": float(np.mean(m)), "difficulty_mean": float(np.mean(d))})
    summary = pl.DataFrame(rows).with_columns(pl.col("bin").cast(pl.Int32), pl.col("size").cast(pl.UInt32))
    return table, summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="IRT item table (parquet); with --no-irt the item table")
    p.add_argument("--no-irt", action="store_true",
                   help="no IRT fit (responses.source none): bin the item table by --by alone; difficulty = the measure")
    p.add_argument("--n-bins", type=int, required=True)
    p.add_argument("--by", default="irt", help="'irt' (default) or an item-table column / length:COLUMN (needs --item-table)")
    p.add_argument("--item-table", help="item table holding the --by column")
    p.add_argument("--measure-table", help="--by zero_shot:<slug> / loss:<slug>: per-item table from 'crossdiff zero-shot-measure' / 'loss-measure'")
    p.add_argument("--rule", choices=("equal", "quantile"), default="equal",
                   help="--by published: equal-size bins or the authors' quantile rule")
    p.add_argument("--holdout-fraction", type=float, default=0.0, help="share of each bin held out for evaluation (0: none)")
    p.add_argument("--holdout-seed", type=int, default=0)
    p.add_argument("--edges", type=float, nargs="+", help="bins.scheme quantiles: cut at these quantile levels of the measure")
    p.add_argument("--cutoffs", type=float, nargs="+", help="datasets.<name>.bins.cutoffs: cut at these values of the measure")
    p.add_argument("--min-train-items", type=int, default=0,
                   help="stop unless every bin has at least this many training items (study.icl.k: the demonstrations "
                        "drawn from a bin; without held-out items a bin's own test item is left out of its draw, so one more)")
    p.add_argument("--output", required=True, help="item_id -> bin table (parquet)")
    p.add_argument("--summary", required=True, help="per-bin summary (CSV)")


def run(args: argparse.Namespace) -> None:
    if args.no_irt:
        if args.by in ("irt", "published"):
            raise CrossdiffError(f"bins.by = {args.by!r} needs an IRT fit, but this dataset has no responses "
                                 "(responses.source: none); bin by an item column, length:COLUMN or length_tokens:COLUMN")
        items = read_table(args.items, "item table")
        require_columns(items, ["item_id"], args.items, "item table")
        items = items.select(pl.col("item_id").cast(pl.Utf8), pl.lit(0.0).alias("difficulty"))
        args.item_table = args.item_table or args.items
    else:
        items = read_table(args.items, "IRT item table")
    key, tiebreak = "difficulty", ()
    table_measure = parse_measure(args.by)
    if table_measure is not None:  # a measure with its own job (crossdiff.bins.measures): its per-item table
        m = table_measure[0]
        if not args.measure_table:
            raise CrossdiffError(f"bins.by = {args.by!r} needs the per-item table of rule {m.rule} (--measure-table)")
        items = add_measure(items, read_table(args.measure_table, f"{m.prefix} measure table"), "measure", args.measure_table)
        key, tiebreak = "measure", ("difficulty",)  # ties (a 0/1 zero-shot error) in IRT order, then item_id
        print(f"binning by {args.by!r} ({m.about}): {items['measure'].n_unique()} distinct values, mean "
              f"{items['measure'].mean():.3f}; ties by IRT difficulty")
    elif args.by == "published":
        if not args.measure_table:
            raise CrossdiffError("bins.by = 'published' needs the matched table from 'crossdiff published-difficulty' (--measure-table)")
        pub = read_table(args.measure_table, "published difficulty table")
        require_columns(pub, ["item_id", "measure"], args.measure_table, "published difficulty table")
        items = items.with_columns(pl.col("item_id").cast(pl.Utf8)).join(
            pub.select(pl.col("item_id").cast(pl.Utf8), "measure"), on="item_id", how="inner")
        key, tiebreak = "measure", ("difficulty",)
        print(f"binning {items.height} items by their published difficulty, rule {args.rule!r}")
    elif args.by != "irt":
        if not args.item_table:
            raise CrossdiffError(f"bins.by = {args.by!r} needs the dataset's item table (--item-table); this dataset has none")
        items = add_measure(items, read_table(args.item_table, "item table"), args.by, args.item_table)
        key = "measure"
        print(f"binning by {args.by!r}: {items['measure'].n_unique()} distinct values for {args.n_bins} bins")
    if args.no_irt:  # the measure is the difficulty: the bins table's difficulty column says so
        items = items.with_columns(pl.col("measure").alias("difficulty"))
        tiebreak = ()
    if args.cutoffs or args.edges:
        cuts = args.cutoffs or quantile_cuts(items, key, args.edges)
        what = "datasets.<name>.bins.cutoffs" if args.cutoffs else f"bins.edges {args.edges} (quantiles)"
        if len(cuts) + 1 != args.n_bins:
            raise CrossdiffError(f"{what}: {len(cuts)} cut(s) make {len(cuts) + 1} bins, not --n-bins {args.n_bins}")
        table, summary = cut_bins(items, cuts, args.items, key, what)
        print(f"bins cut at {key} = {[round(c, 6) for c in cuts]} ({what}): sizes {summary['size'].to_list()}")
    elif args.by == "published" and args.rule == "quantile":
        table, summary = quantile_bins(items, args.n_bins, args.measure_table)
    else:
        table, summary = make_bins(items, args.n_bins, args.items, key=key, tiebreak=tiebreak)
    if args.holdout_fraction > 0:
        table = holdout_split(table, args.holdout_fraction, args.holdout_seed)
        held = table.group_by("bin").agg(pl.col("heldout").sum().alias("n_heldout")).sort("bin")
        summary = summary.join(held.with_columns(pl.col("bin").cast(pl.Int32), pl.col("n_heldout").cast(pl.UInt32)), on="bin")
    check_train_items(table, args.min_train_items, args.items)
    write_csv(summary, args.summary)
    write_parquet(table, args.output)
    print(summary)


def check_train_items(table: pl.DataFrame, k: int, where) -> None:
    """ICL draws k demonstrations from each train bin's training items (study.icl.k): stop here, before any
    model loads, when a bin holds too few (without held-out items a bin's own test item is left out)."""
    if not k:
        return
    held = "heldout" in table.columns
    train = table.filter(~pl.col("heldout")) if held else table
    counts = {int(b): int(n) for b, n in train.group_by("bin").len().iter_rows()}
    need = k if held else k + 1
    short = {b: n for b, n in sorted(counts.items()) if n < need}
    if short:
        raise CrossdiffError(
            f"{where}: study.icl.k = {k} needs {need} training item(s) in every bin"
            + ("" if held else " (k demonstrations + the test item itself, left out of its own bin's draw)")
            + f"; bin(s) {', '.join(f'{b} ({n})' for b, n in short.items())} hold fewer: lower study.icl.k or use "
            "fewer bins (bins.n_bins)")
