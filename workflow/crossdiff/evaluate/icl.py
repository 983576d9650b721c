"""In-context learning cells (``study.methods: [sft, icl]``, ``study.icl: {k: [...], seed}``).

For train bin b, test bin t and k demonstrations, the BASE model is scored on bin t's test items (the same
items as every other cell: the task folder of ``make-task``) with k demonstrations drawn from bin b's
TRAINING items (without ``bins.holdout_fraction``'s held-out ones), in the task's own training format: each
demonstration is the item's training user text and its training target (what SFT on bin b trains on). For
chat models the demonstrations are user/assistant turns of one conversation (lm-eval's
``fewshot_as_multiturn``); for plain prompts the instruction comes once, then the demonstrations, then the
question.

The draw is lm-eval's own few-shot sampler (``fewshot_config.sampler: default``) over a demonstration pool,
seeded by ``study.icl.seed`` (``fewshot_random_seed``): the same seed gives the same prompts. The pool is
bin b's training items; it never contains the test item: bins are disjoint, and with held-out items the
training part of a bin is disjoint from its held-out part; the one overlap, b == t without held-out items,
makes the pool exactly the test items, which is then declared the same split (``fewshot_split: test``), so
lm-eval leaves the test item itself out of its draw (:func:`make_icl_task` checks which case applies).

One model load scores every (b, t, k) cell of a model (:func:`evaluate_icl`: one lm-eval call per (k, b)
over all test bins, the same model object). Result folders: ``results/eval/{model}/{dataset}/icl-k{k}-train{b}/``;
result JSONs carry ``train_bin: "icl-k{k}-{b}"``, which ``aggregate`` turns into ``method: icl-k{k}`` and
train bin b. The zero-shot cell is the k = 0 row of every method.

A dataset of ``items.source: lm_eval_task`` goes through lm-eval's own few-shot path instead
(:func:`crossdiff.evaluate.lm_eval_task.evaluate_icl_bins`): the task's config with ``num_fewshot: k`` and bin b's
training docs as its few-shot pool, demonstrations rendered by the task's own ``doc_to_text`` /
``target_delimiter`` / ``doc_to_target`` (its SFT text), drawn per test doc (seed and the doc's hash).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import yaml

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_json, write_jsonl, write_text
from crossdiff.prompts.chat import lm_eval_renderer
from crossdiff.prompts.format import PromptFormat
from crossdiff.study.methods import ks_of  # noqa: F401  (study.icl.k: the methods table's)

_RESULT_LABEL = re.compile(r"^icl-k(?P<k>\d+)-(?:train)?(?P<bin>\d+)$")


def eval_label(k: int, b: int) -> str:
    """The evaluation folder of an ICL cell row: ``icl-k8-train3``."""
    return f"icl-k{int(k)}-train{int(b)}"


def result_label(k: int, b: int) -> str:
    """The ``train_bin`` string of its result JSONs: ``icl-k8-3``."""
    return f"icl-k{int(k)}-{int(b)}"


def method(k: int) -> str:
    return f"icl-k{int(k)}"


def parse_result_label(label: str) -> tuple[int, int] | None:
    """(k, train bin) of an ICL label (``icl-k8-3`` or ``icl-k8-train3``), else None."""
    m = _RESULT_LABEL.match(str(label))
    return (int(m["k"]), int(m["bin"])) if m else None


def _demo_columns(fmt: PromptFormat, item: dict) -> dict:
    rec = fmt.sft_record(item)
    return {"demo_user": rec["user"], "demo_target": rec["completion"], "demo_assistant": rec["assistant"]}


def make_icl_task(test_task, items_path, bins_path, b: int, k: int, output) -> dict:
    """An lm-eval task folder: the test items of ``test_task`` with k demonstrations from bin ``b``'s training items."""
    from crossdiff.bins.holdout import bin_items, training_part
    from crossdiff.evaluate.run import read_task

    meta = read_task(test_task)
    fmt = PromptFormat.from_config(meta["prompt"], where=f"{test_task}/task.json:prompt")
    test_rows = [json.loads(x) for x in (Path(meta["dir"]) / "data.jsonl").read_text().splitlines() if x.strip()]
    items = read_table(items_path, "item table")
    by_id = {str(r["item_id"]): r for r in items.to_dicts()}
    missing = [r["item_id"] for r in test_rows if r["item_id"] not in by_id]
    if missing:
        raise CrossdiffError(f"{test_task}: {len(missing)} test item(s) not in {items_path}, e.g. {missing[:3]}")
    test_rows = [{**r, **_demo_columns(fmt, by_id[r["item_id"]])} for r in test_rows]
    pool = [{**fmt.eval_record(it), **_demo_columns(fmt, it)} for it in training_part(bin_items(items_path, bins_path, b)).to_dicts()]
    test_ids, pool_ids = {r["item_id"] for r in test_rows}, {r["item_id"] for r in pool}
    if pool_ids == test_ids:  # b == t without held-out items: one split, lm-eval leaves the test item out
        split, available = "test", len(pool) - 1
    elif not pool_ids & test_ids:
        split, available = "fewshot", len(pool)
    else:
        raise CrossdiffError(f"bin {b}'s training items and {test_task}'s test items overlap partly "
                             f"({len(pool_ids & test_ids)} shared); remake the bins and task folders")
    if available < k:
        raise CrossdiffError(f"study.icl.k = {k}: bin {b} has only {available} training item(s) to draw "
                             f"demonstrations from for the test items of bin {meta['bin']}")
    base = f"{meta['task']}_icl_k{int(k)}_train{int(b)}"
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(test_rows, out / "data.jsonl")
    if split == "fewshot":
        write_jsonl(pool, out / "fewshot.jsonl")
    for chat, fname, name in ((False, "task.yaml", base), (True, "task_chat.yaml", f"{base}_chat")):
        cfg = fmt.task_config(name, str((out / "data.jsonl").resolve()), chat=chat)
        cfg.update({
            "num_fewshot": int(k),
            "fewshot_split": split,
            "fewshot_config": {"sampler": "default", "doc_to_text": "demo_user",
                               "doc_to_target": "demo_assistant" if chat else "demo_target",
                               "target_delimiter": "", "fewshot_delimiter": "\n\n"},
        })
        if not chat:  # the instruction once, before the demonstrations (chat: the system message)
            cfg["doc_to_text"] = "user"
            if fmt.instruction:
                cfg["description"] = fmt.instruction
        write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), out / fname)
    new_meta = {k_: v for k_, v in meta.items() if k_ != "dir"}
    new_meta.update({"task": base, "task_chat": f"{base}_chat", "icl": {"k": int(k), "train_bin": int(b),
                                                                       "pool": len(pool), "split": split}})
    write_json(new_meta, out / "task.json")
    return new_meta


