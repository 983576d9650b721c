"""Evaluation of a dataset whose items come from an lm-eval task (``items.source: lm_eval_task``).

A bin's task folder (``results/tasks/{dataset}/bin{t}/task.json``, ``kind: lm_eval_task``) names the task
(settings of ``items``), the primary metric/filter/threshold and the bin's docs: per leaf task the lm-eval
``doc_id`` s and their ``doc_hash``. :func:`evaluate_bins` builds the task with lm-eval's own factory (the same
overrides as the item table) and runs ``simple_evaluate`` with the task's own config (doc_to_text,
doc_to_choice, doc_to_target, target_delimiter, description, fewshot settings, filters, generation kwargs,
metrics, process_results) restricted to the docs with lm-eval's ``samples`` argument, which keeps the doc ids, and lm-eval's chat
settings (``items.chat_template``, ``fewshot_as_multiturn``, ``system_instruction``; off by default, as its CLI).
All bins of one checkpoint go in ONE call over the union of their docs. A doc's request does not depend on
which other docs share the call: few-shot examples are drawn per doc, seeded by lm-eval's fewshot seed (1234) and
the doc's hash (crossdiff.items.lm_eval_task.CrossdiffTask). So the per-sample results equal those of
``lm_eval --tasks NAME`` on the same docs exactly when the task draws no random few-shot examples (0-shot, or a
fixed sampler such as MMLU's ``first_n``); a k-shot task with lm-eval's default sampler gets other (equally
random, but reproducible) examples than a plain lm-eval run, whose draw follows the run order. Each bin's score
is the mean of its items' per-sample 0/1 values of the chosen metric and filter (``value >= items.threshold``
for other metrics); a doc whose hash differs from the item table's stops the run (the dataset or its order
changed). Before lm-eval generates, a generation task whose ``max_gen_toks`` leaves no room in the model's
context stops with the setting to change.

Per-sample logs: ``prediction`` is the extracted answer of a generation task, and for multiple choice the index
of the chosen option (``prediction_text`` its text), chosen as the primary metric chooses it (``acc``: the highest
log-likelihood; ``acc_norm``: per character; ``acc_bytes``: per byte; lm_eval/api/task.py:1490-1512), with
``loglikelihoods`` beside it.

In-context learning (``study.methods: [icl]``, :func:`evaluate_icl_bins`) goes through lm-eval's own few-shot
path: the task's config with ``num_fewshot: k`` and its few-shot pool replaced by the docs of train bin b's
training items (``fewshot_config.samples``), rendered by the task's own ``doc_to_text``, ``target_delimiter`` and
``doc_to_target`` (the SFT text of those items); the test doc itself is never one of its demonstrations.
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
    tasks = load_tasks(settings, dataset=dataset)
    first = next(iter(tasks.values()))
    metric, flt, threshold = metric_settings(settings, first, f"datasets.{dataset}.items", dataset)
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


def _prediction(task, sample: dict, metric: str) -> dict:
    """The answer a per-sample log records: a generation task's extracted answer; for multiple choice the index of
    the option the metric chose and its text, as lm-eval's process_results chooses (lm_eval/api/task.py:1490-1512:
    argmax of the log-likelihoods, per character for acc_norm, per byte for acc_bytes)."""
    if task.OUTPUT_TYPE != "multiple_choice":
        return {"prediction": _first(sample.get("filtered_resps"))}
    choices = [str(c) for c in task.doc_to_choice(sample["doc"])]
    lls = [float(_first(r)) for r in sample.get("filtered_resps") or []][: len(choices)]  # acc_mutual_info: 2x
    if not lls:
        return {"prediction": None, "prediction_text": None, "loglikelihoods": []}
    if metric == "acc_norm":
        scores = [ll / len(c) for ll, c in zip(lls, choices)]
    elif metric == "acc_bytes":
        scores = [ll / len(c.encode("utf-8")) for ll, c in zip(lls, choices)]
    else:
        scores = lls
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # np.argmax: the first of equal maxima
    return {"prediction": best, "prediction_text": choices[best], "loglikelihoods": lls}


def check_context(lm, tasks, dataset: str, model: str) -> None:
    """Stop before lm-eval generates when a generation task's max_gen_toks leaves no room for a prompt in the
    model's context (crossdiff.items.lm_eval_task.context_message); lm-eval itself asserts it mid-run."""
    from lm_eval.models.utils import normalize_gen_kwargs

    from crossdiff.items.lm_eval_task import DEFAULT_MAX_GEN_TOKS, context_message

    ctx = getattr(lm, "max_length", None)
    if not isinstance(ctx, int):
        return
    for task in tasks:
        if task.OUTPUT_TYPE != "generate_until":
            continue
        gen = normalize_gen_kwargs(dict(task.config.generation_kwargs or {}),
                                   getattr(lm, "max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        msg = context_message(ctx, int(gen["max_gen_toks"]), model=model, dataset=dataset, task=task.task_name)
        if msg:
            raise CrossdiffError(msg)


def run_lm_eval(lm, settings: dict, docs: dict[str, list[int]], dataset: str = "items", model: str = "the model",
                hook=None, seed: int | None = None) -> tuple[dict, dict]:
    """``simple_evaluate`` of the task (its own config, then ``hook``) on ``docs`` (leaf task -> doc ids), the
    few-shot draw seeded by ``seed`` (default lm-eval's 1234) and each doc's hash; (tasks, results)."""
    from lm_eval import simple_evaluate

    from crossdiff.items.lm_eval_task import FEWSHOT_SEED, chat_settings, load_tasks

    chat, multiturn, system_instruction = chat_settings(settings)
    if chat and not getattr(getattr(lm, "tokenizer", None), "chat_template", None):
        raise CrossdiffError("items.chat_template is true but the model's tokenizer has no chat template")
    tasks = load_tasks(settings, dataset=dataset, hook=hook)
    chosen = [tasks[leaf] for leaf in docs]
    check_context(lm, chosen, dataset, model)
    results = simple_evaluate(model=lm, tasks=chosen, samples={leaf: sorted(set(ids)) for leaf, ids in docs.items()},
                              log_samples=True, bootstrap_iters=0, apply_chat_template=chat,
                              fewshot_as_multiturn=multiturn, system_instruction=system_instruction,
                              fewshot_random_seed=FEWSHOT_SEED if seed is None else seed)
    if results is None:
        raise CrossdiffError("lm-eval returned no results (non-zero rank?)")
    return tasks, results


def evaluate_bins(lm, metas: list[dict], outputs: list, s: dict, model_path, model_name=None,
                  train_bin="zero-shot", hook=None, seed: int | None = None) -> list[dict]:
    """Score every bin's task folder with one lm-eval call; one result JSON (+ samples) per bin. ``hook`` and
    ``seed``: :func:`run_lm_eval` (ICL's few-shot pool and seed)."""
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
    tasks, results = run_lm_eval(lm, settings, {leaf: sorted(ids) for leaf, ids in union.items()},
                                 metas[0]["dataset"], model_name or str(model_path), hook, seed)
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
                         **_prediction(tasks[item["subtask"]], sample, meta["metric"]), "target": sample.get("target"),
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


# ------------------------------------------------------------------ in-context learning (study.methods: icl)
def icl_hook(k: int, pool: dict[str, list[dict]]):
    """The task-config change of an ICL cell (a ``hook`` of :func:`load_tasks`): ``num_fewshot: k`` and, per leaf
    task, its few-shot pool replaced by ``pool[leaf]`` (docs) through lm-eval's own ``fewshot_config.samples``;
    the task's doc_to_text / target_delimiter / doc_to_target render them (the task's few-shot-only formatting
    keys are dropped with the rest of its fewshot_config, so demonstrations are the SFT text)."""
    from crossdiff.items.lm_eval_task import _classes

    _, PoolSampler, _ = _classes()

    def hook(cfg: dict) -> dict:
        return {**cfg, "num_fewshot": int(k), "fewshot_split": None,
                "fewshot_config": {"sampler": PoolSampler, "samples": pool.get(cfg["task"], [])}}
    return hook


def icl_pools(metas: list[dict], items_path, bins_path, ks: list[int], train_bins: list[int]) -> dict[int, dict[str, list[dict]]]:
    """train bin -> leaf task -> lm-eval's docs of that bin's training items (the demonstration pool), read and
    checked before any model loads: refuses a k larger than what a bin offers a test doc of the same leaf task
    (the test doc itself never counts), docs whose hash differs from the item table's, and an item table with
    per-item solutions (SFT's target would not be the demonstrations' answer)."""
    from crossdiff.bins.holdout import bin_items, training_part
    from crossdiff.io import read_table
    from crossdiff.items.lm_eval_task import doc_hash, load_tasks

    dataset = metas[0]["dataset"]
    settings = metas[0]["prompt"]["lm_eval_task"]
    if "model_solution" in read_table(items_path, "item table").columns:
        raise CrossdiffError(f"datasets.{dataset}: study.methods icl on an lm-eval task with items.solutions: ICL shows "
                             f"the task's own doc_to_target as the demonstrations' answers, not the solutions SFT "
                             f"trains on; drop icl or items.solutions")
    rows: dict[int, dict[str, list[dict]]] = {}
    for b in train_bins:
        rows[b] = {}
        for row in training_part(bin_items(items_path, bins_path, b)).sort(["subtask", "doc_id"]).iter_rows(named=True):
            rows[b].setdefault(row["subtask"], []).append(
                {"item_id": str(row["item_id"]), "doc_id": int(row["doc_id"]), "doc_hash": row["doc_hash"]})
    k = max(ks)
    for b in train_bins:
        for meta in metas:
            for leaf, ids in meta["docs"].items():
                pool = {r["doc_id"] for r in rows[b].get(leaf, [])}
                shared = pool & set(ids)
                if shared and shared != pool:
                    raise CrossdiffError(f"bin {b}'s training items and bin {meta['bin']}'s test items overlap partly "
                                         f"({len(shared)} shared docs of {leaf!r}); remake the bins and task folders")
                available = len(pool) - (1 if shared else 0)
                if available < k:
                    raise CrossdiffError(
                        f"study.icl.k = {k}: bin {b} has only {available} training item(s) of lm-eval task {leaf!r} to "
                        f"draw demonstrations from for its test items in bin {meta['bin']} (demonstrations come from the "
                        f"same task as the test doc, never the doc itself); lower study.icl.k")
    tasks = load_tasks(settings, dataset=dataset)
    pools: dict[int, dict[str, list[dict]]] = {}
    for b, by_leaf in rows.items():
        pools[b] = {}
        for leaf, items in by_leaf.items():
            if leaf not in tasks:
                raise CrossdiffError(f"{items_path}: lm-eval task {leaf!r} is not in {settings['task']!r} any more")
            docs = [dict(tasks[leaf].eval_docs[r["doc_id"]]) for r in items]
            bad = [r["item_id"] for r, d in zip(items, docs) if doc_hash(d) != r["doc_hash"]]
            if bad:
                raise CrossdiffError(f"{items_path}: lm-eval's docs differ from the item table's (doc_hash) for items "
                                     f"{bad[:3]}: the dataset or its order changed; rebuild results/items")
            pools[b][leaf] = docs
    return pools


def evaluate_icl_bins(lm, metas: list[dict], pools: dict[int, dict[str, list[dict]]], cells: list[tuple], outdir,
                      s: dict, model_path, model_name=None, seed: int = 1234) -> list[dict]:
    """Every ICL cell of an lm-eval task with one model: ``cells`` are (k, train bin b, folder label, result
    label); per cell one lm-eval call over every test bin's docs with :func:`icl_hook` (bin b's training docs
    from :func:`icl_pools`), each doc's demonstrations drawn by ``seed`` (study.icl.seed) and its hash."""
    written = []
    for k, b, folder, label in cells:
        outs = [Path(outdir) / folder / f"bin{m['bin']}.json" for m in metas]
        for out in outs:
            out.parent.mkdir(parents=True, exist_ok=True)
        written += evaluate_bins(lm, metas, outs, s, model_path, model_name, label, hook=icl_hook(k, pools[b]), seed=seed)
    return written
