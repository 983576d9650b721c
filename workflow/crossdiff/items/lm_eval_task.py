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
  choice's text for multiple choice): the training text of the item; ``lm_eval_system`` and
  ``lm_eval_user`` (the zero-shot chat messages lm-eval builds: instruction + description, question),
  trained on with ``items.chat_template: true``; ``lm_eval_choices`` (JSON: lm-eval's choices, the contexts of
  a multiple-input task such as Winogrande) and ``lm_eval_gold_index``, which the v1 leaderboard's row
  matching (crossdiff.responses.matching) compares a row's choices and gold with;
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
            "lm_eval_system", "lm_eval_user", "lm_eval_choices", "lm_eval_gold_index", "model_solution")
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


def _gold(task, doc: dict, where: str) -> tuple[str, list[str] | None, int | None]:
    """(gold target text, lm-eval's choices or None, gold index or None). For a multiple-input task
    (Winogrande's partial scoring: ``doc_to_text`` the gold index, ``doc_to_choice`` the contexts, one
    continuation) the choices are the contexts and the gold text is the shared continuation."""
    target = task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = [str(c) for c in task.doc_to_choice(doc)]
        if getattr(task, "multiple_input", False):
            index = task.doc_to_text(doc)
            if not isinstance(index, int) or not 0 <= index < len(choices):
                raise CrossdiffError(f"{where}: multiple-input task: doc_to_text {index!r} is not an index into the "
                                     f"contexts {choices}")
            return str(target[0] if isinstance(target, list) else target), choices, index
        if isinstance(target, list):
            target = target[0]
        if isinstance(target, str) and target in choices:
            return target, choices, choices.index(target)
        if isinstance(target, int) and 0 <= target < len(choices):
            return choices[target], choices, target
        raise CrossdiffError(f"{where}: doc_to_target {target!r} is neither a choice nor an index into {choices}")
    if isinstance(target, list):
        target = target[0] if target else ""
    return str(target), None, None


def chat_settings(settings: dict) -> tuple[bool, bool, str | None]:
    """(apply_chat_template, fewshot_as_multiturn, system_instruction) as lm-eval's CLI takes them: the chat
    template off by default; fewshot_as_multiturn defaults to on when the chat template applies."""
    chat = bool(settings.get("chat_template") or False)
    multiturn = settings.get("fewshot_as_multiturn")
    if multiturn and not chat:
        raise CrossdiffError("items.fewshot_as_multiturn: true needs items.chat_template: true (as lm-eval's CLI)")
    return chat, chat if multiturn is None else bool(multiturn), settings.get("system_instruction") or None


def _messages(task, doc: dict, gold_index: int | None, system_instruction: str | None) -> list[dict]:
    """The zero-shot chat messages lm-eval builds for the doc (system: instruction + description; user:
    the question), captured with a chat-template function that returns them instead of rendering."""
    def capture(messages, add_generation_prompt=True):
        return json.dumps(messages)

    ctx = task.fewshot_context(doc, 0, system_instruction=system_instruction, apply_chat_template=True,
                               chat_template=capture)
    if isinstance(ctx, list):  # multiple input: one context per choice, the gold one is trained on
        ctx = ctx[gold_index or 0]
    return json.loads(ctx)


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
        _, _, system_instruction = chat_settings(settings)
        for doc_id, doc in enumerate(eval_docs(task, where)):
            gold, choices, gold_index = _gold(task, doc, f"{where}, doc {doc_id}")
            prompt = task.fewshot_context(doc, 0, system_instruction=system_instruction, gen_prefix=task.doc_to_prefix(doc))
            if isinstance(prompt, list):  # multiple input (winogrande-style partial scoring): the gold context
                prompt = prompt[gold_index]
            text = task.doc_to_text(doc)
            if not isinstance(text, str):  # an index into the contexts
                text = task.doc_to_choice(doc)[text]
            messages = _messages(task, doc, gold_index, system_instruction)
            row = {"item_id": f"{prefix}/{doc_id}" if prefix else str(doc_id), "subtask": leaf, "doc_id": doc_id,
                   "doc_hash": doc_hash(doc), "lm_eval_prompt": prompt, "lm_eval_delimiter": delimiter,
                   "lm_eval_target": gold,
                   "lm_eval_system": "".join(m["content"] for m in messages if m["role"] == "system"),
                   "lm_eval_user": "".join(m["content"] for m in messages if m["role"] == "user"),
                   "lm_eval_choices": None if choices is None else json.dumps(choices, ensure_ascii=False),
                   "lm_eval_gold_index": gold_index}
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
    chat, _, _ = chat_settings(items_settings)
    # the training text is already rendered in the item table: no option lines from the doc's own fields
    prompt.setdefault("choices_field", "lm_eval_no_option_lines")
    solution = "{model_solution}" if items_settings.get("solutions") else "{lm_eval_target}"
    if chat:  # lm-eval's chat request: system (instruction + description) and user turns; no target delimiter
        return {"template": "{lm_eval_user}", "target": solution, "chat_template": True,
                "lm_eval_task": {k: v for k, v in items_settings.items() if k != "solutions"}, **prompt}
    return {"template": "{lm_eval_prompt}", "target": "{lm_eval_delimiter}" + solution, "chat_template": False,
            "lm_eval_task": {k: v for k, v in items_settings.items() if k != "solutions"}, **prompt}


