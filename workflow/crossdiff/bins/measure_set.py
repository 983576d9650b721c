"""Several difficulty measures side by side: ``datasets.<name>.bins.measures``.

Each entry is any ``bins.by`` value but ``irt`` and ``published``: an item-table column (numeric), ``length:COLUMN``
(characters of a text column) or a measure with a job of its own (``zero_shot:``, ``loss:``, ``answer_prob:``,
``question_prob:`` + a model slug; :mod:`crossdiff.bins.measures`). Every entry is computed (its table rule when it
has one: :func:`crossdiff.bins.measures.extra_table_path`) and shown beside IRT difficulty and ``bins.by``:

- the Spearman figure (``plot-difficulty --figure spearman``) gets one column per entry (named by the entry; item
  numeric columns are there anyway);
- the agreement table (``bin-agreement``) gets one row per measure: ``bins.by``'s (when it is not ``irt``) and each
  entry's, each with the columns of :func:`crossdiff.bins.agreement.agreement` plus ``spearman_measure_by``
  (Spearman with ``bins.by``'s measure; empty when the bins are IRT's). An entry's own bins are cut as ``bins.by``
  would cut them (equal-size by rank, ties as :mod:`crossdiff.bins.make` breaks them: a column by item_id, a
  table measure by IRT difficulty then item_id; with ``bins.scheme: quantiles`` at its ``edges``), except that
  ``datasets.<name>.bins.cutoffs`` (values of ``bins.by``'s measure) are not applied to other measures: those are
  binned equal-size. The figure has one row of panels per measure (scatter against IRT difficulty, bin cross table).

Which measure cuts the study's bins does not change: ``bins.by`` alone.
"""

from __future__ import annotations

import polars as pl

from crossdiff.bins import measures as table_measures
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns


# ---------------------------------------------------------------------------------------------- parse time
def entries(dataset: dict) -> list[str]:
    return list((dataset.get("bins") or {}).get("measures") or [])


def column_of(spec: str) -> str | None:
    """The item-table column an entry reads (``length:COL`` -> COL, a bare column name -> itself), else None."""
    if spec.startswith("length:"):
        return spec.split(":", 1)[1]
    return None if ":" in spec else spec


def known_columns(items: dict) -> set[str] | None:
    """The item table's columns where they are known before any job (generated items, the adapters that
    declare them, a local parquet item table), else None."""
    from crossdiff.items import hase

    src = items.get("source")
    if src == "synthetic":
        from crossdiff.items.synthetic import generate_items

        return set(generate_items(2, 0, max_ops=1, max_digits=1).columns)
    if src == "hub":
        base = {"item_id", "question", "answer", "choices"} | ({"model_solution"} if items.get("solutions") else set())
        if items.get("adapter") in hase.COLUMNS:
            return base | set(hase.COLUMNS[items["adapter"]])
        if items.get("adapter") == "gsm8k":
            return base - {"choices"} | {"solution", "n_steps", "n_calculations", "question_words",
                                         "question_length"} | set(hase.GSM8K_COLUMNS)
        return None
    if src == "file" and str(items.get("path", "")).endswith(".parquet"):
        try:
            return set(pl.read_parquet_schema(items["path"]))
        except Exception:  # noqa: BLE001 - a missing or unreadable file is named by its own job
            return None
    if src == "none":
        return set()
    return None


