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

How crossdiff builds the task (:func:`load_tasks`), beside lm-eval's own factory:

* ``items.overrides`` are merged into each leaf task's config key by key at every depth (nested mappings merged,
  lists and other values replaced): ``generation_kwargs: {max_gen_toks: 32}`` keeps the task's ``until``.
  lm-eval's own override merge is one level deep (lm_eval/tasks/_factory.py:272-273); its group defaults are
  still merged its way. In a group's data keys (``dataset_path``, ``dataset_name``, ``dataset_kwargs``) the
  text ``{task}`` becomes each leaf's lm-eval task name (one local file per subtask).
* Every leaf is a :class:`CrossdiffTask` (lm-eval's ``ConfigurableTask`` with three additions): the splits lm-eval
  reads while building the task are checked first (a missing one is named with the key that supplies it, an
  empty evaluation split stops), and few-shot examples are drawn per doc, from a generator seeded by the
  fewshot seed and the doc's hash (lm-eval draws them from one generator per task call, so a doc's examples
  depend on which docs share the call: lm_eval/api/samplers.py:26, 58; lm_eval/api/task.py:982). A doc's
  prompt is then the same whether its bin is scored alone or with every other bin, and ``show-prompt`` shows
  the request that was scored.

The checks that need no lm-eval (the parse-time ones: :func:`parse_problems`, :func:`context_problems`) import
nothing from it; this module imports lm-eval only inside functions.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from functools import lru_cache
from typing import Any

import polars as pl

from crossdiff.errors import CrossdiffError

#: per-sample metrics that lm-eval scores 0/1; any other needs items.threshold
BINARY_METRICS = ("acc", "acc_norm", "acc_mutual_info", "acc_bytes", "exact_match", "em")
#: crossdiff's own item-table columns; a doc field of the same name is kept as doc_<name>
RESERVED = ("item_id", "subtask", "doc_id", "doc_hash", "lm_eval_prompt", "lm_eval_target", "lm_eval_delimiter",
            "lm_eval_system", "lm_eval_user", "lm_eval_choices", "lm_eval_gold_index", "model_solution")
PROMPT_KEYS = ("max_length", "on_no_completion")  # the prompt-section keys that still apply (training limits)
#: lm-eval's default ``fewshot_random_seed`` (lm_eval/evaluator.py:84, DEFAULT_OTHER_SEED): evaluation passes it
#: explicitly and show-prompt draws with it, so both build the same request
FEWSHOT_SEED = 1234
#: lm-eval's default ``max_gen_toks`` when a task's generation_kwargs set none (lm_eval/models/huggingface.py:628)
DEFAULT_MAX_GEN_TOKS = 256
#: aggregations of a per-sample score (a value per doc that a threshold can judge)
PER_SAMPLE_AGGREGATIONS = ("mean", "median", "nanmean")
#: lm-eval's corpus-level aggregations (lm_eval/api/metrics.py:46-160): per sample they keep inputs
#: (reference/prediction pairs, log-likelihoods), not a score
CORPUS_AGGREGATIONS = ("perplexity", "weighted_perplexity", "bits_per_byte", "f1", "matthews_corrcoef", "bleu", "chrf",
                       "chrf++", "ter", "brier_score", "bypass")
#: metric names lm-eval aggregates corpus-level by default (lm_eval/api/metrics.py, @register_metric)
CORPUS_METRICS = ("bleu", "chrf", "ter", "f1", "mcc", "brier_score", "perplexity", "word_perplexity",
                  "byte_perplexity", "bits_per_byte")
#: task config keys that say where the data comes from (the only ones where ``{task}`` is expanded)
DATA_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


# ------------------------------------------------------------------ pure helpers (no lm-eval import)
def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base`` key by key at every depth: where both hold a mapping the two are
    merged, anything else (lists, strings, callables, None) in ``over`` replaces the base value."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = deep_merge({}, value)
        else:
            out[key] = value
    return out


