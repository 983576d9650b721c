"""The authors' published difficulties as the binning measure (``datasets.<name>.bins.by: published``).

The authors of the paper released one difficulty table per benchmark (HF dataset
``BatsResearch/Cross-Difficulty``, one config per benchmark, a single ``train`` split; their code loads
it as ``Yeganeh/Cross-Difficulty``) with the benchmark's own fields plus ``1pl_diff`` and
``1pl_quantile`` (an earlier revision also ``4pl_diff``, ``4pl_disc``, ``4pl_lambdas``). This module
reads such a table -- from the hub (``datasets.load_dataset``) or a local CSV/TSV/parquet/JSONL file in
the same schema -- takes one numeric ``column`` from it and matches its rows to crossdiff's items:

* ``match: id``: the table's ``key`` column (default ``id``) equals crossdiff's ``item_id`` (as text);
* ``match: question``: the table's ``key`` column (default ``question``) equals the item table's
  ``question``, whitespace runs collapsed. This is how the card's rows meet an adapter's items: the
  card's ``id`` is the benchmark's native id (ARC: ``Mercury_7175875``), while crossdiff's item ids are
  the leaderboard's doc ids (row positions). A question text that several items share, or several
  published rows share (ARC's twin stems: the same question with other options), is told apart by the
  options when both sides carry them (the item table's ``choices``, the card's ``choices.text`` or
  ``options``); twins that still cannot be told apart get no value (never one picked at random): they are
  listed as unmatched with the reason.

Items of the IRT table without a published value are listed and are an error unless
``allow_unmatched: true`` (they are then dropped from the bins, and the log names them with the
reason). Rows of the published table matching no item are only counted (the card covers whole
benchmarks; its ARC config holds 1,170 rows for the leaderboard's 1,172 ARC-Challenge items, so ARC
needs ``allow_unmatched: true``). Under ``match: id`` a key that occurs twice in the published table is
an error (the match would be ambiguous). A value of +-inf is an error naming the rows; an empty value
(null/NaN) is "no published value".

The documented example (config/README.md), ARC by question text::

    bins: {by: published, published: {source: hub, hub_id: BatsResearch/Cross-Difficulty, config: arc,
                                       column: 1pl_quantile, match: question, allow_unmatched: true}}

:func:`spec_problems` holds the checks that need no file (a ``file`` source without ``path``, a path
Snakemake would read as a wildcard, ...), for the workflow to run when it parses the config.

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
import json
import math

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet

RULES = ("equal", "quantile")


MATCHES = ("id", "question")


def key_of(spec: dict) -> str:
    """The published column matched: ``key`` when given, else ``id`` (match: id) or ``question`` (match: question)."""
    return spec.get("key") or ("question" if spec.get("match", "id") == "question" else "id")


def spec_problems(name: str, dataset: dict) -> list[str]:
    """Problems of ``datasets.<name>.bins.published`` that need no file (cheap, pure: for the parse-time checks).

    ``dataset`` is the validated ``datasets.<name>`` entry; an empty list when ``bins.by`` is not ``published``."""
    bins = dataset.get("bins") or {}
    if bins.get("by") != "published":
        return []
    where = f"datasets.{name}.bins.published"
    spec = bins.get("published")
    if not spec:
        return [f"datasets.{name}.bins.by = 'published' needs {where} (source: file with path, or source: hub "
                "with hub_id and config; column, match, rule)"]
    problems = []
    source = spec.get("source", "file")
    if source == "file":
        path = spec.get("path")
        if not path:
            problems.append(f"{where}.path: required with source: file (a CSV/TSV/parquet/JSONL file in the card's "
                            f"schema); or source: hub with hub_id: BatsResearch/Cross-Difficulty and config")
        elif "{" in str(path) or "}" in str(path):
            problems.append(f"{where}.path: {path!r} holds '{{' or '}}', which Snakemake reads as a wildcard in an "
                            f"input path; rename the file or folder")
    elif source == "hub":
        if not spec.get("hub_id"):
            problems.append(f"{where}.hub_id: required with source: hub (e.g. BatsResearch/Cross-Difficulty)")
    else:
        problems.append(f"{where}.source = {source!r}; expected 'file' or 'hub'")
    if spec.get("match", "id") not in MATCHES:
        problems.append(f"{where}.match = {spec.get('match')!r}; expected one of {list(MATCHES)}")
    elif spec.get("match") == "question" and (dataset.get("items") or {}).get("source") == "none":
        problems.append(f"{where}.match = 'question' needs an item table (a question column); items.source is none")
    if spec.get("rule", "quantile") not in RULES:
        problems.append(f"{where}.rule = {spec.get('rule')!r}; expected one of {list(RULES)}")
    return problems


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


def _text(value) -> str:
    """Question text for matching: surrounding whitespace dropped, inner whitespace runs collapsed."""
    return " ".join(str(value).split())


def _options(value) -> tuple[str, ...] | None:
    """An item's or a card row's options as a tuple of normalised texts (None when absent): a JSON list
    (the item table's ``choices``), a list, or a struct with ``text`` (the card's ARC ``choices``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, (list, tuple)):
        return tuple(_text(v) for v in value)
    return None


