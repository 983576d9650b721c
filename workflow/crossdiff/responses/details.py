"""The leaderboard's details files: which files a repo's listing holds for a task, and what they say.

File names (v2 ``samples_{task}_{run}.jsonl``/``.json``, v1 ``details_harness|{task}_{run}.parquet``),
the newest run per (sub)task, per-item correctness from either layout, and the checks that make a
file unusable for a task (``wrong_size``, ``missing_doc_ids``, ``duplicate_ids``, ``metric_absent``),
raised as :class:`ModelFailed` so the collector records the model as failed with that reason.
Used by ``crossdiff.responses.leaderboard`` (the collector) and ``collect_plan``; imports only
``lb_settings`` of the collector's modules.

The leaderboard published every evaluated model's per-sample outputs as a dataset repo on the
Hugging Face Hub. Two generations, two layouts (verified from the dataset cards and from code that
reads them; references below):

**v1** (archived June 2024; ARC-Challenge 25-shot, GSM8K 5-shot, HellaSwag, MMLU, ...). The repos
moved to the ``open-llm-leaderboard-old`` namespace when v2 took the original one:
``open-llm-leaderboard-old/details_{org}__{model}`` (e.g. ``details_meta-llama__Llama-2-7b-hf``).
One parquet file per task and run, ``{run}/details_harness|{task}|{shots}_{run}.parquet``, e.g.
``2023-09-18T03-05-58.053951/details_harness|gsm8k|5_2023-09-18T03-05-58.053951.parquet``; the
run timestamp is written with ``:`` in older repos (``2023-08-19T16:35:46.942696``) and with
``-`` later, sometimes both (directory vs file name). Dataset configs are named
``harness_arc_challenge_25`` / ``harness_gsm8k_5``. Not gated. Columns: early files (July 2023)
carry flat metric columns (``example, query, choices, gold, acc, acc_norm, predictions,
truncated, num_asked_few_shots, num_effective_few_shots, input_tokens, cont_tokens``); later
files carry a ``metrics`` struct (``metrics.acc``; GSM8K: ``example, full_prompt, predictions,
metrics, gold, input_tokens, cont_tokens``). There is **no doc_id column**: rows come in the
leaderboard's own (shuffled w.r.t. the HF split) example order, identical across models, so the
row position is the item id (``item_key: row``, default); ``example`` holds a native id (early
ARC files) or the rendered question (later files) and can be used instead (``item_key: example``,
with ``match_items_on``: rows sharing their text with another row of the file, i.e. twin items, keep
``choices``/``gold``/``gold_index``/``full_prompt`` for ``crossdiff.responses.matching``). Models
without an org have repos like ``details_gpt2``.

**v2** (June 2024 - 2025; MMLU-Pro, BBH, MATH lvl 5, MuSR, GPQA, IFEval), lm-evaluation-harness
``--log_samples`` output: ``open-llm-leaderboard/{org}__{model}-details``, files
``{org}__{model}/samples_{task}_{run}.jsonl`` (``.json`` in mid-2024 runs: an indented JSON array in
May 2024, JSON lines from 2024-05-31) and
``{org}__{model}/results_{run}.json``; ``run`` like ``2025-01-27T10-10-36.877664``. One file per
subtask: ``leaderboard_bbh_boolean_expressions`` ... (24 BBH), ``leaderboard_math_algebra_hard``
... (7 MATH subjects, two with short names: ``leaderboard_math_counting_and_prob_hard``,
``leaderboard_math_num_theory_hard``; see ``crossdiff.items.adapters.LEADERBOARD_SUBTASK_FILES``), ``leaderboard_musr_{murder_mysteries,object_placements,team_allocation}``,
``leaderboard_mmlu_pro`` (single). Each line is an lm-eval sample: ``doc_id`` (position within
the subtask's split), ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``,
``filter``, ``metrics`` (list of metric names), ``doc_hash``/``prompt_hash``/``target_hash``
and one field per metric: ``acc_norm`` (BBH, MuSR, GPQA), ``acc`` (MMLU-Pro), ``exact_match``
(MATH). These repos are **gated** ("auto" approval): a token (``HF_TOKEN``) of an account that
accepted the terms on each repo's page is needed.

References: dataset cards of ``open-llm-leaderboard/EleutherAI__pythia-1b-details`` (configs and
``samples_leaderboard_*_2025-01-27T10-10-36.877664.jsonl`` paths) and
``open-llm-leaderboard-old/details_meta-llama__Llama-2-7b-hf`` (``harness_gsm8k_5`` split paths),
and public scripts reading ``open-llm-leaderboard-old/details_Corianas__Quokka_2.7b`` /
``details_meta-llama__Meta-Llama-3-8B`` parquet files and ``open-llm-leaderboard/{fullname
with / -> __}-details`` trees (found with the project's code search, 2026).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table
from crossdiff.responses.importers import correctness, iter_samples, read_samples_file
from crossdiff.responses.lb_settings import V1_ROW_FIELDS, ModelFailed, Settings

# run timestamps as the leaderboard writes them: 2023-08-19T16:35:46.942696 or 2024-06-26T10-00-00.123
_TS = r"\d{4}-\d{2}-\d{2}T\d{2}[-:_]\d{2}[-:_]\d{2}(?:\.\d+)?"
_V2_FILE = re.compile(rf"^samples_(?P<task>.+)_(?P<ts>{_TS})\.jsonl?$")
_V1_FILE = re.compile(rf"^details_(?P<task>.+)_(?P<ts>{_TS})\.parquet$")


# ---------------------------------------------------------------------------------- file choice
def _norm_ts(ts: str) -> str:
    return re.sub(r"[-:_]", "-", ts)


def parse_file_name(path: str, version: str) -> tuple[str, str] | None:
    """(task, run timestamp) of a samples/details file, or None for other files."""
    m = (_V2_FILE if version == "v2" else _V1_FILE).match(path.rsplit("/", 1)[-1])
    return (m.group("task"), _norm_ts(m.group("ts"))) if m else None


def select_files(files: list[str], s: Settings) -> dict[str, tuple[str, str]]:
    """subtask label ('' when single) -> (run timestamp, path): the newest run of each (sub)task."""
    chosen: dict[str, tuple[str, str]] = {}
    for f in files:
        parsed = parse_file_name(f, s.version)
        if not parsed:
            continue
        task, ts = parsed
        if task == s.task:
            label = ""
        elif s.subtasks and task.startswith(s.task) and task[len(s.task)] in "_-|:":
            label = task[len(s.task) + 1:]
        else:
            continue
        if label not in chosen or (ts, f) > chosen[label]:
            chosen[label] = (ts, f)
    return chosen


def available_tasks(files: list[str], version: str) -> list[str]:
    return sorted({p[0] for f in files if (p := parse_file_name(f, version))})


def choose_files(files, s: Settings, repo: str, expected: dict | None) -> dict[str, tuple[str, str]]:
    """The task's files of one repo (only the subtasks the item table holds, when it is known)."""
    chosen = select_files(list(files), s)
    if expected and s.subtasks and not s.text_keys:
        chosen = {k: v for k, v in chosen.items() if k in expected}
    if not chosen:
        tasks = available_tasks(list(files), s.version)
        raise ModelFailed("no_task_files", f"{repo}: no {s.version} files for task {s.task!r}"
                                           f"{' (or its subtasks)' if s.subtasks else ''}; tasks in repo: "
                                           f"{', '.join(tasks[:12]) or 'none'}{' ...' if len(tasks) > 12 else ''}")
    return chosen