def _expand(value, leaf: str):
    if isinstance(value, str):
        return value.replace("{task}", leaf)
    if isinstance(value, dict):
        return {k: _expand(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, leaf) for v in value]
    return value


def leaf_overrides(overrides: dict, leaf: str) -> dict:
    """The user's overrides for one leaf task: ``{task}`` in the data keys becomes the leaf's task name."""
    return {k: (_expand(v, leaf) if k in DATA_KEYS else v) for k, v in overrides.items()}


def data_source(cfg: dict) -> str:
    """What data a task config reads, as one comparable string: the data files (or folder) when it names
    them (a builder such as ``json`` then ignores ``dataset_name``), else the dataset and its config name."""
    kwargs = cfg.get("dataset_kwargs") or {}
    if isinstance(kwargs, dict) and (kwargs.get("data_files") or kwargs.get("data_dir")):
        key = [cfg.get("dataset_path"), kwargs.get("data_files"), kwargs.get("data_dir")]
    else:
        key = [cfg.get("dataset_path"), cfg.get("dataset_name"), kwargs]
    return json.dumps(key, sort_keys=True, default=str)


def per_doc_seed(seed, doc: dict) -> str:
    """The seed of one doc's few-shot draw: the fewshot seed and lm-eval's hash of the doc."""
    return f"{seed}/{doc_hash(doc)}"


def parse_problems(dataset: str, items_cfg: dict, methods=None) -> list[str]:
    """Problems of an ``items: {source: lm_eval_task}`` section that need no lm-eval and no data (for the
    workflow's parse-time checks; every one is also checked again when the task is built). ``methods`` is
    ``study.methods``. Returns one message per problem (empty: none)."""
    if (items_cfg or {}).get("source") != "lm_eval_task":
        return []
    where = f"datasets.{dataset}.items"
    problems = []
    if not items_cfg.get("task"):
        problems.append(f"{where}: source lm_eval_task needs task (an lm-eval task or group name)")
    overrides = items_cfg.get("overrides") or {}
    if not isinstance(overrides, dict):
        problems.append(f"{where}.overrides: expected a mapping of lm-eval task config keys")
        overrides = {}
    bad = sorted(set(overrides) & {"task", "group", "task_alias"})
    if bad:
        problems.append(f"{where}.overrides: {bad} cannot be overridden (they name the task)")
    if items_cfg.get("fewshot_as_multiturn") and not items_cfg.get("chat_template"):
        problems.append(f"{where}.fewshot_as_multiturn: true needs {where}.chat_template: true (as lm-eval's CLI)")
    metric = items_cfg.get("metric")
    if metric in CORPUS_METRICS:
        problems.append(f"{where}.metric = {metric!r}: lm-eval scores it corpus-level (per sample it keeps inputs, "
                        f"not a score), so no item can be correct or not"
                        + (f" whatever {where}.threshold says" if items_cfg.get("threshold") is not None else "")
                        + "; choose a per-sample metric (aggregated by mean, e.g. acc, exact_match)")
    if "icl" in (methods or []) and items_cfg.get("solutions"):
        problems.append(f"{where}: study.methods has icl and items.solutions is set: ICL on an lm-eval task shows the "
                        f"task's own doc_to_target as the demonstrations' answers, not the solutions SFT trains on; "
                        f"drop icl from study.methods for this dataset or drop items.solutions")
    return problems


def context_length(model_config: dict, max_length: int | None = None) -> int | None:
    """The context length lm-eval gives a model (lm_eval/models/utils.py:551 resolve_max_length): ``max_length``
    (evaluate.max_length) when set, else the (text) config's ``n_positions``, ``max_position_embeddings`` or
    ``n_ctx``; None when the config names none (lm-eval then asks the tokenizer, else 2048)."""
    if max_length:
        return int(max_length)
    cfg = model_config.get("text_config") or model_config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = cfg.get(key) if isinstance(cfg, dict) else None
        if value is not None:
            return int(value)
    return None


