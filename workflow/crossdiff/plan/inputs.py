"""Every local file a configuration names, for the rules' ``input:`` (an edit re-plans exactly its jobs).

One function per thing a config entry names; folders are expanded to their files (a folder's mtime does not
change when a file in it is edited), and a path that does not exist is kept as it is, so Snakemake names it
as a missing input before any job runs.

=================================  ===========================================================================
function                           files
=================================  ===========================================================================
:func:`item_files`                 ``items.path`` (file or folder), ``items.solutions.path``,
                                   ``items.annotations.path`` (arc_hase), and for
                                   ``items.source: lm_eval_task`` :func:`lm_eval_task_files`
:func:`lm_eval_task_files`         the ``include_path`` tree (every file: YAMLs and the ``.py`` files of
                                   their ``!function`` tags), YAMLs and modules it ``include:``\\ s or
                                   ``!function``\\ s from outside that folder, and the local data files of
                                   ``items.overrides`` (``dataset_kwargs.data_files``/``data_dir``/``data_files``,
                                   a local ``dataset_path``)
:func:`response_files`             ``responses.path`` (table, or every file of an lm-eval samples folder),
                                   ``responses.models_list``
:func:`published_files`            ``bins.published.path`` (``source: file``)
:func:`model_files`                a local base model directory given as ``models[].id`` (every file)
:func:`model_solution_files`       ``models[].solutions.<dataset>.path``
=================================  ===========================================================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_INCLUDE = re.compile(r"^\s*include:\s*['\"]?([^'\"#\s]+)", re.M)
_FUNCTION = re.compile(r"!function\s+['\"]?([\w.]+)")


def local_files(path) -> list[str]:
    """A local path as rule inputs: the file, or every file under a folder (sorted; hidden caches such as
    ``__pycache__`` and ``.git`` left out). None or '' gives nothing; a missing path stays as it is."""
    if not path:
        return []
    path = str(path)
    if os.path.isdir(path):
        out = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git") and not d.startswith(".cache"))
            out += [os.path.join(root, f) for f in files if not f.endswith((".pyc", ".lock"))]
        return sorted(out)
    return [path]


def _yaml_references(yaml_path: Path) -> list[Path]:
    """Files a task YAML points at: ``include: other.yaml`` and ``!function module.fn`` (module.py), both
    relative to the YAML's folder, as lm-eval resolves them."""
    try:
        text = yaml_path.read_text(errors="replace")
    except OSError:
        return []
    out = [yaml_path.parent / m for m in _INCLUDE.findall(text)]
    for ref in _FUNCTION.findall(text):
        module = ref.rpartition(".")[0]
        if module:
            out.append(yaml_path.parent / (module.replace(".", "/") + ".py"))
    return out


def _data_paths(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _data_paths(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _data_paths(v)]
    return []


def override_data_files(overrides: dict) -> list[str]:
    """Local data files an lm-eval task override names (``dataset_kwargs.data_files`` / ``data_dir``, a local
    ``dataset_path``); hub names and builder names (``json``) are not files and are left out."""
    kw = overrides.get("dataset_kwargs") or {}
    paths = _data_paths(kw.get("data_files")) + _data_paths(kw.get("data_dir"))
    if isinstance(overrides.get("dataset_path"), str) and os.path.exists(overrides["dataset_path"]):
        paths.append(overrides["dataset_path"])
    out = []
    for p in paths:
        if "://" in p:  # a URL: not tracked (and not offline)
            continue
        out += local_files(p)
    return out


def lm_eval_task_files(items: dict) -> list[str]:
    """The files an ``lm_eval_task`` dataset's task is built from (see the module's table)."""
    out = set(local_files(items.get("include_path")))
    todo = [Path(f) for f in out if f.endswith((".yaml", ".yml"))]
    seen = set()
    while todo:  # references that leave the include_path folder (an include of a shared template, ...)
        y = todo.pop()
        if y in seen:
            continue
        seen.add(y)
        for ref in _yaml_references(y):
            ref = Path(os.path.normpath(ref))
            if ref.is_file() and str(ref) not in out:
                out.add(str(ref))
                if ref.suffix in (".yaml", ".yml"):
                    todo.append(ref)
    out.update(override_data_files(items.get("overrides") or {}))
    return sorted(out)


def item_files(dataset: dict) -> list[str]:
    """Every local file behind a dataset's item table (see the module's table)."""
    items = dataset["items"]
    out = local_files(items.get("path")) + local_files((items.get("solutions") or {}).get("path"))
    out += local_files((items.get("annotations") or {}).get("path"))  # arc_hase: Hase et al.'s ARC annotations
    if items["source"] == "lm_eval_task":
        out += lm_eval_task_files(items)
    return list(dict.fromkeys(out))


def task_files(dataset: dict) -> list[str]:
    """Files an evaluation of the dataset reads beside its task folders: an lm_eval_task's own config."""
    items = dataset["items"]
    return lm_eval_task_files(items) if items["source"] == "lm_eval_task" else []


def response_files(dataset: dict) -> list[str]:
    r = dataset["responses"]
    out = local_files(r.get("path")) if r["source"] in ("table", "lm_eval_samples") else []
    return out + local_files(r.get("models_list"))


def published_files(dataset: dict) -> list[str]:
    spec = dataset["bins"].get("published") or {}
    return local_files(spec.get("path")) if dataset["bins"]["by"] == "published" and spec.get("source") == "file" else []


def is_local_model(model: dict) -> bool:
    """``models[].id`` is a local directory (transformers loads it from disk, not from the hub)."""
    return not model.get("build") and os.path.isdir(model["id"])


def model_files(model: dict) -> list[str]:
    """A local base model directory's files (a built model is its rule's output; a hub id is no file)."""
    return local_files(model["id"]) if is_local_model(model) else []


def model_solution_files(model: dict, name: str) -> list[str]:
    return local_files(((model.get("solutions") or {}).get(name) or {}).get("path"))


def brace_problems(config: dict) -> list[str]:
    """Snakemake reads ``{...}`` in an input path as a wildcard: a config path holding one cannot be tracked."""
    problems = []

    def check(key, path):
        if path and ("{" in str(path) or "}" in str(path)):
            problems.append(f"{key}: {path!r} holds '{{' or '}}', which Snakemake reads as a wildcard in an input "
                            "path; rename the file or folder")

    for name, d in config["datasets"].items():
        items, r = d["items"], d["responses"]
        check(f"datasets.{name}.items.path", items.get("path"))
        check(f"datasets.{name}.items.solutions.path", (items.get("solutions") or {}).get("path"))
        check(f"datasets.{name}.items.annotations.path", (items.get("annotations") or {}).get("path"))
        check(f"datasets.{name}.items.include_path", items.get("include_path"))
        for p in override_data_files(items.get("overrides") or {}) if items["source"] == "lm_eval_task" else []:
            check(f"datasets.{name}.items.overrides (data file)", p)
        check(f"datasets.{name}.responses.path", r.get("path"))
        check(f"datasets.{name}.responses.models_list", r.get("models_list"))
    for i, m in enumerate(config["models"]):
        if is_local_model(m):
            check(f"models[{i}].id", m["id"])
        for name, spec in (m.get("solutions") or {}).items():
            check(f"models[{i}].solutions.{name}.path", (spec or {}).get("path"))
    return problems
