"""Any lm-eval task as a crossdiff benchmark (``items: {source: lm_eval_task, task: NAME, ...}``).

lm-eval's own ``TaskManager`` builds the task (a group expands into its leaf subtasks), with the user's
``overrides`` applied to every leaf task (e.g. ``dataset_path: json`` + ``dataset_kwargs.data_files`` to run
on a local copy without the hub) and ``split`` as its evaluation split. The evaluation docs are taken in
lm-eval's own order, so ``item_id`` is lm-eval's ``doc_id`` (``<subtask>/<doc_id>`` for a group, the subtask
being the leaf task's name without the ``<group>_`` prefix, as ``responses.subtasks: true`` reads
``samples_<group>_<subtask>_*.jsonl``): ``lm_eval_samples`` responses of the same task join with no matching.

Item table: every doc field (nested values as JSON strings; a field named like a crossdiff column is kept
as ``doc_<field>``), plus

* ``subtask`` (the leaf task), ``doc_id``, ``doc_hash`` (lm-eval's own hash of the doc, as its sample logs
  write it: evaluation checks it so a changed dataset or order stops instead of scoring other docs);
* ``lm_eval_prompt`` (``fewshot_context(doc, 0)``: description + ``doc_to_text``, the zero-shot context),
  ``lm_eval_delimiter`` (``target_delimiter``) and ``lm_eval_target`` (``doc_to_target``, or the gold
  choice's text for multiple choice): the training text of the item;
* ``question`` (``doc_to_text``) and ``answer`` (the gold target) when the doc has no such field,
  ``choices`` (JSON list) for multiple choice.

Evaluation of a bin runs the task's own config restricted to the bin's docs (crossdiff.evaluate.lm_eval_task).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any

import polars as pl

from crossdiff.errors import CrossdiffError

#: per-sample metrics that lm-eval scores 0/1; any other needs items.threshold
BINARY_METRICS = ("acc", "acc_norm", "acc_mutual_info", "acc_bytes", "exact_match", "em")
#: crossdiff's own item-table columns; a doc field of the same name is kept as doc_<name>
RESERVED = ("item_id", "subtask", "doc_id", "doc_hash", "lm_eval_prompt", "lm_eval_target", "lm_eval_delimiter",
            "model_solution")
PROMPT_KEYS = ("max_length", "on_no_completion")  # the prompt-section keys that still apply (training limits)


def _quiet_lm_eval() -> None:
    import logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)


def task_manager(settings: dict, name: str):
    """lm-eval's TaskManager over ``include_path`` only (fast); the built-in registry too when the task is
    not found there (indexing it takes ~14 s). An unknown name stops with the closest registered names."""
    _quiet_lm_eval()
    from lm_eval.tasks import TaskManager

    include = settings.get("include_path")
    if include:
        if not os.path.isdir(include):
            raise CrossdiffError(f"items.include_path = {include!r}: not a directory (expected a folder of lm-eval task YAMLs)")
        manager = TaskManager(include_path=include, include_defaults=False)
        if name in manager.all_tasks:
            return manager
    manager = TaskManager(include_path=include or None, include_defaults=True)
    if name not in manager.all_tasks:
        close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
        where = f"lm-eval's registry{' and ' + include if include else ''}"
        raise CrossdiffError(f"items.task = {name!r}: no such lm-eval task or group in {where}"
                             + (f"; closest registered names: {', '.join(close)}" if close else
                                "; set items.include_path to the folder of your task YAMLs"))
    return manager


def task_overrides(settings: dict) -> dict:
    """items.overrides with items.split as the evaluation split."""
    overrides = dict(settings.get("overrides") or {})
    bad = sorted(set(overrides) & {"task", "group", "task_alias"})
    if bad:
        raise CrossdiffError(f"items.overrides: {bad} cannot be overridden (they name the task)")
    if settings.get("split"):
        overrides["test_split"] = settings["split"]
    return overrides


def load_tasks(settings: dict, manager=None) -> dict[str, Any]:
    """leaf task name -> lm-eval Task in lm-eval's order, built by lm-eval's own factory from the registered
    config with the overrides merged over it (a group passes them on to every member, lm-eval's own rule)."""
    from lm_eval.api.group import Group

    name = settings["task"]
    manager = manager or task_manager(settings, name)
    overrides = task_overrides(settings)
    try:
        built = manager._factory.build(manager.task_index[name], overrides=overrides or None,
                                       registry=manager.task_index)
    except Exception as exc:  # dataset not found offline, bad override, ...: say which task and how to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossdiffError(f"items.task {name!r}: lm-eval cannot build it: {type(exc).__name__}: {first}; "
                             f"offline, point it at a local copy with items.overrides (dataset_path: json, "
                             f"dataset_kwargs: {{data_files: {{test: /abs/path.jsonl}}}})") from None
    leaves = built.get_all_tasks() if isinstance(built, Group) else built if isinstance(built, list) else [built]
    if not leaves:
        raise CrossdiffError(f"items.task = {name!r}: lm-eval builds no task from it")
    return {t.task_name: t for t in leaves}


