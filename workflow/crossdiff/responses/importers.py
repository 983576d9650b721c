"""Readers that turn each supported source into a raw long table (model_id, item_id, correct).

Sources:
- ``simulated``: the simulated leaderboard's parquet (already long).
- ``leaderboard``: the Open LLM Leaderboard collector's parquet (already long; see leaderboard.py).
- ``table``: a user's CSV/TSV/parquet/JSONL, long (one row per model x item) or wide (one row per
  model, one column per item).
- ``lm_eval_samples``: a directory of lm-eval ``--log_samples`` JSONL files, one model per file
  (or per sub-directory, as lm-eval writes them).

Every reader validates correctness values and raises CrossdiffError naming the file, the row and
what was expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import iter_jsonl, read_table, require_columns

ID_COLUMNS = ("model_id", "item_id")


def _binary(df: pl.DataFrame, column: str, path, row_offset: int, row_label: str = "row") -> pl.DataFrame:
    """Cast ``column`` to int8 0/1, erroring on the first value that is not binary (nulls = missing)."""
    col = df[column]
    if col.dtype == pl.Boolean:
        return df.with_columns(col.cast(pl.Int8))
    if col.dtype == pl.Utf8:
        as_num = col.str.strip_chars().str.to_lowercase().replace({"true": "1", "false": "0"}).cast(pl.Float64, strict=False)
        bad = col.is_not_null() & (col.str.strip_chars() != "") & as_num.is_null()
        if bad.any():
            i = int(bad.arg_max())
            raise CrossdiffError(f"{path}: {row_label} {i + row_offset}: {column} = {col[i]!r} is not a correctness "
                                 f"value; expected 0 or 1 (or true/false), empty for missing")
        col = as_num
    elif not col.dtype.is_numeric():
        raise CrossdiffError(f"{path}: column {column!r} has type {col.dtype}; expected 0/1 values")
    values = col.cast(pl.Float64)
    bad = values.is_not_null() & ~values.is_in([0.0, 1.0])
    if bad.any():
        i = int(bad.arg_max())
        raise CrossdiffError(f"{path}: {row_label} {i + row_offset}: {column} = {col[i]!r} is not binary; "
                             f"expected 0 or 1 (set a metric threshold for continuous scores)")
    return df.with_columns(values.cast(pl.Int8).alias(column))


def read_long(path, model_column="model_id", item_column="item_id", correct_column="correct",
              df: pl.DataFrame | None = None) -> pl.DataFrame:
    df = read_table(path, "response table") if df is None else df
    require_columns(df, [model_column, item_column, correct_column], path, "long response table")
    df = df.select(
        pl.col(model_column).cast(pl.Utf8).alias("model_id"),
        pl.col(item_column).cast(pl.Utf8).alias("item_id"),
        pl.col(correct_column).alias("correct"),
    )
    for c in ID_COLUMNS:
        nulls = df[c].is_null()
        if nulls.any():
            raise CrossdiffError(f"{path}: row {int(nulls.arg_max()) + 2}: empty {c}; every row needs a {c}")
    df = _binary(df, "correct", path, row_offset=2)
    return df.drop_nulls("correct")


def read_wide(path, model_column: str | None = None, df: pl.DataFrame | None = None) -> pl.DataFrame:
    df = read_table(path, "response table") if df is None else df
    model_column = model_column if model_column and model_column in df.columns else df.columns[0]
    if df.width < 2:
        raise CrossdiffError(f"{path}: wide response table needs a model column and at least one item column")
    items = [c for c in df.columns if c != model_column]
    long = df.with_columns(pl.col(model_column).cast(pl.Utf8)).unpivot(
        index=model_column, on=items, variable_name="item_id", value_name="correct"
    ).rename({model_column: "model_id"})
    if long["correct"].dtype == pl.Null:
        long = long.with_columns(pl.col("correct").cast(pl.Int8))
    try:
        long = _binary(long, "correct", path, row_offset=0, row_label="cell")
    except CrossdiffError:
        # re-locate the bad cell by model row and item column for a useful message
        for c in items:
            try:
                _binary(df.select(pl.col(c).alias("v")), "v", path, row_offset=2)
            except CrossdiffError as exc:
                row = re.search(r"row (\d+)", str(exc)).group(1)
                value = str(exc).split("= ", 1)[1].split(" is not")[0]
                raise CrossdiffError(f"{path}: row {row} (model {df[model_column][int(row) - 2]!r}), item column {c!r}: "
                                     f"{value} is not binary; expected 0 or 1, empty for missing") from None
        raise
    # duplicate model rows are resolved (or rejected) by the (model, item) check in build.py
    return long.drop_nulls("correct")


def read_table_source(path, settings: dict) -> pl.DataFrame:
    fmt = settings.get("format", "auto")
    mc, ic, cc = settings.get("model_column", "model_id"), settings.get("item_column", "item_id"), settings.get("correct_column", "correct")
    if fmt not in ("auto", "long", "wide"):
        raise CrossdiffError(f"{path}: unknown table format {fmt!r}; expected long, wide or auto")
    table = read_table(path, "response table")  # read once, whatever the format
    if fmt == "auto":
        fmt = "long" if {mc, ic, cc} <= set(table.columns) else "wide"
    if fmt == "long":
        return read_long(path, mc, ic, cc, df=table)
    return read_wide(path, settings.get("model_column"), df=table)


_TIMESTAMP = re.compile(r"_(\d{4}-\d{2}-\d{2}T[\d\-.:]+)\.jsonl?$")


def _lm_eval_files(root: Path, task: str | None) -> dict[str, Path]:
    """model id -> newest samples file. lm-eval writes OUTPUT/<model>/samples_<task>_<timestamp>.jsonl."""
    if not root.is_dir():
        raise CrossdiffError(f"{root}: lm-eval samples directory not found")
    # .jsonl since 2024-06-13; .json before (JSON lines, or in May 2024 a JSON array: see iter_samples)
    patterns = [f"samples_{task}_*.jsonl", f"samples_{task}_*.json"] if task else ["*.jsonl", "samples_*.json"]
    pattern = " or ".join(patterns)
    found: dict[str, list[Path]] = {}
    for f in sorted({p for pat in patterns for p in root.rglob(pat)}):
        rel = f.relative_to(root)
        model = str(rel.parent) if rel.parent != Path(".") else re.sub(r"^samples_", "", f.stem)
        found.setdefault(model, []).append(f)
    if not found:
        raise CrossdiffError(f"{root}: no lm-eval sample files matching {pattern!r} (searched sub-directories too)")
    # several runs of one model: keep the newest (lm-eval timestamps sort lexicographically)
    return {m: max(fs, key=_run_time) for m, fs in found.items()}


def _run_time(path: Path) -> tuple[str, str]:
    m = _TIMESTAMP.search(path.name)
    return (m.group(1) if m else "", path.name)


def _get(doc: dict, dotted: str):
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def correctness(value, metric: str, threshold: float, where: str) -> int:
    """1 when a per-sample metric value (number, bool or [number]) reaches the threshold, else 0."""
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, (list, tuple)) and len(value) == 1:  # lm-eval sometimes keeps [score]
        value = value[0]
    if not isinstance(value, (int, float)):
        raise CrossdiffError(f"{where}: {metric} = {value!r}; expected a number")
    return int(float(value) >= threshold)


def iter_samples(path):
    """(position, record) of an lm-eval samples file in any layout lm-eval wrote: JSON lines (``.jsonl``,
    and ``.json`` from 2024-05-31) or one indented JSON array (``.json`` of May 2024)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith(b"["):
        yield from iter_jsonl(path)
        return
    try:
        with open(path) as fh:
            records = json.load(fh)
    except json.JSONDecodeError as exc:
        raise CrossdiffError(f"{path}: a JSON array of samples that is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise CrossdiffError(f"{path}: element {n} of the samples array is a {type(rec).__name__}; expected an object")
        yield n, rec


def read_samples_file(path, metric: str = "acc", threshold: float = 0.5, item_key: str = "doc_id",
                      want_filter: str | None = None) -> list[tuple[str, int]]:
    """(item id, correct) pairs of one lm-eval ``--log_samples`` JSONL file.

    ``item_key`` is a dotted path into the sample (``doc_id``, ``doc.id``); a sample is correct when
    its ``metric`` >= ``threshold``. Samples carrying several lm-eval filters need ``want_filter``.
    """
    out: list[tuple[str, int]] = []
    filters_seen: set = set()
    for n, rec in iter_samples(path):
        flt = rec.get("filter")
        filters_seen.add(flt)
        if want_filter is not None and flt != want_filter:
            continue
        item = _get(rec, item_key)
        if item is None:
            raise CrossdiffError(f"{path}: line {n}: no {item_key!r} field; set responses.item_key to the sample's id field")
        if metric not in rec:
            avail = [k for k in rec.get("metrics", []) if k in rec] or sorted(k for k, v in rec.items() if isinstance(v, (int, float)))
            raise CrossdiffError(f"{path}: line {n}: metric {metric!r} not in sample; available: {', '.join(map(str, avail)) or 'none'}")
        out.append((str(item), correctness(rec[metric], metric, threshold, f"{path}: line {n}")))
    named = filters_seen - {None}
    if want_filter is None and len(named) > 1:
        raise CrossdiffError(f"{path}: samples carry several lm-eval filters ({', '.join(sorted(map(str, named)))}); "
                             f"name one with responses.filter")
    if want_filter is not None and want_filter not in filters_seen:
        raise CrossdiffError(f"{path}: no samples with filter {want_filter!r}; found {', '.join(sorted(map(str, filters_seen)))}")
    return out


def read_lm_eval_samples(root, settings: dict) -> pl.DataFrame:
    root = Path(root)
    models, items, correct = [], [], []
    for model, f in _lm_eval_files(root, settings.get("task")).items():
        pairs = read_samples_file(f, settings.get("metric", "acc"), float(settings.get("threshold", 0.5)),
                                  settings.get("item_key", "doc_id"), settings.get("filter"))
        models += [model] * len(pairs)
        items += [i for i, _ in pairs]
        correct += [c for _, c in pairs]
    return pl.DataFrame({"model_id": models, "item_id": items, "correct": correct},
                        schema={"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": pl.Int8})


def read_source(source: str, path, settings: dict) -> pl.DataFrame:
    if source in ("simulated", "leaderboard"):  # both already in the canonical long form
        return read_long(path)
    if source == "table":
        return read_table_source(path, settings)
    if source == "lm_eval_samples":
        return read_lm_eval_samples(path, settings)
    raise CrossdiffError(f"unknown responses source {source!r}; expected simulated, leaderboard, table or lm_eval_samples")