def describe_evaluation(settings: dict, item: dict, tokenizer=None, render=None) -> dict:
    """What lm-eval sends the model for one item (show-prompt): its context (chat-rendered by ``render``, the
    lm-eval renderer of ``tokenizer`` that evaluation installs, crossdiff.prompts.chat.lm_eval_renderer, when
    items.chat_template is on) and its requests."""
    tasks = load_tasks(settings)
    task = tasks.get(item["subtask"])
    if task is None:
        raise CrossdiffError(f"item {item['item_id']!r}: lm-eval task {item['subtask']!r} not in {sorted(tasks)}")
    chat, multiturn, system_instruction = chat_settings(settings)
    if not chat:
        render = None
    if chat:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise CrossdiffError("items.chat_template is true: pass --tokenizer (a model whose tokenizer has a chat "
                                 "template) to show the evaluation request")
        if render is None:
            raise CrossdiffError("describe_evaluation: pass render (crossdiff.prompts.chat.lm_eval_renderer(tokenizer))")
    doc = dict(task.eval_docs[int(item["doc_id"])])
    shots = task.config.num_fewshot or 0
    ctx = task.fewshot_context(doc, shots, system_instruction=system_instruction, apply_chat_template=chat,
                               fewshot_as_multiturn=multiturn, chat_template=render, gen_prefix=task.doc_to_prefix(doc))
    delimiter = task.config.target_delimiter
    if chat and task.OUTPUT_TYPE == "multiple_choice" and not (task.config.gen_prefix and not task.config.gen_prefix[-1:].isspace()):
        delimiter = ""  # lm-eval drops the delimiter under the chat template (unless a gen_prefix asks for it)
    info = {"request": ctx, "output_type": task.OUTPUT_TYPE, "task": task.task_name, "doc_id": int(item["doc_id"]),
            "target_delimiter": delimiter, "num_fewshot": shots, "chat_template": chat,
            "metrics": [m["metric"] for m in task.config.metric_list or [] if isinstance(m["metric"], str)]}
    if shots and task.fewshot_cfg.split == task.config.test_split:
        info["note"] = ("fewshot examples come from the evaluation split: lm-eval draws them per doc in run order, "
                        "so a run may show other examples")
    if task.OUTPUT_TYPE == "multiple_choice":
        if isinstance(ctx, list):  # multiple input: one context per choice, one shared continuation
            info["continuations"] = [delimiter + str(task.doc_to_target(doc))]
            info["gold"] = task.doc_to_text(doc)
        else:
            info["continuations"] = [delimiter + str(c) for c in task.doc_to_choice(doc)]
            info["gold"] = _gold(task, doc, f"item {item['item_id']}")[2]
    else:
        info["generation_kwargs"] = json.loads(json.dumps(task.config.generation_kwargs, default=str))
        info["reference"] = task.doc_to_target(doc)
    return info