def evaluate_icl(model, test_tasks: list, items_path, bins_path, ks: list[int], train_bins: list[int], outdir,
                 settings: dict | None = None, model_name: str | None = None, seed: int = 1234) -> list[dict]:
    """Every (k, train bin, test bin) ICL cell of one model with ONE model load; returns the result records.

    ``outdir/icl-k{k}-train{b}/bin{t}.json`` (+ per-sample logs) for each test task folder of bin t."""
    from crossdiff.compute import require_device
    from crossdiff.evaluate.run import check_scorers, evaluate_model, load_lm, read_task, resolve_settings

    s = resolve_settings(settings)
    require_device(s["device"], "evaluate.device")  # at job start, before any model loads
    metas = [read_task(t) for t in test_tasks]
    check_scorers(metas)  # before the model loads
    if any(m.get("kind") == "lm_eval_task" for m in metas):  # items.source lm_eval_task: lm-eval's own few-shot path
        from crossdiff.evaluate.lm_eval_task import evaluate_icl_bins, icl_pools

        pools = icl_pools(metas, items_path, bins_path, ks, train_bins)  # checked before the model loads
        cells = [(k, b, eval_label(k, b), result_label(k, b)) for k in ks for b in train_bins]
        return evaluate_icl_bins(load_lm(model, s), metas, pools, cells, outdir, s, model, model_name, seed)
    lm = load_lm(model, s)
    written = []
    with tempfile.TemporaryDirectory(prefix="crossdiff-icl-") as tmp:
        for k in ks:
            for b in train_bins:
                dirs = [Path(tmp) / f"k{k}-b{b}-t{m['bin']}" for m in metas]
                for t, d in zip(test_tasks, dirs):
                    make_icl_task(t, items_path, bins_path, b, k, d)
                outs = [Path(outdir) / eval_label(k, b) / f"bin{m['bin']}.json" for m in metas]
                written += evaluate_model(model, dirs, outs, s, model_name, result_label(k, b), lm=lm,
                                          num_fewshot=None, fewshot_seed=seed)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the results")
    p.add_argument("--tasks", nargs="+", required=True, help="test task folders (from make-task), one per test bin")
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet)")
    p.add_argument("--k", type=int, nargs="+", required=True, help="demonstrations per prompt (one or several)")
    p.add_argument("--train-bins", type=int, nargs="+", required=True, help="bins the demonstrations come from")
    p.add_argument("--seed", type=int, default=1234, help="seed of the demonstrations' draw")
    p.add_argument("--outdir", required=True, help="results/eval/{model}/{dataset}: writes icl-k{k}-train{b}/bin{t}.json")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings")


def run(args: argparse.Namespace) -> None:
    ks = ks_of({"k": args.k})
    written = evaluate_icl(args.model, args.tasks, args.items, args.bins, ks, args.train_bins, args.outdir,
                           args.settings, args.model_name, args.seed)
    print(f"{len(written)} ICL cell(s) of {args.model_name or args.model}: k {ks} x train bins {args.train_bins} "
          f"x {len(args.tasks)} test bin(s), one model load")


def rendered_contexts(task_dir, seed: int = 1234, tokenizer=None) -> dict[str, str]:
    """item_id -> the prompt lm-eval builds for an ICL task folder (demonstrations + question), drawn exactly
    as in :func:`evaluate_icl` (same sampler, same seed); with a ``tokenizer`` whose chat template applies,
    rendered as :func:`crossdiff.evaluate.run.evaluate_model` renders it (instruction as the system message,
    demonstrations as user/assistant turns: lm-eval's ``fewshot_as_multiturn``). For inspection and tests."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from crossdiff.evaluate.run import _prepared_include_dir, read_task
    from crossdiff.prompts.scoring import register_filters

    register_filters()
    meta = read_task(task_dir)
    fmt = PromptFormat.from_config(meta["prompt"])
    chat = fmt.use_chat(tokenizer)
    name = meta["task_chat"] if chat else meta["task"]
    kwargs = {}
    if chat:
        kwargs = {"apply_chat_template": True, "fewshot_as_multiturn": True,
                  "system_instruction": fmt.instruction.strip() or None,
                  "chat_template": lm_eval_renderer(tokenizer)}  # what the evaluation's lm-eval model renders
    with tempfile.TemporaryDirectory(prefix="crossdiff-icl-ctx-") as tmp:
        _prepared_include_dir([meta], Path(tmp))
        task = get_task_dict([name], TaskManager(include_path=tmp, include_defaults=False))[name]
        task.set_fewshot_seed(seed=seed)
        task.build_all_requests(**kwargs)
        out = {}
        for inst in task.instances:
            out.setdefault(str(inst.doc["item_id"]), inst.args[0])
    return out
