"""Evaluation of a dataset whose items come from an lm-eval task (``items.source: lm_eval_task``).

A bin's task folder (``results/tasks/{dataset}/bin{t}/task.json``, ``kind: lm_eval_task``) names the task
(settings of ``items``), the primary metric/filter/threshold and the bin's docs: per leaf task the lm-eval
``doc_id`` s and their ``doc_hash``. :func:`evaluate_bins` builds the task with lm-eval's own factory (the same
overrides as the item table) and runs ``simple_evaluate`` with the task's own config (doc_to_text,
doc_to_choice, doc_to_target, target_delimiter, description, fewshot settings, filters, generation kwargs,
metrics, process_results) restricted to the docs with lm-eval's ``samples`` argument, which keeps the doc ids, and lm-eval's chat
settings (``items.chat_template``, ``fewshot_as_multiturn``, ``system_instruction``; off by default, as its CLI).
All bins of one checkpoint go in ONE call over the union of their docs, so when the bins cover every doc
(no held-out split) the per-sample results are those of ``lm_eval --tasks NAME`` itself, fewshot examples
included (with a fewshot sampler over the evaluation split, the examples a doc gets depend on the docs run
before it). Each bin's score is the mean of its items' per-sample 0/1 values of the chosen metric and
filter (``value >= items.threshold`` for other metrics); a doc whose hash differs from the item table's
stops the run (the dataset or its order changed).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, write_json, write_jsonl


def make_task(items_path, bins_path, b: int, output, dataset: str, fmt, name: str) -> dict:
    """Write the task folder of test bin ``b`` (task.json naming the bin's docs)."""
    from crossdiff.bins.holdout import bin_items, heldout_part
    from crossdiff.items.lm_eval_task import BINARY_METRICS, load_tasks, metric_settings

    settings = fmt.lm_eval_task
    df = heldout_part(bin_items(items_path, bins_path, b))
    for col in ("subtask", "doc_id", "doc_hash"):
        if col not in df.columns:
            raise CrossdiffError(f"{items_path}: no column {col!r}; rebuild the item table of items.source lm_eval_task")
    tasks = load_tasks(settings)
    first = next(iter(tasks.values()))
    metric, flt, threshold = metric_settings(settings, first, f"datasets.{dataset}.items")
    docs: dict[str, list[int]] = {}
    items = []
    for row in df.sort(["subtask", "doc_id"]).iter_rows(named=True):
        if row["subtask"] not in tasks:
            raise CrossdiffError(f"{items_path}: item {row['item_id']!r} belongs to lm-eval task {row['subtask']!r}, "
                                 f"which {settings['task']!r} no longer holds ({sorted(tasks)})")
        docs.setdefault(row["subtask"], []).append(int(row["doc_id"]))
        items.append({"item_id": str(row["item_id"]), "subtask": row["subtask"], "doc_id": int(row["doc_id"]),
                      "doc_hash": row["doc_hash"]})
    meta = {"kind": "lm_eval_task", "dataset": dataset, "bin": int(b), "task": name, "task_chat": name,
            "lm_eval_task": settings["task"], "n_items": len(items), "scoring": "lm_eval_task", "metric": metric,
            "filter": flt, "threshold": threshold, "binary_metric": metric in BINARY_METRICS,
            "prompt": fmt.to_config(), "docs": docs, "items": items}
    with atomic_path(output, directory=True) as tmp:
        write_json(meta, Path(tmp) / "task.json")
    return meta


def _value(sample: dict, metric: str, threshold, where: str) -> tuple[float, int]:
    if metric not in sample:
        raise CrossdiffError(f"{where}: lm-eval sample has no {metric!r} value; it has {sorted(k for k in sample if isinstance(sample[k], (int, float)) and k != 'doc_id')}")
    value = sample[metric]
    if isinstance(value, (list, tuple)):
        raise CrossdiffError(f"{where}: metric {metric!r} is not per sample (lm-eval keeps {value!r} for a corpus-level "
                             f"aggregation); choose a per-sample metric with items.metric")
    value = float(value)
    if threshold is not None:
        return value, int(value >= threshold)
    if value not in (0.0, 1.0):
        raise CrossdiffError(f"{where}: metric {metric!r} has the per-sample value {value}, not 0/1; set items.threshold")
    return value, int(value)


def _first(resp):
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    return resp


def run_lm_eval(lm, settings: dict, docs: dict[str, list[int]]) -> tuple[dict, dict]:
    """``simple_evaluate`` of the task (its own config) on ``docs`` (leaf task -> doc ids); (tasks, results)."""
    from lm_eval import simple_evaluate

    from crossdiff.items.lm_eval_task import chat_settings, load_tasks

    chat, multiturn, system_instruction = chat_settings(settings)
    if chat and not getattr(getattr(lm, "tokenizer", None), "chat_template", None):
        raise CrossdiffError("items.chat_template is true but the model's tokenizer has no chat template")
    tasks = load_tasks(settings)
    chosen = [tasks[leaf] for leaf in docs]
    results = simple_evaluate(model=lm, tasks=chosen, samples={leaf: sorted(set(ids)) for leaf, ids in docs.items()},
                              log_samples=True, bootstrap_iters=0, apply_chat_template=chat,
                              fewshot_as_multiturn=multiturn, system_instruction=system_instruction)
    if results is None:
        raise CrossdiffError("lm-eval returned no results (non-zero rank?)")
    return tasks, results


def evaluate_bins(lm, metas: list[dict], outputs: list, s: dict, model_path, model_name=None,
                  train_bin="zero-shot") -> list[dict]:
    """Score every bin's task folder with one lm-eval call; one result JSON (+ samples) per bin."""
    if any(m.get("kind") != "lm_eval_task" for m in metas):
        raise CrossdiffError("an lm-eval-task folder cannot be evaluated together with crossdiff-rendered ones")
    settings = metas[0]["prompt"]["lm_eval_task"]
    if any(m["prompt"]["lm_eval_task"] != settings for m in metas):
        raise CrossdiffError("task folders of different lm-eval tasks or settings: evaluate them separately")
    if s.get("limit"):
        raise CrossdiffError("evaluate.limit does not apply to items.source lm_eval_task (the bins name their docs)")
    union: dict[str, set[int]] = {}
    for m in metas:
        for leaf, ids in m["docs"].items():
            union.setdefault(leaf, set()).update(ids)
    t0 = time.time()
    _, results = run_lm_eval(lm, settings, {leaf: sorted(ids) for leaf, ids in union.items()})
    wall = time.time() - t0
    by_doc: dict[tuple[str, int], dict] = {}
    flt = metas[0]["filter"]
    for leaf in union:
        for sample in results["samples"].get(leaf, []):
            if sample.get("filter", "none") == flt:
                by_doc[(leaf, int(sample["doc_id"]))] = sample
    written = []
    for meta, out in zip(metas, outputs):
        rows = []
        for item in meta["items"]:
            where = f"lm-eval task {item['subtask']!r}, doc {item['doc_id']} (item {item['item_id']})"
            sample = by_doc.get((item["subtask"], item["doc_id"]))
            if sample is None:
                raise CrossdiffError(f"{where}: lm-eval logged no sample under filter {flt!r}")
            if sample.get("doc_hash") != item["doc_hash"]:
                raise CrossdiffError(f"{where}: lm-eval's doc differs from the item table's (doc_hash "
                                     f"{sample.get('doc_hash')} vs {item['doc_hash']}): the dataset or its order "
                                     f"changed since the items were prepared; rebuild results/items")
            value, correct = _value(sample, meta["metric"], meta["threshold"], where)
            rows.append({"item_id": item["item_id"], "correct": correct, "value": value,
                         "prediction": _first(sample.get("filtered_resps")), "target": sample.get("target"),
                         "raw": _first(sample.get("resps")) if isinstance(_first(sample.get("resps")), str) else None,
                         "doc_id": item["doc_id"], "subtask": item["subtask"]})
        n = len(rows)
        mean = sum(r["correct"] for r in rows) / n if n else math.nan
        record = {
            "model": model_name or str(model_path), "model_path": str(model_path), "dataset": meta["dataset"],
            "train_bin": str(train_bin), "test_bin": int(meta["bin"]), "task": meta["task"],
            "lm_eval_task": meta["lm_eval_task"], "metric": meta["metric"], "filter": flt,
            "threshold": meta["threshold"], "value": mean,
            "stderr": math.sqrt(mean * (1 - mean) / (n - 1)) if n > 1 else None, "n_items": n,
            "other_metrics": {}, "chat_template": bool(settings.get("chat_template")), "backend": s["backend"], "eval_seconds_all_bins": wall,
            "samples": Path(out).name[: -len(".json")] + ".samples.jsonl",
        }
        write_jsonl(rows, Path(out).with_name(record["samples"]))
        write_json(record, out)
        written.append(record)
    print(f"evaluated {model_path} with lm-eval task {settings['task']} on {len(metas)} bin(s) in {wall:.1f} s: "
          + ", ".join(f"bin{r['test_bin']}={r['value']:.3f}" for r in written))
    return written
