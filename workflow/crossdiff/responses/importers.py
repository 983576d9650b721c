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
from collections import Counter
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import iter_jsonl, read_table, require_columns, row_location

ID_COLUMNS = ("model_id", "item_id")


def _first_bad(col: pl.Series) -> tuple[int, str] | None:
    """(index, problem) of the first value of ``col`` that is not a correctness value, else None."""
    if col.dtype in (pl.Boolean, pl.Null):
        return None
    if col.dtype == pl.Utf8:
        as_num = _as_number(col)
        bad = col.is_not_null() & (col.str.strip_chars() != "") & as_num.is_null()
        if bad.any():
            return int(bad.arg_max()), "is not a correctness value; expected 0 or 1 (or true/false), empty for missing"
        col = as_num
    elif not col.dtype.is_numeric():
        return -1, f"has type {col.dtype}; expected 0/1 values"
    values = col.cast(pl.Float64)
    bad = values.is_not_null() & ~values.is_in([0.0, 1.0])
    if bad.any():
        return int(bad.arg_max()), "is not binary; expected 0 or 1 (set a metric threshold for continuous scores)"
    return None


def _as_number(col: pl.Series) -> pl.Series:
    return col.str.strip_chars().str.to_lowercase().replace({"true": "1", "false": "0"}).cast(pl.Float64, strict=False)


def _binary(df: pl.DataFrame, column: str, path) -> pl.DataFrame:
    """Cast ``column`` to int8 0/1, erroring on the first value that is not binary (nulls = missing)."""
    col = df[column]
    bad = _first_bad(col)
    if bad is not None:
        i, problem = bad
        if i < 0:
            raise CrossdiffError(f"{path}: column {column!r} {problem}")
        raise CrossdiffError(f"{path}: {row_location(path, i)}: {column} = {col[i]!r} {problem}")
    if col.dtype == pl.Utf8:
        col = _as_number(col)
    return df.with_columns(col.cast(pl.Float64).cast(pl.Int8).alias(column))


def _check_ids(df: pl.DataFrame, column: str, path, what: str, one_line: bool = True) -> None:
    """Every row needs an id; a model id must not hold a line break or tab (they break TSVs, logs, CSVs).

    Item ids may (``one_line=False``): the v1 leaderboard identifies items by their text until
    ``match_items_on`` maps it to item ids.
    """
    ids = df[column]
    nulls = ids.is_null() | (ids.str.strip_chars() == "")
    if nulls.any():
        raise CrossdiffError(f"{path}: {row_location(path, int(nulls.arg_max()))}: empty {what}; every row needs a {what}")
    control = ids.str.contains(r"[\x00-\x1f\x7f]")
    if one_line and control.any():
        i = int(control.arg_max())
        raise CrossdiffError(f"{path}: {row_location(path, i)}: {what} {ids[i]!r} holds a control character "
                             f"(newline, tab, ...); ids must be one line of printable text")


def read_long(path, model_column="model_id", item_column="item_id", correct_column="correct",
              df: pl.DataFrame | None = None) -> pl.DataFrame:
    df = read_table(path, "response table") if df is None else df
    require_columns(df, [model_column, item_column, correct_column], path, "long response table")
    df = df.select(
        pl.col(model_column).cast(pl.Utf8).alias("model_id"),
        pl.col(item_column).cast(pl.Utf8).alias("item_id"),
        pl.col(correct_column).alias("correct"),
    )
    _check_ids(df, "model_id", path, f"model id (column {model_column!r})")
    _check_ids(df, "item_id", path, f"item id (column {item_column!r})", one_line=False)
    df = _binary(df, "correct", path)
    return df.drop_nulls("correct")