def declared_max_gen_toks(items_cfg: dict) -> int | None:
    """``max_gen_toks`` (or an alias lm-eval accepts) set in ``items.overrides.generation_kwargs``, else None (the
    task's own YAML decides; lm-eval's default is 256 when it sets none)."""
    gen = ((items_cfg or {}).get("overrides") or {}).get("generation_kwargs") or {}
    for key in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens"):  # lm-eval's priority order
        if isinstance(gen, dict) and gen.get(key) is not None:
            return int(gen[key])
    return None


def context_message(ctx: int, max_gen_toks: int, *, model: str, dataset: str, task: str | None = None,
                    via_max_length: bool = False) -> str | None:
    """The problem of a generation task whose ``max_gen_toks`` leaves no room for a prompt in ``ctx`` tokens
    (lm-eval's hf model asserts ``max_length - max_gen_toks > 0``: lm_eval/models/huggingface.py:1644-1646), else None."""
    if max_gen_toks < ctx:
        return None
    what = f"lm-eval task {task!r} (datasets.{dataset})" if task else f"datasets.{dataset}"
    return (f"{what}: {model} has a context of {ctx} tokens" + (" (evaluate.max_length)" if via_max_length else "")
            + f" and the task generates up to max_gen_toks = {max_gen_toks} tokens (its generation_kwargs, else "
            f"lm-eval's default {DEFAULT_MAX_GEN_TOKS}), which leaves no room for the prompt: lm-eval would stop with an "
            f"AssertionError when generation starts. Set datasets.{dataset}.items.overrides.generation_kwargs."
            f"max_gen_toks below {ctx} (what the answers need), or use a model with a longer context")


def context_problems(model_config: dict, max_gen_toks: int | None, *, model: str = "the model", dataset: str = "items",
                     task: str | None = None, max_length: int | None = None) -> list[str]:
    """Parse-time form of :func:`context_message`: ``model_config`` is the model's config.json as a dict,
    ``max_gen_toks`` the one items.overrides declares (:func:`declared_max_gen_toks`), ``max_length``
    evaluate.max_length. Empty: fine, or not decidable without the task (``max_gen_toks`` None: the task's YAML
    decides, or the task does not generate; the evaluation job checks the built task before generating), or
    the config names no context length."""
    ctx = context_length(model_config, max_length)
    if ctx is None or max_gen_toks is None:
        return []
    msg = context_message(ctx, int(max_gen_toks), model=model, dataset=dataset, task=task,
                          via_max_length=bool(max_length))
    return [msg] if msg else []


def _quiet_lm_eval() -> None:
    import logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)


def _folder_signature(folder: str | None) -> tuple:
    if not folder:
        return ()
    out = []
    for root, _, files in os.walk(folder):
        out += [(os.path.join(root, f), os.stat(os.path.join(root, f)).st_mtime_ns) for f in files
                if f.endswith((".yaml", ".yml"))]
    return tuple(sorted(out))


@lru_cache(maxsize=8)
def _cached_manager(include: str | None, defaults: bool, signature: tuple):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include, include_defaults=defaults)


def _manager(include: str | None, defaults: bool):
    """One lm-eval TaskManager per (include_path and its YAML files, built-ins) in a process: indexing the
    built-ins takes seconds."""
    return _cached_manager(include, defaults, _folder_signature(include))


def task_manager(settings: dict, name: str):
    """lm-eval's TaskManager over ``include_path`` only (fast); the built-in registry too when the task is
    not found there (indexing it takes ~6-14 s, once per process). An unknown name stops with the closest
    registered names."""
    _quiet_lm_eval()
    include = settings.get("include_path")
    if include:
        if not os.path.isdir(include):
            raise CrossdiffError(f"items.include_path = {include!r}: not a directory (expected a folder of lm-eval task YAMLs)")
        manager = _manager(os.path.abspath(include), False)
        if name in manager.all_tasks:
            return manager
    manager = _manager(os.path.abspath(include) if include else None, True)
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