# ---------------------------------------------------------------------------------- extraction
def _item(label: str, key) -> str:
    return f"{label}/{key}" if label else str(key)


def extract_v2(path: Path, label: str, s: Settings, doc_check=None) -> list[tuple[str, int]]:
    """(item id, correct) pairs of a v2 samples file; ``doc_check`` (IFEval) checks each sample's doc."""
    try:
        pairs = read_samples_file(path, s.metric, s.threshold, s.item_key, s.filter, doc_check=doc_check if not label else None)
    except CrossdiffError as exc:
        first = next(iter_samples(path), (0, {}))[1] if path.is_file() else {}
        if isinstance(first, dict) and first and s.metric not in first:
            avail = [k for k in first.get("metrics", []) if k in first] or sorted(  # no 'metrics' key before lm-eval 0.4.7
                k for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "doc_id")
            raise ModelFailed("metric_absent", f"{path.name}: metric {s.metric!r} absent from the samples "
                                               f"(numeric keys present: {', '.join(map(str, avail)) or 'none'})") from None
        raise ModelFailed("bad_file", str(exc)) from None
    return [(_item(label, key), c) for key, c in pairs]


def check_file(keys: list, label: str, fname: str, s: Settings, expected: dict | None) -> None:
    """A file holding another number of rows than its (sub)task's items, or other doc ids, is unusable."""
    if not expected or not s.check_sizes:
        return
    want = expected.get(label)
    if want is None:
        return
    where = f"{fname}{f' (subtask {label})' if label else ''}"
    if isinstance(want, int):  # v1 / text keys: only the size is known
        if len(keys) != want:
            raise ModelFailed("wrong_size", f"{where}: {len(keys)} rows, the item table has {want} items")
        return
    n_dup = len(keys) - len(set(keys))
    if n_dup:
        raise ModelFailed("duplicate_ids", f"{where}: {n_dup} doc id(s) occur more than once")
    if len(keys) != len(want):
        raise ModelFailed("wrong_size", f"{where}: {len(keys)} samples, the item table has {len(want)} items")
    missing = sorted(want - set(keys), key=lambda x: (len(x), x))
    if missing:
        raise ModelFailed("missing_doc_ids", f"{where}: doc ids {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                                             f"missing ({len(missing)} in all; the file carries ids the items lack)")


def doc_check_for(items_path):
    """The IFEval doc check of an item table (:func:`crossdiff.items.ifeval.doc_checker`), or None."""
    if not items_path:
        return None
    from crossdiff.items.ifeval import doc_checker

    return doc_checker(read_table(items_path, "item table"))


def expected_keys(items_path, s: Settings) -> dict | None:
    """label -> the doc ids (v2) or the number of rows (text keys, v1) each task file must hold."""
    if not items_path:
        return None
    df = read_table(items_path, "item table")
    if "item_id" not in df.columns:
        raise CrossdiffError(f"{items_path}: item table lacks column 'item_id'")
    ids = df["item_id"].cast(pl.Utf8).to_list()
    if s.text_keys or s.version == "v1":
        return {"": len(ids)}
    out: dict[str, set] = {}
    for i in ids:
        label, _, key = i.rpartition("/") if s.subtasks else ("", "", i)
        out.setdefault(label, set()).add(key)
    return out


def extract_v1(path: Path, label: str, s: Settings) -> list[tuple[str, int]]:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise CrossdiffError(f"{path}: cannot read details parquet: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if s.metric in df.columns:
        values = df[s.metric].to_list()
    elif "metrics" in df.columns and df["metrics"].dtype == pl.Struct and s.metric in [f.name for f in df["metrics"].dtype.fields]:
        values = df["metrics"].struct.field(s.metric).to_list()
    else:
        avail = [c for c in ("acc", "acc_norm", "em", "qem", "f1", "mc1", "mc2") if c in df.columns]
        if "metrics" in df.columns and df["metrics"].dtype == pl.Struct:
            avail += [f"metrics.{f.name}" for f in df["metrics"].dtype.fields]
        raise ModelFailed("metric_absent", f"{path.name}: metric {s.metric!r} not found; available: "
                                           f"{', '.join(avail) or 'none'} (columns: {', '.join(df.columns)})")
    if s.item_key == "row":
        keys = list(range(df.height))
    elif s.item_key in df.columns:
        keys = df[s.item_key].cast(pl.Utf8).to_list()
    else:
        raise CrossdiffError(f"{path}: item_key {s.item_key!r} is not a column; use 'row' (row position) or one of "
                             f"{', '.join(df.columns)}")
    fields = {}
    if s.item_key != "row":
        # text keys: rows sharing their text with another row of the file (twin items) keep what tells them
        # apart, for import-responses to match; the others need nothing (a 25-shot full_prompt is ~10 kB a row)
        norm = [" ".join(str(k).split()) for k in keys]
        seen = Counter(norm)
        shared = [i for i, k in enumerate(norm) if seen[k] > 1]
        for c in V1_ROW_FIELDS:
            if c in df.columns and shared:
                col = df[c]
                fields[c] = {i: None if col[i] is None else json.dumps(_plain(col[i]), default=str) for i in shared}
    out = []
    for i, (k, v) in enumerate(zip(keys, values)):
        if v is None:
            continue
        out.append((_item(label, k), correctness(v, s.metric, s.threshold, f"{path}: row {i}"), i,
                    *(fields[c].get(i) if c in fields else None for c in V1_ROW_FIELDS)))
    return out


def _plain(value):
    """A parquet cell as plain JSON-able Python (polars gives lists as Series)."""
    if isinstance(value, pl.Series):
        return [_plain(v) for v in value.to_list()]
    return value