def read_wide(path, model_column: str | None = None, df: pl.DataFrame | None = None) -> pl.DataFrame:
    df = read_table(path, "response table") if df is None else df
    model_column = model_column if model_column and model_column in df.columns else df.columns[0]
    if df.width < 2:
        raise CrossdiffError(f"{path}: wide response table needs a model column and at least one item column")
    items = [c for c in df.columns if c != model_column]
    df = df.with_columns(pl.col(model_column).cast(pl.Utf8))
    _check_ids(df, model_column, path, f"model id (column {model_column!r})")
    long = df.unpivot(
        index=model_column, on=items, variable_name="item_id", value_name="correct"
    ).rename({model_column: "model_id"})
    if long["correct"].dtype == pl.Null:
        long = long.with_columns(pl.col("correct").cast(pl.Int8))
    if _first_bad(long["correct"]) is not None:
        # locate the bad cell by model row and item column for a useful message
        for c in items:
            bad = _first_bad(df[c])
            if bad is not None:
                i, problem = bad
                if i < 0:
                    raise CrossdiffError(f"{path}: item column {c!r} {problem}")
                raise CrossdiffError(f"{path}: {row_location(path, i)} (model {df[model_column][i]!r}), item column {c!r}: "
                                     f"{df[c][i]!r} {problem}")
        # every column is fine alone but they mix types (text and numbers): convert each, then unpivot
        df = df.with_columns([_binary(df.select(c), c, path)[c] for c in items])
        long = df.unpivot(index=model_column, on=items, variable_name="item_id",
                          value_name="correct").rename({model_column: "model_id"})
    long = _binary(long, "correct", path)
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


def task_of(path: Path) -> str | None:
    """The task of an lm-eval samples file named ``samples_<task>_<timestamp>.jsonl``, else None."""
    m = _TIMESTAMP.search(path.name)
    if not m or not path.name.startswith("samples_") or m.start() <= len("samples_"):
        return None
    return path.name[len("samples_"):m.start()]


def _task_list(found: dict[str | None, set[str]]) -> str:
    return ", ".join(f"{t if t is not None else '(file names without a task)'} ({len(ms)} model(s))"
                     for t, ms in sorted(found.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))


def _lm_eval_files(root: Path, task: str | None) -> dict[str, Path]:
    """model id -> newest samples file of the one task. lm-eval writes OUTPUT/<model>/samples_<task>_<timestamp>.jsonl.

    The task is read from the file name and must match ``task`` exactly (``arc`` is neither
    ``arc_easy`` nor ``arc_challenge``). With ``task`` unset the directory must hold one task
    only: doc ids of different tasks are different questions, so mixing them would make one item
    of several.
    """
    if not root.is_dir():
        raise CrossdiffError(f"{root}: lm-eval samples directory not found")
    by_task: dict[str | None, dict[str, list[Path]]] = {}
    # .jsonl since 2024-06-13; .json before (JSON lines, or in May 2024 a JSON array: see iter_samples)
    for f in sorted({*root.rglob("*.jsonl"), *root.rglob("samples_*.json")}):
        rel = f.relative_to(root)
        model = str(rel.parent) if rel.parent != Path(".") else re.sub(r"^samples_", "", f.stem)
        by_task.setdefault(task_of(f), {}).setdefault(model, []).append(f)
    if not by_task:
        raise CrossdiffError(f"{root}: no lm-eval sample files (*.jsonl or samples_*.json, searched sub-directories too)")
    models_of = {t: set(ms) for t, ms in by_task.items()}
    if task is not None:
        if task not in by_task:
            raise CrossdiffError(f"{root}: no lm-eval sample files of task {task!r} (named samples_{task}_<timestamp>.jsonl; "
                                 f"the task must match exactly); tasks found: {_task_list(models_of)}")
        found = by_task[task]
    elif len(by_task) > 1:
        raise CrossdiffError(f"{root}: sample files of several lm-eval tasks: {_task_list(models_of)}; "
                             f"set responses.task to one of them (doc ids of different tasks are different questions)")
    else:
        found = next(iter(by_task.values()))
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
    if isinstance(value, (list, tuple)) and value and metric.startswith("inst_level_"):  # IFEval: one bool per
        value = sum(float(v) for v in value) / len(value)  # instruction; the fraction followed meets the threshold
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
                      want_filter: str | None = None, doc_check=None, hashes: list | None = None) -> list[tuple[str, int]]:
    """(item id, correct) pairs of one lm-eval ``--log_samples`` JSONL file.

    ``item_key`` is a dotted path into the sample (``doc_id``, ``doc.id``); a sample is correct when
    its ``metric`` >= ``threshold``. Samples carrying several lm-eval filters need ``want_filter``.
    ``doc_check(item, doc, where)``, when given, checks each sample's ``doc`` against the item table's item
    (IFEval: :func:`crossdiff.items.ifeval.doc_checker`) and raises on another prompt.
    ``hashes``, when given, receives each returned sample's ``doc_hash`` (None where it has none), in order.
    """
    out: list[tuple[str, int]] = []
    filters_seen: set = set()
    for n, rec in iter_samples(path):
        if not isinstance(rec, dict):
            raise CrossdiffError(f"{path}: line {n}: expected a JSON object (one lm-eval sample), got {type(rec).__name__}")
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
        if doc_check is not None:
            doc_check(item, rec.get("doc"), f"{path}: line {n}")
        out.append((str(item), correctness(rec[metric], metric, threshold, f"{path}: line {n}")))
        if hashes is not None:
            hashes.append(rec.get("doc_hash") if isinstance(rec.get("doc_hash"), str) else None)
    named = filters_seen - {None}
    if want_filter is None and len(named) > 1:
        raise CrossdiffError(f"{path}: samples carry several lm-eval filters ({', '.join(sorted(map(str, named)))}); "
                             f"name one with responses.filter")
    if want_filter is not None and filters_seen == {None}:
        # lm-eval runs that predate the per-sample 'filter' key write one block per filter of a
        # multi-filter task, each repeating every doc id: which block is which is not in the file
        ids = [str(_get(rec, item_key)) for _, rec in iter_samples(path) if isinstance(rec, dict)]
        repeats = len(ids) - len(set(ids))
        blocks = f"; its {len(ids)} samples repeat {repeats} doc id(s), one block per filter" if repeats else ""
        raise CrossdiffError(
            f"{path}: responses.filter is {want_filter!r} but the samples carry no 'filter' key (an lm-eval older "
            f"than per-sample filter logging){blocks}; the filters' blocks cannot be told apart safely: re-run the "
            "evaluation with a current lm-eval, or set responses.filter: null for a file of one filter")
    if want_filter is not None and want_filter not in filters_seen:
        raise CrossdiffError(f"{path}: no samples with filter {want_filter!r}; found {', '.join(sorted(map(str, filters_seen)))}")
    return out


