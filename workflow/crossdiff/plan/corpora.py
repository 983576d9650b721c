"""Datasets without responses, token-length measures and cross-dataset testing (Liu et al. 2026; issue 28).

* ``responses.source: none``: no response matrix, no IRT fit; the dataset is binned by an item measure from
  its item table alone (``bins.by``: a numeric column, ``length:COLUMN``, ``length_tokens:COLUMN``), the bins
  table's ``difficulty`` being that measure (``make-bins --no-irt``). ``bins.by: irt`` (and the measures that
  score IRT items: ``zero_shot:``, ``loss:``, ``published``) are refused at parse.
* ``bins.by: length_tokens:COLUMN`` counts tokens with ``datasets.<d>.bins.tokenizer`` (:func:`tokenizer_of`).
* ``datasets.<d>.test_on: [<other>, ...]``: every checkpoint trained on a bin of ``d`` is also scored on every
  bin of each other dataset, with that dataset's task folders and evaluation settings
  (``results/eval/{model}/{d}/{trained}/on-{other}/bin{t}.json``); the other dataset's zero-shot row is its own.

:func:`problems` gathers what is wrong with these keys before any job runs (:mod:`crossdiff.plan.checks`).
"""

from __future__ import annotations

import os
import re

from crossdiff.bins import measures
from crossdiff.plan import inputs

#: results/eval/{model}/{dataset}/{trained}/<TRANSFER_DIR>{test}/bin{t}.json
TRANSFER_DIR = "on-"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def has_irt(plan, name: str) -> bool:
    """The dataset has responses, hence an IRT fit (``responses.source`` is not ``none``)."""
    return plan.dataset(name)["responses"]["source"] != "none"


def tokenizer_of(plan, name: str) -> dict | None:
    """The tokenizer of ``bins.by: length_tokens:COLUMN``: ``{"ref", "model", "files"}``: the path or hub id to
    load (a built model's directory ``results/models/<slug>``), the model slug it belongs to (or None) and the
    local files that are the job's inputs (a built model's directory, a local model's files). None when the
    dataset is not binned by token length."""
    found = measures.parse(plan.dataset(name)["bins"]["by"])
    if not found or found[0].argument != "column":
        return None
    named = plan.dataset(name)["bins"].get("tokenizer")
    if named is None:
        if not plan.models:
            return {"ref": None, "model": None, "files": []}
        named = next(iter(plan.models))
    if named in plan.models:
        return tokenizer_of_slug(plan, named)
    by_id = [slug for slug, m in plan.models.items() if m["id"] == named]
    if by_id:
        return tokenizer_of_slug(plan, by_id[0])
    return {"ref": named, "model": None, "files": inputs.local_files(named) if os.path.isdir(named) else []}


def tokenizer_of_slug(plan, slug: str) -> dict:
    m = plan.models[slug]
    files = [f"results/models/{slug}"] if m["build"] else inputs.model_files(m)
    return {"ref": plan.base_model_ref(slug), "model": slug, "files": files}


def test_on(plan, name: str) -> list[str]:
    """The other datasets a study dataset's checkpoints are scored on (``datasets.<d>.test_on``)."""
    if name not in plan.study_datasets() or not plan.trained_methods():
        return []
    return list(plan.dataset(name).get("test_on") or [])


def transfer_pairs(plan) -> list[tuple[str, str]]:
    """(train dataset, test dataset) of every cross-dataset test."""
    return [(d, t) for d in plan.study_datasets() for t in test_on(plan, d)]


def test_only_datasets(plan) -> list[str]:
    """Datasets scored only as another's test_on (no fine-tunes of their own): they get their bins, task folders
    and zero-shot cells."""
    study = set(plan.study_datasets())
    return sorted({t for _, t in transfer_pairs(plan)} - study)


