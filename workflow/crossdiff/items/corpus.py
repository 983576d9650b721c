"""``items.source: corpus``: a question / solution / answer table from the hub or a local file.

Training corpora (Liu et al. 2026: OpenR1-Math-94k, an OpenMath 200k subset, an OpenScience 200k subset) and
test benchmarks without a leaderboard (MATH500, MMLU) come in many layouts; ``items.columns`` names the
source's columns:

=================  ===================================  ====================================================
item column        ``items.columns`` key                notes
=================  ===================================  ====================================================
``question``       ``question`` (required)              the prompt text
``solution``       ``solution``                         the worked solution / chain of thought; a list
                                                        column (several traces per problem) gives one
                                                        element: the first whose flag in ``items.pick``'s
                                                        list column is true, else the first
``answer``         ``answer``                           cast to text (an integer option index stays its
                                                        number); null: the last ``\\boxed{...}`` of the
                                                        solution
``choices``        ``choices``                          a list column of options (multiple choice), stored
                                                        as one JSON string like the adapters'
``item_id``        ``id``                               a unique id column; null: the row's index in the
                                                        source (stable under ``items.sample``)
=================  ===================================  ====================================================

``items.keep`` lists further columns copied as they are (``level``, ``subject``, ``source``); ``question_length``
(characters) is added as for every item table. Rows whose question, solution (when named) or answer is
missing or blank are dropped before sampling and counted in the log. ``items.sample: N`` keeps a seeded
random subsample of N usable rows (``numpy.random.default_rng(items.seed).choice`` without replacement), in
source order.

The layouts of the corpora Liu et al. train on (checked against the datasets' cards, Dec 2026):

* ``open-r1/OpenR1-Math-220k`` config ``default`` split ``train`` (93,733 rows, "OpenR1-Math-94k"): ``problem``,
  ``solution`` (NuminaMath's human solution), ``answer``, ``generations`` (list: DeepSeek-R1 traces),
  ``correctness_math_verify`` (list of bools, one per trace), ``problem_type``, ``question_type``, ``source``,
  ``uuid``, ``messages``, ...;
* ``nvidia/OpenMathReasoning`` split ``cot`` (3.2M rows; ``nvidia/OpenMathInstruct-2`` has the same first
  three): ``problem``, ``generated_solution``, ``expected_answer``, ``problem_type``, ``problem_source``,
  ``generation_model``, ``pass_rate_72b_tir``, ``inference_mode``;
* ``nvidia/OpenScience`` config ``OS-Q3-235B-4`` split ``train``: ``input`` (the question with its four lettered
  options in the text), ``output`` (the DeepSeek-R1 response, ``<think>`` block and ``\\boxed{<letter>}``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError


def _where(settings: dict) -> str:
    if settings.get("path"):
        return str(settings["path"])
    cfg = f", config {settings['config']!r}" if settings.get("config") else ""
    return f"{settings.get('hub_id')} (split {settings.get('split') or 'train'!r}{cfg})"


def _read_local(path: Path) -> pl.DataFrame:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl", ".json", ".csv"))
        if not files:
            raise CrossdiffError(f"{path}: no .parquet/.jsonl/.json/.csv files in this folder (items.path)")
        return pl.concat([_read_local(f) for f in files], how="diagonal_relaxed")
    if not path.exists():
        raise CrossdiffError(f"{path}: items file not found (items.path)")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix == ".jsonl":
        return pl.read_ndjson(path, infer_schema_length=None)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = data if isinstance(data, list) else data.get("examples") or data.get("data") or []
        return pl.DataFrame(rows, infer_schema_length=None)
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=0)
    raise CrossdiffError(f"{path}: unsupported file type {path.suffix!r}; expected .parquet, .jsonl, .json or .csv")


def _needed(settings: dict) -> list[str]:
    cols = settings["columns"]
    names = [cols.get(k) for k in ("question", "solution", "answer", "choices", "id")]
    return list(dict.fromkeys([n for n in names if n] + ([settings["pick"]] if settings.get("pick") else [])
                              + list(settings.get("keep") or [])))


def read_source(settings: dict) -> pl.DataFrame:
    """The source's rows (only the columns the settings name), from a local path or the hub."""
    needed = _needed(settings)
    if settings.get("path"):
        df = _read_local(Path(settings["path"]))
    elif settings.get("hub_id"):
        import datasets  # noqa: PLC0415 - heavy import, only for hub loading

        kwargs = {"split": settings.get("split") or "train"}
        if settings.get("revision"):
            kwargs["revision"] = settings["revision"]
        if settings.get("data_files"):
            kwargs["data_files"] = settings["data_files"]
        try:
            ds = datasets.load_dataset(settings["hub_id"], settings.get("config"), **kwargs)
        except Exception as exc:  # offline, gated, unknown id/config/split
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CrossdiffError(f"cannot load {_where(settings)} from the hub: {first}; check items.hub_id/config/"
                                 "split and HF_TOKEN, or set items.path to a local copy") from None
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise CrossdiffError(f"{_where(settings)}: no column(s) {missing} (items.columns/pick/keep); columns: "
                                 f"{sorted(ds.column_names)}")
        df = pl.from_arrow(ds.select_columns(needed).data.table)
    else:
        raise CrossdiffError("items.source corpus: give items.hub_id or items.path")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise CrossdiffError(f"{_where(settings)}: no column(s) {missing} (items.columns/pick/keep); columns: "
                             f"{sorted(df.columns)}")
    return df.select(needed)


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _one_solution(value, flags):
    """A list-valued solution cell: the first element flagged true, else the first; a scalar as it is."""
    if not isinstance(value, (list, tuple)):
        return value
    if flags is not None:
        for v, ok in zip(value, flags):
            if ok:
                return v
    return value[0] if len(value) else None