def _local_files(data_files) -> list[tuple[str, str]]:
    """(split, path) of the local files a ``data_files`` value names (no URLs, no globs)."""
    if isinstance(data_files, (str, list)):
        data_files = {"train": data_files}  # datasets' own default split name
    out = []
    for split, paths in (data_files or {}).items() if isinstance(data_files, dict) else ():
        for path in paths if isinstance(paths, list) else [paths]:
            if isinstance(path, str) and "://" not in path and not any(c in path for c in "*?["):
                out.append((str(split), path))
    return out


def _fewshot_pool_split(config, fewshot_cfg) -> tuple[str, str] | None:
    """(config key, split) of the split lm-eval builds the few-shot pool from while building the task, even at
    num_fewshot 0 (lm_eval/api/task.py:786, 906-930 and 204-219), or None (an inline ``samples`` list)."""
    if getattr(fewshot_cfg, "split", None) is not None:
        return "fewshot_split", fewshot_cfg.split
    if getattr(fewshot_cfg, "samples", None) is not None:
        return None
    for key in ("training_split", "validation_split", "test_split"):
        if getattr(config, key, None) is not None:
            return key, getattr(config, key)
    return None


@lru_cache(maxsize=1)
def _classes():
    """(CrossdiffTask, PoolSampler, CrossdiffFactory), defined on first use (they subclass lm-eval's classes)."""
    from lm_eval.api.samplers import ContextSampler
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._factory import TaskFactory
    from lm_eval.tasks._index import Kind

    class CrossdiffTask(ConfigurableTask):
        """lm-eval's ConfigurableTask; the splits it reads are checked before it reads them, and few-shot
        examples are drawn per doc (see the module doc)."""

        _crossdiff_seed = FEWSHOT_SEED

        def download(self, dataset_kwargs=None, **kwargs) -> None:
            name = self.config.task
            for split, path in _local_files((dataset_kwargs or {}).get("data_files")):
                if not os.path.exists(path):
                    rel = "" if os.path.isabs(path) else f" (a relative path resolves against the working directory, {os.getcwd()})"
                    raise CrossdiffError(f"lm-eval task {name!r}: dataset_kwargs.data_files.{split} = {path!r} (items.overrides "
                                         f"or the task's YAML): no such file{rel}")
                if os.path.isfile(path) and os.path.getsize(path) < (1 << 16):
                    with open(path, "rb") as fh:
                        if not fh.read().strip():
                            raise CrossdiffError(f"lm-eval task {name!r}: dataset_kwargs.data_files.{split} = {path!r} is "
                                                 f"empty: its {split!r} split would hold no docs")
            super().download(dataset_kwargs, **kwargs)
            self._check_splits()

        def _check_splits(self) -> None:
            ds, name, cfg = self.dataset, self.config.task, self.config
            if not hasattr(ds, "keys"):
                return
            present = sorted(map(str, ds.keys()))
            local = bool(_local_files((cfg.dataset_kwargs or {}).get("data_files")))
            eval_key = "test_split" if cfg.test_split is not None else "validation_split"
            eval_split = getattr(cfg, eval_key)
            needed = [] if eval_split is None else [(eval_key, eval_split, "the evaluation split (items.split, else "
                                                     "the task's test_split, else its validation_split)")]
            pool = _fewshot_pool_split(cfg, self.fewshot_cfg)
            if pool is not None and pool[1] != eval_split:
                needed.append((*pool, "lm-eval builds its few-shot pool from it while building the task, even at "
                                      "num_fewshot: 0"))
            for key, split, why in needed:
                if split in present:
                    continue
                if key == eval_key:
                    fix = f"set items.split to one of {present}" + (
                        f", or add a file for it: items.overrides.dataset_kwargs.data_files.{split}" if local else "")
                else:
                    fix = (f"add a file in the same schema for it: items.overrides.dataset_kwargs.data_files.{split}: FILE"
                           if local else f"point items.overrides.{key} at one of {present}")
                    fix += f", or set items.overrides.{key}: null" + (
                        " (with training_split and validation_split null the pool is the evaluation split)"
                        if key != "fewshot_split" else "")
                raise CrossdiffError(f"lm-eval task {name!r}: its {key} {split!r} is not a split of its data (splits: "
                                     f"{', '.join(present) or 'none'}); {why}; {fix}")
            if eval_split is None or not hasattr(ds[eval_split], "__len__"):  # streamed: eval_docs() says so later
                return
            if len(ds[eval_split]) == 0:
                raise CrossdiffError(f"lm-eval task {name!r}: its evaluation split {eval_split!r} ({eval_key}) holds no "
                                     f"docs; point it at data with docs")
            if cfg.process_docs is not None and len(self.eval_docs) == 0:
                raise CrossdiffError(f"lm-eval task {name!r}: no docs are left of the evaluation split {eval_split!r} "
                                     f"after the task's process_docs")

        def set_fewshot_seed(self, seed: int | None = None) -> None:
            self._crossdiff_seed = seed
            super().set_fewshot_seed(seed)

        def fewshot_context(self, doc, num_fewshot, **kwargs):
            sampler = getattr(self, "sampler", None)
            if num_fewshot and sampler is not None:
                sampler.set_rnd(per_doc_seed(self._crossdiff_seed, doc))  # the draw depends on this doc alone
                sampler.crossdiff_doc = doc
            return super().fewshot_context(doc, num_fewshot, **kwargs)

    class PoolSampler(ContextSampler):
        """lm-eval's default draw over a given pool of docs (``fewshot_config.samples``) that never returns the
        doc being evaluated (lm-eval leaves it out only when the pool is the evaluation split:
        lm_eval/api/task.py:982-986). Used for ICL's demonstrations."""

        crossdiff_doc = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._hashes = {doc_hash(dict(d)) for d in self.df}

        def sample(self, n, eval_doc=None, df=None, **kwargs):
            doc = eval_doc if eval_doc is not None else self.crossdiff_doc
            inside = doc is not None and doc_hash(dict(doc)) in self._hashes
            return super().sample(n, eval_doc=doc if inside else None, df=df, **kwargs)

    class CrossdiffFactory(TaskFactory):
        """lm-eval's TaskFactory: leaves are CrossdiffTasks, the user's overrides merged in deep (after lm-eval's
        own shallow group defaults), then ``hook(cfg)`` (crossdiff's own changes, e.g. ICL's few-shot pool)."""

        def __init__(self, meta, overrides: dict, hook=None):
            super().__init__(meta=meta)
            self.user, self.hook, self.sources = overrides, hook, {}

        def _load_full_config(self, entry, overrides=None):
            cfg = super()._load_full_config(entry, overrides)
            if entry.kind in (Kind.GROUP, Kind.TAG):
                return cfg
            leaf = cfg.get("task") or entry.name
            before = data_source(cfg)
            cfg = deep_merge(cfg, leaf_overrides(self.user, leaf))
            self.sources[leaf] = (before, data_source(cfg))
            return self.hook(cfg) if self.hook else cfg

        def _build_task(self, entry, overrides):
            cfg = self._load_full_config(entry, overrides)
            if "class" in cfg:  # a Python task: lm-eval's own route
                return super()._build_task(entry, overrides)
            for key in ("tag", "group", "task_list"):  # as lm_eval/tasks/_factory.py:69-71
                cfg.pop(key, None)
            return CrossdiffTask(config=cfg)

    return CrossdiffTask, PoolSampler, CrossdiffFactory