def problems(plan) -> list[str]:
    out = []
    for name in plan.datasets:
        d = plan.dataset(name)
        by, items = d["bins"]["by"], d["items"]
        found = measures.parse(by)
        if not has_irt(plan, name):
            if items["source"] == "none":
                out.append(f"datasets.{name}: responses.source none and items.source none: nothing to bin; give the "
                           "dataset items (a corpus, a file, a benchmark adapter)")
            elif by in ("irt", "published") or (found and found[0].argument == "model"):
                what = "an IRT fit" if by == "irt" else ("the IRT items" if found else "the IRT items to match")
                out.append(f"datasets.{name}.bins.by = {by!r} needs {what}, but responses.source is none (no responses, "
                           "no IRT); bin by an item column (e.g. level, n_ops), length:COLUMN (characters) or "
                           "length_tokens:COLUMN (tokens)")
        if items["source"] == "corpus":
            if bool(items.get("hub_id")) == bool(items.get("path")):
                out.append(f"datasets.{name}.items: source corpus needs exactly one of hub_id and path")
            cols = items["columns"]
            if not cols.get("answer") and not cols.get("solution"):
                out.append(f"datasets.{name}.items.columns: answer is null (taken from the solution's last \\boxed{{}}) "
                           "but solution is null too; name an answer or a solution column")
            if items.get("pick") and not cols.get("solution"):
                out.append(f"datasets.{name}.items.pick = {items['pick']!r} chooses among a list-valued solution, but "
                           "columns.solution is null")
        out += _tokenizer_problems(plan, name, found)
        out += _test_on_problems(plan, name)
    return out


def _tokenizer_problems(plan, name: str, found) -> list[str]:
    d = plan.dataset(name)
    named = d["bins"].get("tokenizer")
    if not found or found[0].argument != "column":
        if named is not None:
            return [f"datasets.{name}.bins.tokenizer = {named!r} is set but bins.by = {d['bins']['by']!r} counts no "
                    "tokens; remove it or bin by length_tokens:COLUMN"]
        return []
    out = []
    if not plan.items_table(name):
        out.append(f"datasets.{name}.bins.by = {d['bins']['by']!r} counts a column of the item table, but items.source "
                   "is none")
    if named is None and not plan.models:
        out.append(f"datasets.{name}.bins.by = {d['bins']['by']!r}: no tokenizer: set datasets.{name}.bins.tokenizer "
                   "(a hub id or a local model path) or configure a model (the first model's tokenizer counts)")
    elif named is not None and named not in plan.models and not any(m["id"] == named for m in plan.models.values()) \
            and not os.path.isdir(named) and not _HUB_ID.match(named):
        out.append(f"datasets.{name}.bins.tokenizer = {named!r}: neither a model slug of models[] "
                   f"({sorted(plan.models) or 'none configured'}), an existing local directory, nor a hub id "
                   "(<org>/<name>)")
    return out


def _test_on_problems(plan, name: str) -> list[str]:
    others = list(plan.dataset(name).get("test_on") or [])
    if not others:
        return []
    out = []
    key = f"datasets.{name}.test_on"
    for t in others:
        if t == name:
            out.append(f"{key}: lists the dataset itself; its own bins are always scored (name other datasets)")
        elif t not in plan.config["datasets"]:
            out.append(f"{key}: {t!r} is not a dataset of this config (datasets: {', '.join(plan.datasets)})")
        elif not plan.items_table(t):
            out.append(f"{key}: {t!r} has no items (items.source none), so no test bins to score")
    if plan.config["models"] and name not in plan.study_datasets():
        out.append(f"{key}: set, but {name!r} is not in study.datasets ({plan.study_datasets()}): nothing is trained "
                   "on it, so nothing is scored on the others")
    for t in [t for t in others if t in plan.config["datasets"] and t not in plan.study_datasets()]:
        for slug in plan.models:  # a test-only dataset's evaluation settings (the study's own are checked already)
            try:
                plan.evaluate(t, slug)
            except Exception as exc:  # noqa: BLE001 - CrossdiffError naming the keys
                out.append(str(exc))
    if plan.study_datasets() and not plan.trained_methods():
        out.append(f"{key}: set, but study.methods {plan.study['methods']} trains no checkpoint (cross-dataset tests "
                   "score fine-tuned checkpoints: sft, dft)")
    return out