def subtask_id(group: str, leaf: str, n_leaves: int) -> str | None:
    """Item-id prefix of a leaf task of a group (None for a single task)."""
    if n_leaves == 1 and leaf == group:
        return None
    return leaf[len(group) + 1:] if leaf.startswith(group + "_") else leaf


def doc_hash(doc: dict) -> str:
    """lm-eval's ``doc_hash`` of a doc, exactly as its sample logs write it."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def eval_docs(task, where: str) -> list[dict]:
    """The task's evaluation docs in lm-eval's order; stops when that order is not stable."""
    first = task.eval_docs
    if not hasattr(first, "__len__") or not hasattr(first, "__getitem__"):
        raise CrossdiffError(f"{where}: the evaluation docs are a {type(first).__name__} (streamed, no index): "
                             f"doc ids would not name the same docs twice; load the dataset without streaming")
    docs = [dict(d) for d in first]
    again = [doc_hash(dict(d)) for d in task.eval_docs]
    if again != [doc_hash(d) for d in docs]:
        raise CrossdiffError(f"{where}: the evaluation docs come in a different order (or content) each time they "
                             f"are loaded (an unseeded shuffle in process_docs?): doc ids would not name the same "
                             f"docs; fix the task's process_docs")
    return docs


def metric_settings(settings: dict, task, where: str) -> tuple[str, str, float | None]:
    """(metric, filter, threshold) of the task: the chosen or first metric and filter; a metric lm-eval does
    not score 0/1 per sample needs items.threshold."""
    names = [m["metric"] if isinstance(m["metric"], str) else getattr(m["metric"], "__name__", str(m["metric"]))
             for m in (task.config.metric_list or [])]
    metric = settings.get("metric") or (names[0] if names else None)
    if metric is None:
        raise CrossdiffError(f"{where}: the task declares no metric_list; set items.metric")
    if names and metric not in names:
        raise CrossdiffError(f"{where}: items.metric = {metric!r} is not one of the task's metrics {names}")
    filters = [f.name if hasattr(f, "name") else f for f in (getattr(task, "_filters", None) or [])]
    filters = [getattr(f, "name", f) for f in filters] or ["none"]
    flt = settings.get("filter") or filters[0]
    if flt not in filters:
        raise CrossdiffError(f"{where}: items.filter = {flt!r} is not one of the task's filters {filters}")
    threshold = settings.get("threshold")
    if metric not in BINARY_METRICS and threshold is None:
        raise CrossdiffError(f"{where}: metric {metric!r} is not scored 0/1 per sample by lm-eval (0/1 metrics: "
                             f"{', '.join(BINARY_METRICS)}); set items.threshold (a sample is correct when its value "
                             f">= threshold) or choose a 0/1 metric with items.metric")
    return metric, flt, threshold


def _gold(task, doc: dict, where: str) -> tuple[str, list[str] | None]:
    """(gold target text, choices or None)."""
    target = task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = [str(c) for c in task.doc_to_choice(doc)]
        if isinstance(target, list):
            target = target[0]
        if isinstance(target, str) and target in choices:
            return target, choices
        if isinstance(target, int) and 0 <= target < len(choices):
            return choices[target], choices
        raise CrossdiffError(f"{where}: doc_to_target {target!r} is neither a choice nor an index into {choices}")
    if isinstance(target, list):
        target = target[0] if target else ""
    return str(target), None


def _cell(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    from lm_eval.utils import handle_non_serializable

    return json.dumps(value, default=handle_non_serializable, ensure_ascii=False)


def load_task_items(settings: dict, dataset: str = "items") -> pl.DataFrame:
    """The item table of ``items: {source: lm_eval_task, ...}`` (see the module doc)."""
    if not settings.get("task"):
        raise CrossdiffError(f"datasets.{dataset}.items: source lm_eval_task needs task (an lm-eval task or group name)")
    name = settings["task"]
    tasks = load_tasks(settings)
    rows: list[dict] = []
    for leaf, task in tasks.items():
        where = f"datasets.{dataset}.items: lm-eval task {leaf!r}"
        if task.OUTPUT_TYPE not in ("multiple_choice", "generate_until"):
            raise CrossdiffError(f"{where}: output_type {task.OUTPUT_TYPE!r} is not supported (multiple_choice or "
                                 f"generate_until: the ones with a per-sample correct/incorrect)")
        metric_settings(settings, task, where)
        prefix = subtask_id(name, leaf, len(tasks))
        delimiter = task.config.target_delimiter
        for doc_id, doc in enumerate(eval_docs(task, where)):
            gold, choices = _gold(task, doc, f"{where}, doc {doc_id}")
            text = task.doc_to_text(doc)
            if not isinstance(text, str):  # an index into choices (winogrande-style partial scoring)
                text = str(task.fewshot_context(doc, 0))
            row = {"item_id": f"{prefix}/{doc_id}" if prefix else str(doc_id), "subtask": leaf, "doc_id": doc_id,
                   "doc_hash": doc_hash(doc), "lm_eval_prompt": task.fewshot_context(doc, 0),
                   "lm_eval_delimiter": delimiter, "lm_eval_target": gold}
            for key, value in doc.items():
                row[f"doc_{key}" if key in RESERVED else key] = _cell(value)
            row.setdefault("question", text)
            row.setdefault("answer", gold)
            if choices is not None:
                row.setdefault("choices", json.dumps(choices, ensure_ascii=False))
            rows.append(row)
    if not rows:
        raise CrossdiffError(f"datasets.{dataset}.items: lm-eval task {name!r} has no evaluation docs")
    try:
        df = pl.DataFrame(rows, infer_schema_length=None)
    except (TypeError, pl.exceptions.PolarsError):  # a field with mixed types across docs: keep it as text
        df = pl.DataFrame([{k: (v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in r.items()}
                           for r in rows], infer_schema_length=None)
    print(f"lm-eval task {name}: {len(tasks)} task(s), {df.height} docs", file=sys.stderr)
    return df.with_columns(pl.col("question").cast(pl.Utf8).str.len_chars().alias("question_length"))


def prompt_format(items_settings: dict, prompt: dict | None) -> dict:
    """The dataset's prompt format (crossdiff.prompts.format keys): training renders the item's lm-eval
    context and gold target (or ``model_solution`` with items.solutions) as plain text; evaluation runs the
    task's own config (``lm_eval_task`` carries the settings). Of the prompt section only the training
    limits apply; any other key stops."""
    prompt = dict(prompt or {})
    other = sorted(set(prompt) - set(PROMPT_KEYS))
    if other:
        raise CrossdiffError(f"prompt: {other} do not apply to items.source lm_eval_task (the task's own config "
                             f"renders and scores it); only {list(PROMPT_KEYS)} do")
    target = "{lm_eval_delimiter}{model_solution}" if items_settings.get("solutions") else \
        "{lm_eval_delimiter}{lm_eval_target}"
    return {"template": "{lm_eval_prompt}", "target": target, "chat_template": False,
            "lm_eval_task": {k: v for k, v in items_settings.items() if k != "solutions"}, **prompt}