def _infinite_rows(table: pl.DataFrame, column: str, key: str, where: str) -> None:
    values = table[column].cast(pl.Float64)
    bad = [i for i, v in enumerate(values.to_list()) if v is not None and math.isinf(v)]
    if bad:
        keys = table[key].cast(pl.Utf8).to_list()
        listed = ", ".join(f"row {i} ({key} {keys[i]!r}: {values[i]})" for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise CrossdiffError(f"{where}: column {column!r} holds {len(bad)} infinite value(s): {listed}; expected finite "
                             f"numbers (an empty cell means no published value)")


def match_items(irt_items: pl.DataFrame, table: pl.DataFrame, spec: dict, item_table: pl.DataFrame | None = None,
                where: str = "published table") -> tuple[pl.DataFrame, dict[str, str]]:
    """``item_id, measure, published_key`` for every matched IRT item, and {unmatched item id: reason}."""
    column, key, how = spec.get("column", "1pl_quantile"), key_of(spec), spec.get("match", "id")
    if how not in MATCHES:
        raise CrossdiffError(f"bins.published.match = {how!r}; expected 'id' or 'question'")
    require_columns(table, [key, column], where, f"published difficulty table (key {key!r}, column {column!r})")
    if not table.schema[column].is_numeric():
        raise CrossdiffError(f"{where}: column {column!r} is {table.schema[column]}; expected numbers")
    _infinite_rows(table, column, key, where)
    keys = table[key].cast(pl.Utf8).to_list()
    values = [None if v is None or math.isnan(v) else float(v) for v in table[column].cast(pl.Float64).to_list()]
    ids = irt_items["item_id"].cast(pl.Utf8).to_list()
    matched: dict[str, tuple[float | None, str]] = {}
    missing: dict[str, str] = {}
    if how == "id":
        norm = [None if k is None else k.strip() for k in keys]
        dup = sorted({k for k in norm if k is not None and norm.count(k) > 1})
        if dup:
            raise CrossdiffError(f"{where}: key {key!r} is not unique, e.g. {dup[:3]}; expected one row per item")
        by_key = dict(zip(norm, values))
        for iid in ids:
            if iid in by_key:
                matched[iid] = (by_key[iid], iid)
            else:
                missing[iid] = f"no row with {key} {iid!r}"
    else:
        if item_table is None:
            raise CrossdiffError("bins.published.match = 'question' needs the dataset's item table (a question column)")
        require_columns(item_table, ["item_id", "question"], "item table", "item table (bins.published.match: question)")
        item_rows = {str(r["item_id"]): r for r in item_table.to_dicts()}
        opt_col = next((c for c in ("choices", "options") if c in table.columns), None)
        opt_values = table[opt_col].to_list() if opt_col else []
        rows_by_q: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k is not None:
                rows_by_q.setdefault(_text(k), []).append(i)
        items_by_q: dict[str, list[str]] = {}
        for iid in ids:
            row = item_rows.get(iid)
            if row is None or row.get("question") is None:
                missing[iid] = "not in the item table" if row is None else "no question text"
                continue
            items_by_q.setdefault(_text(row["question"]), []).append(iid)
        for q, group in items_by_q.items():
            rows = rows_by_q.get(q, [])
            if not rows:
                for iid in group:
                    missing[iid] = "question not in the published table"
                continue
            if len(group) == 1 and len(rows) == 1:
                matched[group[0]] = (values[rows[0]], q)
                continue
            # twins: the same question on several items and/or several published rows; options tell them apart
            row_opts = {i: _options(opt_values[i]) if opt_col else None for i in rows}
            for iid in group:
                mine = _options(item_rows[iid].get("choices"))
                hits = [i for i in rows if mine is not None and row_opts[i] == mine]
                rivals = [j for j in group if j != iid and mine is not None and _options(item_rows[j].get("choices")) == mine]
                if len(hits) == 1 and not rivals:
                    matched[iid] = (values[hits[0]], q)
                else:
                    missing[iid] = (f"twin question: {len(group)} item(s) ({', '.join(group[:4])}) and {len(rows)} "
                                    f"published row(s) share it, and their options do not tell them apart")
    for iid, (value, _) in list(matched.items()):
        if value is None:
            del matched[iid]
            missing[iid] = f"empty {column!r}"
    out = pl.DataFrame({"item_id": list(matched), "measure": [v for v, _ in matched.values()],
                        "published_key": [k for _, k in matched.values()]},
                       schema={"item_id": pl.Utf8, "measure": pl.Float64, "published_key": pl.Utf8})
    return out, missing


def match_published(irt_items: pl.DataFrame, table: pl.DataFrame, spec: dict, item_table: pl.DataFrame | None = None,
                    where: str = "published table") -> tuple[pl.DataFrame, list[str]]:
    """``item_id, measure, published_key`` for every matched IRT item, and the unmatched item ids."""
    matched, missing = match_items(irt_items, table, spec, item_table, where)
    return matched, list(missing)


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
    matched, missing = match_items(irt, table, spec, item_table, where)
    print(f"{where}: {matched.height} of {irt.height} items matched by {spec.get('match', 'id')} "
          f"({key_of(spec)!r}); {table.height - matched.height} published rows match no item")
    if missing:
        by_reason: dict[str, list[str]] = {}
        for iid, why in missing.items():
            by_reason.setdefault(why, []).append(iid)
        listed = "; ".join(f"{why}: " + ", ".join(map(repr, ids[:20])) + (" ..." if len(ids) > 20 else "")
                           for why, ids in by_reason.items())
        if not spec.get("allow_unmatched", False):
            raise CrossdiffError(f"{where}: {len(missing)} item(s) have no published {spec.get('column', '1pl_quantile')!r} "
                                 f"({listed}); set bins.published.allow_unmatched: true to drop them")
        print(f"dropping {len(missing)} unmatched item(s): {listed}")
    write_parquet(matched.sort("item_id"), args.output)