def _answer_text(value) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _text(value)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (balanced braces), or None: the rule of the MATH adapter
    (:func:`crossdiff.items.adapters._boxed`), kept here so this module does not import the adapters."""
    i = text.rfind("\\boxed")
    j = text.find("{", i) if i >= 0 else -1
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1:k]
    return None


def corpus_items(df: pl.DataFrame, settings: dict, dataset: str = "items") -> pl.DataFrame:
    """The item table of a source frame (see the module doc)."""
    cols = settings["columns"]
    where = f"datasets.{dataset}.items ({_where(settings)})"
    if not cols.get("answer") and not cols.get("solution"):
        raise CrossdiffError(f"{where}: columns.answer is null and there is no columns.solution to take the "
                             "\\boxed{} answer from; name an answer or a solution column")
    n_source = df.height
    q = df[cols["question"]].to_list()
    sol = df[cols["solution"]].to_list() if cols.get("solution") else None
    flags = df[settings["pick"]].to_list() if settings.get("pick") else None
    if sol is not None:
        sol = [_one_solution(v, flags[i] if flags is not None else None) for i, v in enumerate(sol)]
    ans = df[cols["answer"]].to_list() if cols.get("answer") else None
    choices = df[cols["choices"]].to_list() if cols.get("choices") else None
    ids = df[cols["id"]].to_list() if cols.get("id") else list(range(n_source))
    rows, dropped = [], {"question": 0, "solution": 0, "answer": 0, "choices": 0}
    for i in range(n_source):
        question = _text(q[i])
        solution = _text(sol[i]) if sol is not None else None
        answer = _answer_text(ans[i]) if ans is not None else (last_boxed(solution) if solution else None)
        options = choices[i] if choices is not None else None
        if question is None:
            dropped["question"] += 1
            continue
        if sol is not None and solution is None:
            dropped["solution"] += 1
            continue
        if answer is None or not str(answer).strip():
            dropped["answer"] += 1
            continue
        if choices is not None and (not isinstance(options, (list, tuple)) or len(options) < 2):
            dropped["choices"] += 1
            continue
        row = {"item_id": str(ids[i]), "question": question, "answer": str(answer).strip(), "_row": i}
        if sol is not None:
            row["solution"] = solution
        if choices is not None:
            row["choices"] = json.dumps([str(o) for o in options])
        rows.append(row)
    n_dropped = sum(dropped.values())
    if n_dropped:
        print(f"{where}: dropped {n_dropped} of {n_source} row(s) without a usable "
              + ", ".join(f"{k} ({v})" for k, v in dropped.items() if v))
    if not rows:
        raise CrossdiffError(f"{where}: no usable rows (of {n_source}); check items.columns")
    out = pl.DataFrame(rows, infer_schema_length=None)
    dup = out.filter(pl.col("item_id").is_duplicated())
    if dup.height:
        raise CrossdiffError(f"{where}: column {cols.get('id')!r} (items.columns.id) holds duplicate ids, e.g. "
                             f"{dup['item_id'][:3].to_list()}; name a unique column or leave id null (row index)")
    keep = list(settings.get("keep") or [])
    if keep:
        extra = df.with_row_index("_row").select(pl.col("_row").cast(pl.Int64), *keep)
        clash = [k for k in keep if k in out.columns]
        if clash:
            raise CrossdiffError(f"{where}: items.keep {clash} would replace the item table's own column(s)")
        out = out.with_columns(pl.col("_row").cast(pl.Int64)).join(extra, on="_row", how="left")
    n = settings.get("sample")
    if n is not None:
        if n > out.height:
            raise CrossdiffError(f"{where}: items.sample = {n} but only {out.height} usable row(s)"
                                 + (f" ({n_dropped} dropped)" if n_dropped else "") + "; lower items.sample")
        rng = np.random.default_rng(int(settings.get("seed") or 0))
        chosen = np.sort(rng.choice(out.height, size=int(n), replace=False))
        out = out[chosen]
        print(f"{where}: sampled {n} of {len(rows)} usable row(s) (items.seed {settings.get('seed') or 0})")
    return out.sort("_row").drop("_row").with_columns(pl.col("question").str.len_chars().alias("question_length"))


def load_corpus(settings: dict, dataset: str = "items") -> pl.DataFrame:
    return corpus_items(read_source(settings), settings, dataset)