def _build_error(name: str, exc: Exception, overrides: dict) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = f"items.task {name!r}: lm-eval cannot build it: {type(exc).__name__}: {first}"
    if isinstance(exc, KeyError):
        split = str(exc.args[0]) if exc.args else "SPLIT"
        return (text + f"; a split the task reads ({split!r}) is not in its data: give it a file "
                f"(items.overrides.dataset_kwargs.data_files.{split}) or set the key naming it (training_split, "
                f"validation_split, test_split, fewshot_split) to null in items.overrides")
    hub = any(w in f"{type(exc).__name__} {first}".lower() for w in ("offline", "connection", "hub", "couldn't reach",
                                                                      "doesn't exist", "datasetnotfound"))
    kwargs = overrides.get("dataset_kwargs") if isinstance(overrides.get("dataset_kwargs"), dict) else {}
    if hub and not kwargs.get("data_files"):
        text += ("; offline, point it at a local copy with items.overrides (dataset_path: json, dataset_name: null, "
                 "dataset_kwargs: {data_files: {<split>: /abs/path.jsonl}}, one file per split the task reads)")
    return text


def load_tasks(settings: dict, manager=None, dataset: str = "items", hook=None) -> dict[str, Any]:
    """leaf task name -> lm-eval Task (a :class:`CrossdiffTask`) in lm-eval's order, built by lm-eval's own factory
    from the registered config, the user's overrides merged deep into each leaf (see the module doc), then
    ``hook(cfg)``. Refuses an override that makes a group's subtasks read one and the same data where their own
    configs read different data (every subtask would score the same docs)."""
    from lm_eval.api.group import Group
    from lm_eval.api.task import ConfigurableTask

    name = settings["task"]
    where = f"datasets.{dataset}.items"
    manager = manager or task_manager(settings, name)
    overrides = task_overrides(settings)
    CrossdiffTask, _, CrossdiffFactory = _classes()
    factory = CrossdiffFactory(manager._factory._meta, overrides, hook)
    try:
        built = factory.build(manager.task_index[name], overrides=None, registry=manager.task_index)
    except CrossdiffError as exc:
        raise CrossdiffError(f"{where}: {exc}") from None
    except Exception as exc:  # dataset not found offline, bad override, ...: say which task and how to fix
        raise CrossdiffError(f"{where}: {_build_error(name, exc, overrides)}") from None
    leaves = built.get_all_tasks() if isinstance(built, Group) else built if isinstance(built, list) else [built]
    if not leaves:
        raise CrossdiffError(f"{where}: items.task = {name!r}: lm-eval builds no task from it")
    tasks = {t.task_name: t for t in leaves}
    inline = sorted(t for t in tasks if t not in factory.sources)
    if inline and overrides:
        raise CrossdiffError(f"{where}: lm-eval group {name!r} defines {inline} inline (not as registered tasks): "
                             f"items.overrides cannot be applied to them; write them as task YAMLs in items.include_path")
    for t in tasks.values():  # inline members were built by lm-eval directly: same class, for the per-doc draw
        if type(t) is ConfigurableTask:
            t.__class__ = CrossdiffTask
    if len(tasks) > 1 and overrides:
        before = {leaf: factory.sources[leaf][0] for leaf in tasks}
        after = {leaf: factory.sources[leaf][1] for leaf in tasks}
        if len(set(after.values())) < len(set(before.values())):
            shared = sorted(leaf for leaf in tasks if list(after.values()).count(after[leaf]) > 1)
            raise CrossdiffError(
                f"{where}.overrides: lm-eval passes a group's overrides to every subtask, and these make "
                f"{len(shared)} of the {len(tasks)} subtasks of {name!r} ({', '.join(shared[:4])}"
                f"{', ...' if len(shared) > 4 else ''}), whose own configs read different data, read the same data: "
                f"every one would score the same docs. Write {{task}} in the data path (e.g. dataset_kwargs: "
                f"{{data_files: {{test: data/{{task}}.jsonl}}}}; it becomes each subtask's lm-eval task name, e.g. "
                f"{shared[0]}), or make each subtask its own dataset (items.task: {shared[0]}, ...)")
    return tasks