def _lm_eval_subtask_files(root: Path, task: str | None) -> dict[str, dict[str, Path]]:
    """model id -> subtask -> newest samples file, for a group task whose subtasks lm-eval logs as
    ``samples_<task>_<subtask>_<timestamp>.jsonl`` (``leaderboard_bbh_navigate``, ``leaderboard_math_algebra_hard``)."""
    if not task:
        raise CrossdiffError("responses.subtasks: true needs responses.task, the group task whose "
                             "samples_<task>_<subtask>_<timestamp>.jsonl files to read (e.g. leaderboard_bbh)")
    if not root.is_dir():
        raise CrossdiffError(f"{root}: lm-eval samples directory not found")
    out: dict[str, dict[str, list[Path]]] = {}
    tasks: set = set()
    for f in sorted({*root.rglob("*.jsonl"), *root.rglob("samples_*.json")}):
        t = task_of(f)
        tasks.add(t)
        if not t or not t.startswith(task + "_") or len(t) == len(task) + 1:
            continue
        rel = f.relative_to(root)
        model = str(rel.parent) if rel.parent != Path(".") else re.sub(r"^samples_", "", f.stem)
        out.setdefault(model, {}).setdefault(t[len(task) + 1:], []).append(f)
    if not out:
        found = ", ".join(sorted(str(t) for t in tasks if t)) or "none"
        raise CrossdiffError(f"{root}: no lm-eval sample files of subtasks of {task!r} (named samples_{task}_<subtask>_"
                             f"<timestamp>.jsonl); tasks found: {found}")
    return {m: {sub: max(fs, key=_run_time) for sub, fs in subs.items()} for m, subs in out.items()}


def read_lm_eval_samples(root, settings: dict, doc_check=None) -> pl.DataFrame:
    root = Path(root)
    if settings.get("subtasks"):  # item ids <subtask>/<doc_id>, the ids of the bbh, math and musr adapters
        files = [(model, sub, f) for model, subs in _lm_eval_subtask_files(root, settings.get("task")).items()
                 for sub, f in sorted(subs.items())]
    else:
        files = [(model, None, f) for model, f in _lm_eval_files(root, settings.get("task")).items()]
    models, items, correct, hashes, sources = [], [], [], [], []
    for model, sub, f in files:
        file_hashes: list = []
        pairs = read_samples_file(f, settings.get("metric", "acc"), float(settings.get("threshold", 0.5)),
                                  settings.get("item_key", "doc_id"), settings.get("filter"),
                                  doc_check=doc_check if sub is None else None, hashes=file_hashes)
        hashes += file_hashes
        sources += [str(f)] * len(pairs)
        ids = [i for i, _ in pairs]
        if len(set(ids)) < len(ids):  # several blocks of one doc id set: never mixed silently
            dup = next(i for i, n in Counter(ids).items() if n > 1)
            raise CrossdiffError(
                f"{f}: doc id {dup!r} occurs {ids.count(dup)} times ({len(ids) - len(set(ids))} repeats in all); an "
                "lm-eval older than per-sample filter logging writes one block per filter of a multi-filter task, "
                "which cannot be told apart; re-run the evaluation with a current lm-eval (samples with a 'filter' "
                "key) and set responses.filter")
        models += [model] * len(pairs)
        items += [i if sub is None else f"{sub}/{i}" for i, _ in pairs]
        correct += [c for _, c in pairs]
    df = pl.DataFrame({"model_id": models, "item_id": items, "correct": correct},
                      schema={"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": pl.Int8})
    if any(h is not None for h in hashes):  # lm-eval's doc_hash: build() keys the join with the items by it
        df = df.with_columns(pl.Series("doc_hash", hashes, dtype=pl.Utf8), pl.Series("samples_file", sources, dtype=pl.Utf8))
    return df


