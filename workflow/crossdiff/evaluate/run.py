"""lm-eval task generation per (dataset, test bin) and evaluation of one checkpoint on many bins.

Task folder (``results/tasks/{dataset}/bin{t}/``), written by :func:`make_task`:

* ``data.jsonl``: that bin's items rendered by :class:`~crossdiff.prompts.format.PromptFormat`
  (``item_id``, ``prompt``, ``user``, ``gold`` [, ``choices``]);
* ``task.yaml``: task ``crossdiff_{dataset}_bin{t}`` (plain-text prompt column);
* ``task_chat.yaml``: task ``crossdiff_{dataset}_bin{t}_chat`` (user column; the evaluator applies the
  chat template with the instruction as system message) — used when the model's tokenizer has a chat
  template and the format's ``chat_template`` allows it;
* ``task.json``: dataset, bin, task names, n_items, prompt format.

:func:`evaluate_model` loads the model ONCE and scores all requested task folders in ONE
``lm_eval.simple_evaluate`` call (``TaskManager(include_path=..., include_defaults=False)``),
then writes one result JSON per test bin plus its per-sample log (``<result>.samples.jsonl``:
item_id, correct 0/1, prediction, target; MATH-style tasks also ``math_verify``: the verdicts of
the authors' two attempts, ``as_generated`` and ``dollar_wrapped``). YAML copies with the data path re-resolved to the
folder's current location are used, so moving ``results/`` does not break tasks.

Evaluation settings (``--settings`` JSON; all optional):

===============  =========  ==============================================================
key              default    meaning
===============  =========  ==============================================================
backend          "hf"       "hf" (transformers) or "vllm" (when installed)
batch_size       32         per-forward batch size (int or "auto" for hf)
device           "auto"     "auto" (cuda if available), "cuda" or "cpu"
dtype            "auto"     "auto" = float32 on CPU, bfloat16 on CUDA; or an explicit dtype
max_length       null       model context length override
limit            null       score only the first N items per bin (debugging only)
model_args       {}         extra keyword arguments for the lm-eval model class
seed             42         sampling seed of the backend (vllm; greedy decoding either way)
tensor_parallel  "auto"     vllm: GPUs per model replica ("auto" = all GPUs of the job / data_parallel)
data_parallel    1          vllm: model replicas, each on tensor_parallel GPUs
gpu_memory_util  0.9        vllm: share of each GPU's memory for weights + KV cache
max_model_len    null       vllm: context length (null = the model's; also set by max_length)
auto_batch_max_length 8192  hf with batch_size "auto" and no max_length: the length batches are
                            sized at (else the model's full context: batch 1-2)
===============  =========  ==============================================================

The job's GPUs are those in ``CUDA_VISIBLE_DEVICES`` (set by ``crossdiff gpu-run`` and SLURM from
``resources.evaluate.gpu``); :func:`crossdiff.evaluate.backends.vllm_model_args` maps settings + GPU count to
lm-eval's VLLM arguments and refuses a layout that does not use exactly the job's GPUs.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
from pathlib import Path

import yaml

from crossdiff.cli import json_arg
from crossdiff.compute import require_device
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, write_json, write_jsonl, write_text
from crossdiff.evaluate.backends import hf_model_kwargs, visible_gpus, vllm_model_args  # noqa: F401 - part of this module's API
from crossdiff.evaluate.decoding import model_generation_fields, neutralize_hf, report
from crossdiff.finetune.qlora import eval_paths
from crossdiff.prompts.chat import install as install_chat_renderer
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.math_check import uses_math, verdicts

DEFAULTS = {
    "backend": "hf",
    "batch_size": 32,
    "device": "auto",
    "dtype": "auto",
    "max_length": None,
    "limit": None,
    "model_args": {},
    "seed": 42,
    "tensor_parallel": "auto",
    "data_parallel": 1,
    "gpu_memory_util": 0.9,
    "max_model_len": None,
    "auto_batch_max_length": 8192,
}

#: number of model loads done by :func:`load_lm` in this process (tests assert one per checkpoint)
MODEL_LOADS = 0


def task_name(dataset: str, b: int) -> str:
    return f"crossdiff_{re.sub(r'[^A-Za-z0-9_]', '_', dataset)}_bin{int(b)}"


def samples_path(result_path) -> Path:
    p = Path(result_path)
    return p.with_name(p.name[: -len(".json")] + ".samples.jsonl" if p.name.endswith(".json") else p.name + ".samples.jsonl")


# ---------------------------------------------------------------------------------------- tasks
def make_task(items_path, bins_path, b: int, output, dataset: str, prompt: dict | None = None) -> dict:
    """Write the lm-eval task folder for test bin ``b`` of ``dataset``; returns its task.json."""
    from crossdiff.bins.holdout import bin_items, heldout_part

    fmt = PromptFormat.from_config(prompt)
    if fmt.lm_eval_task is not None:  # items.source lm_eval_task: the task's own config (evaluate/lm_eval_task.py)
        from crossdiff.evaluate.lm_eval_task import make_task as make_lm_eval_task

        return make_lm_eval_task(items_path, bins_path, b, output, dataset, fmt, task_name(dataset, b))
    df = heldout_part(bin_items(items_path, bins_path, b))  # only held-out items when bins.holdout_fraction > 0
    rows = [fmt.eval_record(item) for item in df.to_dicts()]
    name = task_name(dataset, b)
    meta = {
        "dataset": dataset,
        "bin": int(b),
        "task": name,
        "task_chat": f"{name}_chat",
        "n_items": len(rows),
        "scoring": fmt.scoring,
        "metric": fmt.primary_metric,
        "prompt": fmt.to_config(),
    }
    with atomic_path(output, directory=True) as tmp:
        tmp = Path(tmp)
        write_jsonl(rows, tmp / "data.jsonl")
        final_data = str((Path(output) / "data.jsonl").resolve())
        for chat, fname, tname in ((False, "task.yaml", name), (True, "task_chat.yaml", f"{name}_chat")):
            cfg = fmt.task_config(tname, final_data, chat=chat)
            write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), tmp / fname)
        write_json(meta, tmp / "task.json")
    return meta


def read_task(task_dir) -> dict:
    d = Path(task_dir)
    meta_path = d / "task.json"
    if not meta_path.exists():
        raise CrossdiffError(f"{d}: not a task folder (no task.json); create it with 'crossdiff make-task'")
    import json

    meta = json.loads(meta_path.read_text())
    meta["dir"] = str(d.resolve())
    return meta


# ---------------------------------------------------------------------------------------- model
def resolve_settings(settings: dict | None) -> dict:
    """Settings over :data:`DEFAULTS`, validated: the Python API's entry. The workflow's jobs get settings
    resolved at parse time (crossdiff.plan.settings) and only validate them (:func:`validate_settings`)."""
    from crossdiff.config import deep_merge

    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"evaluation settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return validate_settings(deep_merge(DEFAULTS, settings))


def validate_settings(s: dict, complete: bool = True) -> dict:
    """Check complete evaluation settings (every key of :data:`DEFAULTS`)."""
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"evaluation settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    missing = sorted(set(DEFAULTS) - set(s))
    if complete and missing:
        raise CrossdiffError(f"evaluation settings: key(s) {missing} missing: a job takes the settings the workflow "
                             "resolved at parse time (crossdiff.plan), or use the Python API's resolve_settings")
    if s["backend"] not in ("hf", "vllm"):
        raise CrossdiffError(f"evaluation settings.backend: expected 'hf' or 'vllm', got {s['backend']!r}")
    if not (s["tensor_parallel"] == "auto" or (isinstance(s["tensor_parallel"], int) and s["tensor_parallel"] >= 1)):
        raise CrossdiffError(f"evaluation settings.tensor_parallel: expected 'auto' or an integer >= 1, got {s['tensor_parallel']!r}")
    if not (isinstance(s["data_parallel"], int) and s["data_parallel"] >= 1):
        raise CrossdiffError(f"evaluation settings.data_parallel: expected an integer >= 1, got {s['data_parallel']!r}")
    if not (isinstance(s["gpu_memory_util"], (int, float)) and 0 < s["gpu_memory_util"] <= 1):
        raise CrossdiffError(f"evaluation settings.gpu_memory_util: expected a number in (0, 1], got {s['gpu_memory_util']!r}")
    return s


def check_scorers(tasks: list[dict]) -> None:
    """Refuse, before any model loads, task folders whose scoring cannot run here: lm-eval's IFEval checkers
    of sentence counts (items with such instructions under the ``crossdiff_ifeval`` filter; any lm-eval IFEval
    task) without nltk's ``punkt_tab`` data, which would otherwise be a raw LookupError after the whole
    generation pass."""
    import json

    from crossdiff.items.ifeval import check_punkt, needs_punkt, uses_ifeval

    for m in tasks:
        where = f"{m.get('dir', m.get('task'))}: IFEval scoring"
        if "ifeval" in str(m.get("lm_eval_task") or ""):
            check_punkt(where)
        elif uses_ifeval(m.get("prompt")):
            data = Path(m["dir"]) / "data.jsonl"
            rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()] if data.exists() else []
            if needs_punkt(r.get("instruction_id_list") or "[]" for r in rows):
                check_punkt(where)


def load_lm(model_path, s: dict):
    """Construct the lm-eval model object once (and count it)."""
    global MODEL_LOADS
    from crossdiff.hub import offline_env

    from crossdiff.compute import deterministic_torch, device_for

    offline_env(model_path)
    device = device_for(s["device"], "evaluate.device")  # cuda without CUDA: stop before loading
    deterministic_torch(device)
    dtype = s["dtype"]
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    # a QLoRA fine-tune: its dequantised base (bf16 on disk) with the LoRA adapter applied, unmerged
    base, adapter, manifest = eval_paths(model_path)
    if adapter is not None and s["dtype"] in ("float16", "half"):
        raise CrossdiffError(f"{model_path}: a QLoRA fine-tune's base is the dequantised NF4 (or int8) weights in bfloat16; "
                             f"evaluate.dtype {s['dtype']!r} would round them: use auto, bfloat16 or float32")
    kwargs = hf_model_kwargs(s)
    t0 = time.time()
    if s["backend"] == "vllm":
        from importlib.util import find_spec

        if find_spec("vllm") is None:
            raise CrossdiffError("evaluation settings.backend is 'vllm' but vllm is not installed "
                                 "(pip install -r envs/requirements-gpu.txt)")
        from lm_eval.models.vllm_causallms import VLLM

        args = vllm_model_args(base, s, visible_gpus(), adapter=adapter, lora_rank=(manifest or {}).get("r"))
        device, dtype = f"cuda x{args['tensor_parallel_size'] * args['data_parallel_size']}", args["dtype"]
        lm = VLLM(**args)
        print(report(base, model_generation_fields(base), "vllm: generation_config='vllm'"))
    else:
        from lm_eval.models.huggingface import HFLM

        if not Path(model_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in str(model_path):
            raise CrossdiffError(f"{model_path}: model directory not found")
        from huggingface_hub.errors import HFValidationError

        if adapter is not None:
            kwargs["peft"] = adapter  # lm-eval's HFLM: PeftModel.from_pretrained on the base (adapter kept in fp32)
        try:
            lm = HFLM(pretrained=str(base), device=device, dtype=dtype, batch_size=s["batch_size"], **kwargs)
        except (OSError, HFValidationError) as exc:  # like finetune: a bad id or path is the user's to fix
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            offline = " (HF_HUB_OFFLINE=1: a hub id must already be in the local cache)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
            raise CrossdiffError(f"{model_path}: cannot load model/tokenizer: {first}{offline}") from None
        neutralize_hf(lm, model_path)  # the model's generation_config.json must not change the decoding
    install_chat_renderer(lm)  # lm-eval's chat path renders through crossdiff.prompts.chat (training's date_string)
    MODEL_LOADS += 1
    if adapter is not None:
        print(f"QLoRA fine-tune: base {base} ({dtype}) + LoRA adapter {adapter} (r {manifest.get('r')}), unmerged")
    print(f"loaded model {model_path} ({s['backend']}, {device}, {dtype}) in {time.time() - t0:.1f} s; "
          f"loaded model {MODEL_LOADS} time(s) in this process")
    return lm


def _prepared_include_dir(tasks: list[dict], tmp: Path) -> None:
    """Copies of the task YAMLs whose data path points at each folder's current data.jsonl."""
    for meta in tasks:
        data = str(Path(meta["dir"]) / "data.jsonl")
        if not Path(data).exists():
            raise CrossdiffError(f"{meta['dir']}: data.jsonl missing; recreate the task folder")
        for fname in ("task.yaml", "task_chat.yaml"):
            src = Path(meta["dir"]) / fname
            if not src.exists():
                raise CrossdiffError(f"{src}: task YAML missing; recreate the task folder")
            cfg = yaml.safe_load(src.read_text())
            cfg["dataset_kwargs"] = {"data_files": {"test": data}}
            if (Path(meta["dir"]) / "fewshot.jsonl").exists():  # ICL tasks (crossdiff.evaluate.icl): the demonstration pool
                cfg["dataset_kwargs"]["data_files"]["fewshot"] = str(Path(meta["dir"]) / "fewshot.jsonl")
            (tmp / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


def _prediction(sample: dict, scoring: str):
    if scoring == "multiple_choice":
        scores = [r[0] if isinstance(r, (list, tuple)) else r for r in sample.get("filtered_resps", [])]
        scores = [s[0] if isinstance(s, (list, tuple)) else s for s in scores]
        return int(max(range(len(scores)), key=lambda i: float(scores[i]))) if scores else None
    resp = sample.get("filtered_resps")
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    return resp


def _raw(sample: dict):
    resp = sample.get("resps")
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    return resp if isinstance(resp, str) else None


def evaluate_model(
    model_path,
    task_dirs: list,
    outputs: list,
    settings: dict | None = None,
    model_name: str | None = None,
    train_bin: str | int = "zero-shot",
    lm=None,
    num_fewshot: int | None = 0,
    fewshot_seed: int | None = None,
) -> list[dict]:
    """Score ``model_path`` on every task folder with ONE model load and ONE lm-eval call.

    ``outputs[i]`` receives the result JSON of ``task_dirs[i]``; its per-sample log goes beside it.
    Pass ``lm`` to reuse an already constructed lm-eval model. ICL tasks (:mod:`crossdiff.evaluate.icl`) set
    their own ``num_fewshot`` in the task YAML: pass ``num_fewshot=None`` and the demonstrations' ``fewshot_seed``.
    """
    if len(task_dirs) != len(outputs):
        raise CrossdiffError(f"got {len(task_dirs)} task folder(s) but {len(outputs)} output path(s); they pair up")
    if not task_dirs:
        raise CrossdiffError("no task folders to evaluate")
    s = resolve_settings(settings)
    if lm is None:
        require_device(s["device"], "evaluate.device")  # at job start, before any model loads
    tasks = [read_task(d) for d in task_dirs]
    check_scorers(tasks)  # before the model loads: a scorer that cannot run fails now, not after generation
    if any(m.get("kind") == "lm_eval_task" for m in tasks):  # items.source lm_eval_task
        from crossdiff.evaluate.lm_eval_task import evaluate_bins

        return evaluate_bins(lm or load_lm(model_path, s), tasks, outputs, s, model_path, model_name, train_bin)
    formats = {m["task"]: PromptFormat.from_config(m["prompt"], where=f"{m['dir']}/task.json:prompt") for m in tasks}
    instructions = {f.instruction.strip() for f in formats.values()}
    if lm is None:
        lm = load_lm(model_path, s)
    tokenizer = getattr(lm, "tokenizer", None)
    chat_flags = {name: fmt.use_chat(tokenizer) for name, fmt in formats.items()}
    chat = any(chat_flags.values())
    if chat and (len(set(chat_flags.values())) > 1 or len(instructions) > 1):
        raise CrossdiffError("tasks evaluated together must agree on chat_template and instruction; evaluate them separately")
    names = [m["task_chat"] if chat else m["task"] for m in tasks]

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from crossdiff.prompts.scoring import register_filters

    register_filters()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="crossdiff-tasks-") as tmp:
        _prepared_include_dir(tasks, Path(tmp))
        manager = TaskManager(include_path=tmp, include_defaults=False)
        results = simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            num_fewshot=num_fewshot,
            **({"fewshot_random_seed": fewshot_seed} if fewshot_seed is not None else {}),
            log_samples=True,
            bootstrap_iters=0,
            apply_chat_template=chat,
            system_instruction=(instructions.pop() or None) if chat else None,
            limit=s["limit"],
        )
    wall = time.time() - t0
    if results is None:
        raise CrossdiffError("lm-eval returned no results (non-zero rank?)")

    written = []
    for meta, name, out in zip(tasks, names, outputs):
        fmt = formats[meta["task"]]
        metric = fmt.primary_metric
        key = f"{metric},{fmt.filter_name}"
        task_res = results["results"].get(name, {})
        if key not in task_res:
            raise CrossdiffError(f"lm-eval results for {name} lack {key!r}; got {sorted(task_res)}")
        rows = []
        by_filter: dict[str, dict] = {}  # lm-eval logs one sample per (doc, filter)
        for sample in results["samples"][name]:
            by_filter.setdefault(sample.get("filter", fmt.filter_name), {})[sample["doc_id"]] = sample
        if fmt.filter_name not in by_filter:
            raise CrossdiffError(f"lm-eval samples of {name} lack filter {fmt.filter_name!r}; got {sorted(by_filter)}")
        for doc_id, sample in sorted(by_filter[fmt.filter_name].items()):
            correct = sample.get(metric)
            if correct is None:
                raise CrossdiffError(f"lm-eval sample {sample.get('doc_id')} of {name} has no {metric!r} value")
            row = {
                "item_id": sample["doc"]["item_id"],
                "correct": int(round(float(correct))),
                "prediction": _prediction(sample, fmt.scoring),
                "target": sample["doc"]["gold"],
                "raw": _raw(sample) if fmt.scoring == "generation" else None,
            }
            others = {f: int(round(float(s[doc_id][metric]))) for f, s in by_filter.items()
                      if f != fmt.filter_name and doc_id in s and s[doc_id].get(metric) is not None}
            if others:
                row["correct_by_filter"] = others
            if uses_math(fmt) and row["raw"] is not None:  # the authors' two attempts, each with its verdict
                row["math_verify"] = verdicts(row["raw"], str(row["target"]))
            if fmt.scoring == "multiple_choice":  # every MC metric of this item (acc and acc_norm can differ)
                row["correct_by_metric"] = {m: int(round(float(sample[m]))) for m in fmt.metric_names if m in sample}
            rows.append(row)
        n = len(rows)
        value = float(task_res[key])
        mean = sum(r["correct"] for r in rows) / n if n else math.nan
        stderr = math.sqrt(mean * (1 - mean) / (n - 1)) if n > 1 else None
        # other metrics and filters, keyed "metric" (same filter) or "metric,filter" (another filter)
        extra = {(k.split(",")[0] if k.split(",")[1] == fmt.filter_name else k): v
                 for k, v in task_res.items() if "," in k and "stderr" not in k and k != key}
        record = {
            "model": model_name or str(model_path),
            "model_path": str(model_path),
            "dataset": meta["dataset"],
            "train_bin": str(train_bin),
            "test_bin": int(meta["bin"]),
            "task": name,
            "metric": metric,
            "filter": fmt.filter_name,
            "value": value,
            "stderr": stderr,
            "n_items": n,
            "other_metrics": extra,
            "chat_template": chat,
            "backend": s["backend"],
            "eval_seconds_all_bins": wall,
            "samples": samples_path(out).name,
        }
        write_jsonl(rows, samples_path(out))  # samples first: a result JSON implies its samples exist
        write_json(record, out)
        written.append(record)
    print(f"evaluated {model_path} on {len(names)} bin(s) in {wall:.1f} s: "
          + ", ".join(f"bin{r['test_bin']}={r['value']:.3f}" for r in written))
    return written