def subtask_id(group: str, leaf: str, n_leaves: int) -> str | None:
    """Item-id prefix of a leaf task of a group (None for a single task)."""
    if n_leaves == 1 and leaf == group:
        return None
    return leaf[len(group) + 1:] if leaf.startswith(group + "_") else leaf


def check_subtask_ids(group: str, leaves: list[str], dataset: str = "items") -> None:
    """Two leaves of a group whose item-id prefixes coincide (``g_a`` and ``a`` in group ``g`` are both ``a``)
    would give two docs one item id: refused, naming them."""
    seen: dict[str, str] = {}
    for leaf in leaves:
        prefix = subtask_id(group, leaf, len(leaves))
        if prefix in seen:
            raise CrossdiffError(
                f"datasets.{dataset}.items: lm-eval group {group!r} has the subtasks {seen[prefix]!r} and {leaf!r}, "
                f"which both get item ids '{prefix}/<doc_id>' (a subtask's id drops the '{group}_' prefix of its name): "
                f"their docs would share ids and one's responses would be lost. Make them separate datasets "
                f"(items.task: {seen[prefix]} and items.task: {leaf}), or rename one in your group YAML")
        seen[prefix] = leaf


def check_fewshot(settings: dict, task, where: str, dataset: str = "items") -> None:
    """A task whose own config evaluates k-shot (gsm8k: ``num_fewshot: 5``) while the training text is the doc alone
    (0-shot) is refused unless items.overrides.num_fewshot states the shots (config/README.md says why)."""
    shots = task.config.num_fewshot or 0
    stated = "num_fewshot" in (settings.get("overrides") or {})
    if shots > 0 and not stated:
        raise CrossdiffError(
            f"{where}: the task's own config evaluates {shots}-shot (num_fewshot: {shots}) but crossdiff trains on the doc "
            f"alone (0-shot): fine-tuned models would be scored on prompts unlike their training text. Set "
            f"datasets.{dataset}.items.overrides.num_fewshot: 0 to evaluate as trained, or num_fewshot: {shots} to keep "
            f"lm-eval's {shots}-shot evaluation knowingly")


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