def spec_problems(name: str, dataset: dict, models) -> list[str]:
    """Problems of ``datasets.<name>.bins.measures`` that can be found at parse: unknown measure or model slug,
    a column the item table does not have (where its columns are known), repeats, ``irt``/``published``/``by``."""
    problems = []
    by = dataset["bins"]["by"]
    seen = set()
    cols = None
    for i, spec in enumerate(entries(dataset)):
        key = f"datasets.{name}.bins.measures[{i}] = {spec!r}"
        if spec in seen:
            problems.append(f"{key}: listed twice")
            continue
        seen.add(spec)
        if spec == by:
            problems.append(f"{key}: that is bins.by, shown already; list only other measures")
        elif spec in ("irt", "published"):
            problems.append(f"{key}: {'IRT difficulty is always shown' if spec == 'irt' else 'published is a bins.by value only (it needs bins.published)'}")
        elif table_measures.parse(spec) is not None:
            m, slug = table_measures.parse(spec)
            if m.argument == "column":  # length_tokens: a bins.by value only (issue 28)
                problems.append(f"{key}: {m.prefix}:<column> is a bins.by value only; list length:<column> "
                                f"(characters) here")
            elif slug not in models:
                problems.append(f"{key}: no model with slug {slug!r}; expected {m.prefix}:<slug> of one of models: "
                                f"{sorted(models) or '(none configured)'}")
        elif column_of(spec) is None:
            prefixes = ["length"] + sorted(table_measures.MEASURES)
            problems.append(f"{key}: unknown measure {spec.split(':', 1)[0]!r}; expected an item-table column or one "
                            f"of {', '.join(p + ':' for p in prefixes)}")
        else:
            column = column_of(spec)
            if cols is None:
                cols = known_columns(dataset["items"])
            if dataset["items"]["source"] == "none":
                problems.append(f"{key}: reads the item table, but items.source is none")
            elif not column:
                problems.append(f"{key}: no column named")
            elif cols is not None and column not in cols:
                problems.append(f"{key}: the item table has no column {column!r}; its columns: {sorted(cols)}")
    return problems


# ---------------------------------------------------------------------------------------------- job time
def column_values(item_table: pl.DataFrame, spec: str, path="item table") -> pl.DataFrame:
    """(item_id, measure) of a column entry: a numeric column, or ``length:COL`` (characters)."""
    column = column_of(spec)
    require_columns(item_table, ["item_id", column], path, f"item table (bins.measures {spec!r})")
    col = pl.col(column)
    if spec.startswith("length:"):
        col = col.cast(pl.Utf8).str.len_chars()
    elif not item_table.schema[column].is_numeric():
        raise CrossdiffError(f"{path}: bins.measures {spec!r}: column {column!r} is {item_table.schema[column]}, "
                             f"expected numbers (use 'length:{column}' for its length)")
    return item_table.select(pl.col("item_id").cast(pl.Utf8), col.cast(pl.Float64).alias("measure"))


def table_values(path, spec: str) -> pl.DataFrame:
    m = read_table(path, f"{spec} measure table")
    require_columns(m, ["item_id", "measure"], path, f"{spec} measure table")
    return m.select(pl.col("item_id").cast(pl.Utf8), pl.col("measure").cast(pl.Float64))


def bins_of(irt: pl.DataFrame, values: pl.DataFrame, spec: str, n_bins: int, edges=None, where="") -> pl.DataFrame:
    """An entry's own bins table (item_id, difficulty, measure, bin), cut as bins.by would cut it (module doc)."""
    from crossdiff.bins.make import cut_bins, make_bins, quantile_cuts

    joined = irt.select(pl.col("item_id").cast(pl.Utf8), "difficulty").join(values, on="item_id", how="left")
    bad = joined.filter(pl.col("measure").is_null() | pl.col("measure").is_nan())
    if bad.height:
        raise CrossdiffError(f"{where}: bins.measures {spec!r}: {bad.height} item(s) of the IRT table have no value, "
                             f"e.g. {bad['item_id'][:3].to_list()}; expected a number for every item")
    if edges:
        table, _ = cut_bins(joined, quantile_cuts(joined, "measure", edges), where, "measure",
                            f"bins.edges {list(edges)} (quantiles of {spec})")
        return table
    tiebreak = ("difficulty",) if table_measures.parse(spec) else ()
    table, _ = make_bins(joined, n_bins, where, key="measure", tiebreak=tiebreak)
    return table


def extra_values(extra: list[tuple[str, str]], items_path=None) -> dict[str, pl.DataFrame]:
    """The entries given to a CLI, in order: ``("table", "SPEC=TABLE")`` (``--measure``: a table measure) and
    ``("column", "SPEC")`` (``--column``: read from the item table ``items_path``)."""
    out: dict[str, pl.DataFrame] = {}
    items = None
    for kind, spec in extra:
        if kind == "table":
            name, _, path = spec.partition("=")
            if not path:
                raise CrossdiffError(f"--measure {spec!r}: expected NAME=TABLE")
            out[name] = table_values(path, name)
            continue
        if items is None:
            if not items_path:
                raise CrossdiffError(f"--column {spec!r} needs the item table (--items)")
            items = read_table(items_path, "item table")
        out[spec] = column_values(items, spec, items_path)
    return out