# ---------------------------------------------------------------------------------------- CLI
def add_task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet: item_id, difficulty, bin)")
    p.add_argument("--bin", type=int, required=True, help="test bin")
    p.add_argument("--dataset", required=True, help="dataset name (used in the task name)")
    p.add_argument("--output", required=True, help="task folder to create")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")


def run_task(args: argparse.Namespace) -> None:
    meta = make_task(args.items, args.bins, args.bin, args.output, args.dataset, args.prompt)
    print(f"wrote task {meta['task']} ({meta['n_items']} items) to {args.output}")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (fine-tuned checkpoint or base model) or HF id")
    p.add_argument("--tasks", nargs="+", required=True, help="task folders (from make-task), one per test bin")
    p.add_argument("--outputs", nargs="+", required=True, help="result JSON per task folder, same order")
    p.add_argument("--model-name", help="model name recorded in the results (default: --model)")
    p.add_argument("--train-bin", default="zero-shot", help="'zero-shot' or the training bin number")
    p.add_argument("--train-dataset", help="the dataset the checkpoint was trained on, when the tasks are another "
                                           "dataset's bins (datasets.<d>.test_on): recorded as train_dataset")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object of evaluation settings (see module doc)")


def run_evaluate(args: argparse.Namespace) -> None:
    evaluate_model(args.model, args.tasks, args.outputs, args.settings, args.model_name, args.train_bin)
    if args.train_dataset:
        record_train_dataset(args.outputs, args.train_dataset)


def record_train_dataset(outputs, train_dataset: str) -> None:
    """A cross-dataset cell (``datasets.<d>.test_on``): its result JSON says which dataset trained the checkpoint
    (``train_dataset``) beside the scored dataset (``dataset``: the task's); everything else is the plain
    evaluation's, so the cell equals scoring that checkpoint on the other dataset's bin directly."""
    import json

    for out in outputs:
        rec = {**json.loads(Path(out).read_text()), "train_dataset": str(train_dataset)}
        write_json(rec, out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Two subcommands share this module: ``crossdiff make-task`` and ``crossdiff evaluate``.

    The CLI names the parser ``crossdiff <command>``; a parser whose prog ends in ``make-task`` gets
    the task-generation arguments, any other the evaluation arguments.
    """
    if p.prog.split()[-1] == "make-task":
        add_task_arguments(p)
        p.set_defaults(_crossdiff_stage="make-task")
    else:
        add_evaluate_arguments(p)
        p.set_defaults(_crossdiff_stage="evaluate")


def run(args: argparse.Namespace) -> None:
    if getattr(args, "_crossdiff_stage", "evaluate") == "make-task":
        run_task(args)
    else:
        run_evaluate(args)
