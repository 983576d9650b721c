"""The authors' published difficulties as the binning measure (``datasets.<name>.bins.by: published``).

The authors of the paper released one difficulty table per benchmark (HF dataset
``BatsResearch/Cross-Difficulty``, one config per benchmark, a single ``train`` split; their code loads
it as ``Yeganeh/Cross-Difficulty``) with the benchmark's own fields plus ``1pl_diff`` and
``1pl_quantile`` (an earlier revision also ``4pl_diff``, ``4pl_disc``, ``4pl_lambdas``). This module
reads such a table -- from the hub (``datasets.load_dataset``) or a local CSV/TSV/parquet/JSONL file in
the same schema -- takes one numeric ``column`` from it and matches its rows to crossdiff's items:

* ``match: id``: the table's ``key`` column equals crossdiff's ``item_id`` (as text);
* ``match: question``: the table's ``key`` column (e.g. ``question``) equals the item table's
  ``question`` (surrounding whitespace ignored).

Items of the IRT table without a published value are listed and are an error unless
``allow_unmatched: true`` (they are then dropped from the bins, and the log names them). Rows of the
published table matching no item are only counted (the card covers whole benchmarks). A key that
occurs twice in the published table is an error (the match would be ambiguous).

Output (``crossdiff published-difficulty``): ``item_id``, ``measure`` (the published value), and
``published_key``. ``crossdiff make-bins --by published`` then bins by ``measure`` with either rule:

* ``rule: equal``: crossdiff's equal-size bins (ties by IRT difficulty, then item_id);
* ``rule: quantile``: the authors' rule, bin b holds ``b/n <= q < (b+1)/n`` and the top bin is closed
  (``q = 1`` is in bin n-1), as their training code does (``train/utils.py``, upper edge 1 -> 1.01).
  The column must hold quantiles in [0, 1]; bins may differ in size, an empty bin is an error.

The agreement table and figure (``crossdiff bin-agreement``) then compare crossdiff's own IRT
difficulty with the authors' value (Spearman, same-bin share, cross table).
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet

RULES = ("equal", "quantile")


def describe(spec: dict) -> str:
    if spec.get("source") == "hub":
        return f"hub dataset {spec.get('hub_id')!r} (config {spec.get('config')!r}, split {spec.get('split', 'train')!r})"
    return f"published table {spec.get('path')!r}"


def load_published(spec: dict) -> pl.DataFrame:
    """The published table as polars: a local file (``source: file``) or a hub dataset (``source: hub``)."""
    source = spec.get("source", "file")
    if source == "file":
        if not spec.get("path"):
            raise CrossdiffError("bins.published.path is required for source: file")
        return read_table(spec["path"], "published difficulty table")
    if source != "hub":
        raise CrossdiffError(f"bins.published.source = {source!r}; expected 'file' or 'hub'")
    if not spec.get("hub_id"):
        raise CrossdiffError("bins.published.hub_id is required for source: hub")
    import datasets

    try:
        ds = datasets.load_dataset(spec["hub_id"], spec.get("config"), split=spec.get("split", "train"),
                                   revision=spec.get("revision"))
    except Exception as exc:  # offline, gated, unknown config: name what was asked for
        raise CrossdiffError(f"could not load {describe(spec)}: {type(exc).__name__}: {exc}") from exc
    return pl.from_arrow(ds.data.table)


def match_published(irt_items: pl.DataFrame, table: pl.DataFrame, spec: dict, item_table: pl.DataFrame | None = None,
                    where: str = "published table") -> tuple[pl.DataFrame, list[str]]:
    """``item_id, measure, published_key`` for every matched IRT item, and the unmatched item ids."""
    column, key, how = spec.get("column", "1pl_quantile"), spec.get("key", "id"), spec.get("match", "id")
    require_columns(table, [key, column], where, f"published difficulty table (key {key!r}, column {column!r})")
    if not table.schema[column].is_numeric():
        raise CrossdiffError(f"{where}: column {column!r} is {table.schema[column]}; expected numbers")
    pub = table.select(pl.col(key).cast(pl.Utf8).str.strip_chars().alias("published_key"),
                       pl.col(column).cast(pl.Float64).alias("measure"))
    dup = pub.filter(pl.col("published_key").is_duplicated())
    if dup.height:
        raise CrossdiffError(f"{where}: key {key!r} is not unique, e.g. {dup['published_key'].unique()[:3].to_list()}; "
                             "expected one row per item")
    items = irt_items.select(pl.col("item_id").cast(pl.Utf8))
    if how == "id":
        items = items.with_columns(pl.col("item_id").alias("published_key"))
    elif how == "question":
        if item_table is None:
            raise CrossdiffError("bins.published.match = 'question' needs the dataset's item table (a question column)")
        require_columns(item_table, ["item_id", "question"], "item table", "item table (bins.published.match: question)")
        q = item_table.select(pl.col("item_id").cast(pl.Utf8), pl.col("question").cast(pl.Utf8).str.strip_chars()
                              .alias("published_key"))
        items = items.join(q, on="item_id", how="left")
    else:
        raise CrossdiffError(f"bins.published.match = {how!r}; expected 'id' or 'question'")
    out = items.join(pub, on="published_key", how="left")
    missing = out.filter(pl.col("measure").is_null() | pl.col("measure").is_nan())
    return out.filter(~pl.col("item_id").is_in(missing["item_id"].implode())), missing["item_id"].to_list()


def quantile_bin(q: np.ndarray, n_bins: int) -> np.ndarray:
    """The authors' rule: bin b holds ``b/n <= q < (b+1)/n``; the top bin is closed (q = 1 -> n-1).

    The edges are the same float divisions ``b / n`` their code compares with, so a quantile on an edge
    (0.1, 0.9, ...) lands in the same bin as theirs.
    """
    q = np.asarray(q, dtype=float)
    bad = ~np.isfinite(q) | (q < 0) | (q > 1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} value(s) outside [0, 1], e.g. {q[bad][:3].tolist()}; rule 'quantile' "
                         "needs quantiles (use rule: equal for a raw difficulty such as 1pl_diff)")
    edges = np.array([b / n_bins for b in range(n_bins)])
    return np.searchsorted(edges, q, side="right") - 1


def quantile_bins(items: pl.DataFrame, n_bins: int, path="bins") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bins of ``items`` (item_id, difficulty, measure[, accuracy]) by the authors' quantile rule."""
    try:
        labels = quantile_bin(items["measure"].to_numpy(), n_bins)
    except ValueError as exc:
        raise CrossdiffError(f"{path}: {exc}") from exc
    keep = [c for c in ("item_id", "difficulty", "accuracy", "measure") if c in items.columns]
    table = (items.select(keep).with_columns(pl.Series("bin", labels, dtype=pl.Int32))
             .sort(["bin", "measure", "difficulty", "item_id"]))
    rows = []
    for b in range(n_bins):
        part = table.filter(pl.col("bin") == b)
        if part.height == 0:
            raise CrossdiffError(f"{path}: no item has a published quantile in bin {b} "
                                 f"[{b / n_bins:g}, {(b + 1) / n_bins:g}); expected every bin filled")
        m, d = part["measure"].to_numpy(), part["difficulty"].to_numpy()
        rows.append({"bin": b, "size": part.height, "measure_min": float(m.min()), "measure_max": float(m.max()),
                     "measure_mean": float(np.mean(m)), "difficulty_mean": float(np.mean(d))})
    summary = pl.DataFrame(rows).with_columns(pl.col("bin").cast(pl.Int32), pl.col("size").cast(pl.UInt32))
    return table, summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=json_arg, required=True, help="JSON: datasets.<name>.bins.published")
    p.add_argument("--irt-items", required=True, help="IRT item table (parquet)")
    p.add_argument("--item-table", help="item table (needed for match: question)")
    p.add_argument("--output", required=True, help="item_id, measure, published_key (parquet)")


def run(args: argparse.Namespace) -> None:
    spec = args.spec
    irt = read_table(args.irt_items, "IRT item table")
    require_columns(irt, ["item_id"], args.irt_items, "IRT item table")
    table = load_published(spec)
    item_table = read_table(args.item_table, "item table") if args.item_table else None
    where = describe(spec)
    matched, missing = match_published(irt, table, spec, item_table, where)
    print(f"{where}: {matched.height} of {irt.height} items matched by {spec.get('match', 'id')}; "
          f"{table.height - matched.height} published rows match no item")
    if missing:
        listed = ", ".join(map(repr, missing[:20])) + (" ..." if len(missing) > 20 else "")
        if not spec.get("allow_unmatched", False):
            raise CrossdiffError(f"{where}: {len(missing)} item(s) have no published {spec.get('column', '1pl_quantile')!r}: "
                                 f"{listed}; set bins.published.allow_unmatched: true to drop them")
        print(f"dropping {len(missing)} unmatched item(s): {listed}")
    write_parquet(matched.sort("item_id"), args.output)