def metric_settings(settings: dict, task, where: str, dataset: str = "items") -> tuple[str, str, float | None]:
    """(metric, filter, threshold) of the task: the chosen or first metric and filter; a metric lm-eval does
    not score 0/1 per sample needs items.threshold, and a corpus-level one (``bleu``: lm-eval aggregates it over
    all samples and keeps no per-sample score) is refused, threshold or not."""
    from lm_eval.api.registry import get_aggregation

    key = f"datasets.{dataset}.items"
    names = [m["metric"] if isinstance(m["metric"], str) else getattr(m["metric"], "__name__", str(m["metric"]))
             for m in (task.config.metric_list or [])]
    metric = settings.get("metric") or (names[0] if names else None)
    if metric is None:
        raise CrossdiffError(f"{where}: the task declares no metric_list; set {key}.metric")
    if names and metric not in names:
        raise CrossdiffError(f"{where}: {key}.metric = {metric!r} is not one of the task's metrics {names}")
    filters = [f.name if hasattr(f, "name") else f for f in (getattr(task, "_filters", None) or [])]
    filters = [getattr(f, "name", f) for f in filters] or ["none"]
    flt = settings.get("filter") or filters[0]
    if flt not in filters:
        raise CrossdiffError(f"{where}: {key}.filter = {flt!r} is not one of the task's filters {filters}")
    aggregations = task.aggregation() if hasattr(task, "aggregation") else {}
    per_sample = [get_aggregation(n) for n in PER_SAMPLE_AGGREGATIONS]
    corpus = {n: get_aggregation(n) for n in CORPUS_AGGREGATIONS}
    agg = aggregations.get(metric)
    corpus_name = next((n for n, f in corpus.items() if f is not None and f is agg), None)
    if corpus_name is not None:
        usable = [m for m in names if aggregations.get(m) in per_sample]
        raise CrossdiffError(f"{where}: {key}.metric = {metric!r} is a corpus-level score: lm-eval aggregates it with "
                             f"{corpus_name!r} over all samples and keeps no per-sample score, so no item is correct or "
                             f"not" + (f" whatever {key}.threshold = {settings.get('threshold')} says"
                                       if settings.get("threshold") is not None else "")
                             + f"; choose a per-sample metric with {key}.metric"
                             + (f" (this task's: {', '.join(usable)})" if usable else " (one lm-eval aggregates by mean)"))
    threshold = settings.get("threshold")
    if metric not in BINARY_METRICS and threshold is None:
        raise CrossdiffError(f"{where}: metric {metric!r} is not scored 0/1 per sample by lm-eval (0/1 metrics: "
                             f"{', '.join(BINARY_METRICS)}); set {key}.threshold (a sample is correct when its value "
                             f">= threshold) or choose a 0/1 metric with {key}.metric")
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
    tasks = load_tasks(settings, dataset=dataset)
    check_subtask_ids(name, list(tasks), dataset)
    rows: list[dict] = []
    for leaf, task in tasks.items():
        where = f"datasets.{dataset}.items: lm-eval task {leaf!r}"
        if task.OUTPUT_TYPE not in ("multiple_choice", "generate_until"):
            raise CrossdiffError(f"{where}: output_type {task.OUTPUT_TYPE!r} is not supported (multiple_choice or "
                                 f"generate_until: the ones with a per-sample correct/incorrect)")
        metric_settings(settings, task, where, dataset)
        check_fewshot(settings, task, where, dataset)
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