def key_by_doc_hash(raw: pl.DataFrame, items: pl.DataFrame, items_path) -> tuple[pl.DataFrame, dict]:
    """Responses of ``lm_eval_samples`` joined to the items by lm-eval's content hash of the doc (``doc_hash``,
    lm_eval/evaluator.py:655-662; the lm_eval_task item table keeps the same hash) where both sides have one: a
    sample keeps its item id when that item has its hash, else takes the one item that has it (another doc order
    than the items'; counted); a hash no item has stops the import naming the samples file (other data than the
    item table's). Samples without a hash keep their id. Returns (model_id, item_id, correct) and counts."""
    if "doc_hash" not in raw.columns:
        return raw, {}
    known = items.select(pl.col("item_id").cast(pl.Utf8), pl.col("doc_hash").cast(pl.Utf8)).drop_nulls()
    raw = raw.with_row_index("_row")
    hashed = raw.filter(pl.col("doc_hash").is_not_null())
    exact = hashed.join(known, on=["item_id", "doc_hash"], how="semi")
    rest = hashed.join(exact.select("_row"), on="_row", how="anti")
    stats = {"by_doc_hash": hashed.height, "doc_id_differs": rest.height, "without_hash": raw.height - hashed.height}
    if rest.height:
        cands = known.group_by("doc_hash").agg(pl.col("item_id").alias("cands"))
        rest = rest.join(cands, on="doc_hash", how="left")
        unknown = rest.filter(pl.col("cands").is_null())
        if unknown.height:
            r = unknown.row(0, named=True)
            n_files = unknown["samples_file"].n_unique()
            raise CrossdiffError(
                f"{r['samples_file']}: the sample logged as item {r['item_id']!r} has doc_hash {r['doc_hash']}, which no "
                f"item of {items_path} has ({unknown.height} such sample(s) in {n_files} file(s)): the samples are of "
                f"other docs than the item table's lm-eval task (another dataset version, split, or process_docs); "
                f"run lm-eval on the task and data the items come from")
        new_ids = {}
        for r in rest.iter_rows(named=True):
            options = r["cands"]
            if len(options) > 1 and "/" in r["item_id"]:  # identical docs: prefer the sample's own subtask
                options = [o for o in options if o.split("/", 1)[0] == r["item_id"].split("/", 1)[0]] or options
            if len(options) > 1:
                raise CrossdiffError(f"{r['samples_file']}: the sample logged as item {r['item_id']!r} has the doc_hash of "
                                     f"several items of {items_path} ({', '.join(sorted(options)[:4])}), none of them its "
                                     f"own id: which one it answers is unknown; run lm-eval on the items' task")
            new_ids[r["_row"]] = options[0]
        remap = pl.DataFrame({"_row": list(new_ids), "_new": list(new_ids.values())},
                             schema={"_row": pl.UInt32, "_new": pl.Utf8})
        raw = (raw.join(remap, on="_row", how="left")
               .with_columns(pl.coalesce("_new", "item_id").alias("item_id")).drop("_new"))
    return raw.sort("_row").select("model_id", "item_id", "correct"), stats


def read_source(source: str, path, settings: dict, doc_check=None) -> pl.DataFrame:
    if source in ("simulated", "leaderboard"):  # both already in the canonical long form
        return read_long(path)
    if source == "table":
        return read_table_source(path, settings)
    if source == "lm_eval_samples":
        return read_lm_eval_samples(path, settings, doc_check)
    raise CrossdiffError(f"unknown responses source {source!r}; expected simulated, leaderboard, table or lm_eval_samples")