def describe_evaluation(settings: dict, item: dict, tokenizer=None, render=None, tasks=None) -> dict:
    """What lm-eval sends the model for one item (show-prompt): its context (chat-rendered by ``render``, the
    lm-eval renderer of ``tokenizer`` that evaluation installs, crossdiff.prompts.chat.lm_eval_renderer, when
    items.chat_template is on) and its requests. ``tasks``: :func:`load_tasks`'s, when already loaded."""
    tasks = tasks if tasks is not None else load_tasks(settings)
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
    if doc_hash(doc) != item.get("doc_hash", doc_hash(doc)):
        raise CrossdiffError(f"item {item['item_id']!r}: lm-eval's doc {item['doc_id']} of {item['subtask']!r} differs from "
                             f"the item table's (doc_hash): the dataset or its order changed; rebuild results/items")
    task.set_fewshot_seed(FEWSHOT_SEED)  # the seed evaluation passes: the same per-doc draw, the request scored
    shots = task.config.num_fewshot or 0
    ctx = task.fewshot_context(doc, shots, system_instruction=system_instruction, apply_chat_template=chat,
                               fewshot_as_multiturn=multiturn, chat_template=render, gen_prefix=task.doc_to_prefix(doc))
    delimiter = task.config.target_delimiter
    if chat and task.OUTPUT_TYPE == "multiple_choice" and not (task.config.gen_prefix and not task.config.gen_prefix[-1:].isspace()):
        delimiter = ""  # lm-eval drops the delimiter under the chat template (unless a gen_prefix asks for it)
    info = {"request": ctx, "output_type": task.OUTPUT_TYPE, "task": task.task_name, "doc_id": int(item["doc_id"]),
            "target_delimiter": delimiter, "num_fewshot": shots, "chat_template": chat,
            "metrics": [m["metric"] for m in task.config.metric_list or [] if isinstance(m["metric"], str)]}
    if shots:
        info["note"] = (f"{shots} few-shot example(s), drawn for this doc alone (seed {FEWSHOT_SEED} and the doc's hash): "
                        f"the request evaluation scores, whichever docs share its lm-eval call")
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
