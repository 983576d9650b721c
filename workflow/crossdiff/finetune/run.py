"""``crossdiff finetune``: fine-tune a base model on one bin's prompt/completion JSONL (TRL SFTTrainer).

One job = one process, or N ranks of one distributed job (``num_processes``, by default the job's
GPUs, ``--gpus``): the command then prepares the work directory and starts the ranks with
``accelerate launch --multi_gpu --num_processes N -m crossdiff.cli finetune --worker ...``; on GPUs
they train with FSDP2 (FULL_SHARD, bf16 compute, fp32 sharded master weights), on CPU accelerate
runs them as DDP over gloo (it enables FSDP only on accelerators). Rank 0 saves the gathered model
once, as a plain HF model.

Checkpoints go to a work directory (default ``OUTPUT.work``) every ``save_steps`` steps; a rerun
resumes from the newest COMPLETE one of the same inputs (see checkpoints.py), and the work directory
is removed after success unless ``keep_checkpoints``. Settings: see settings.py.

Submodules: settings (defaults, precision guard), checkpoints (resume safety), weights (base
files, share of changed parameters), train (one rank), launch (the distributed launch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from crossdiff.cli import json_arg
from crossdiff.compute import require_device
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.checkpoints import fingerprint, in_worker, last_complete_checkpoint, prepare_work_dir
from crossdiff.finetune.owner import owned
from crossdiff.finetune.settings import DEFAULTS, LORA_DEFAULTS, resolve_settings, validate_settings, world_size  # noqa: F401
from crossdiff.finetune.train import build_trainer, choose_device, mean_train_loss, train_and_save  # noqa: F401
from crossdiff.finetune.weights import resolve_model_dir
from crossdiff.io import iter_jsonl
from crossdiff.prompts.format import PromptFormat

last_checkpoint = last_complete_checkpoint  # the name tests and older code use


def read_sft_jsonl(path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise CrossdiffError(f"{p}: training data not found")
    rows = []
    for n, row in iter_jsonl(p):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise CrossdiffError(f"{p}: line {n}: expected a string field {key!r}")
        rows.append(row)
    if not rows:
        raise CrossdiffError(f"{p}: no training examples")
    return rows


def _default_work_dir(output: Path) -> Path:
    return output.with_name(output.name + ".work")


def finetune(
    model_path,
    train_path,
    output,
    work_dir=None,
    settings: dict | None = None,
    prompt: dict | None = None,
    callbacks=(),
    gpus: int | None = None,
    nodes: int = 1,
) -> dict | None:
    """Train, save the final model atomically into ``output``; returns the metrics dict (rank 0).

    The workflow passes every job's complete settings, resolved at parse time (:mod:`crossdiff.plan.settings`,
    prompt.max_length included), so nothing is merged here; a standalone call's missing keys are filled by the
    same function (:func:`resolve_settings`), with the prompt's max_length where the settings have none, as the
    resolver's layers order them."""
    fmt = PromptFormat.from_config(prompt)
    if fmt.max_length and "max_length" not in (settings or {}):  # a standalone call: the resolver's layer order
        settings = {**(settings or {}), "max_length": fmt.max_length}
    s = resolve_settings(settings)
    require_device(s["device"], "finetune.device")  # before anything is read or loaded
    rows = read_sft_jsonl(train_path)
    output = Path(output)
    work_dir = Path(work_dir) if work_dir else _default_work_dir(output)
    with owned(work_dir):  # one trainer per work directory (a live owner is an error naming it)
        try:
            return _finetune_owned(model_path, train_path, output, work_dir, s, fmt, rows, callbacks, gpus, nodes)
        except BaseException:
            _remove_if_unused(work_dir)
            raise


def _remove_if_unused(work_dir: Path) -> None:
    """A job that failed before its first checkpoint leaves no empty work directory behind."""
    if work_dir.is_dir() and not any(p.name.startswith("checkpoint-") for p in work_dir.iterdir()):
        shutil.rmtree(work_dir, ignore_errors=True)


def _finetune_owned(model_path, train_path, output, work_dir, s, fmt, rows, callbacks, gpus, nodes=1) -> dict | None:
    n = world_size(s, gpus)
    nodes = max(1, int(nodes or 1))
    model_dir = resolve_model_dir(model_path)
    fp = fingerprint(model_dir, rows, s, fmt.to_config(), n, nodes)
    prepare_work_dir(work_dir, output, fp, {"model": str(model_path), "train": str(train_path), "processes": n,
                                            **({"nodes": nodes} if nodes > 1 else {})})
    if nodes > 1:  # one SLURM job of several nodes: one launcher per node through srun
        from crossdiff.finetune.multinode import launch_nodes

        launch_nodes(n, nodes, model_path, train_path, output, work_dir, s, fmt.to_config())
        metrics = None
        if not (output / "train_metrics.json").is_file():
            raise CrossdiffError(f"{output}: the {n} ranks on {nodes} nodes ended without saving the model")
    elif n > 1:
        from crossdiff.finetune.launch import launch_ranks

        launch_ranks(n, model_path, train_path, output, work_dir, s, fmt.to_config())
        metrics = None
        if not (output / "train_metrics.json").is_file():
            raise CrossdiffError(f"{output}: the {n} ranks ended without saving the model")
    else:
        metrics = train_and_save(model_path, model_dir, train_path, rows, output, work_dir, s, fmt, callbacks, 1)
    if not s["keep_checkpoints"]:
        shutil.rmtree(work_dir, ignore_errors=True)
    if metrics is None:
        import json

        metrics = json.loads((output / "train_metrics.json").read_text())
    return metrics


def worker(args: argparse.Namespace) -> None:
    """One rank of a distributed job (started by launch_ranks): the launcher prepared the work dir."""
    s = resolve_settings(args.settings)  # complete: resolved by the launcher's job
    require_device(s["device"], "finetune.device")
    fmt = PromptFormat.from_config(args.prompt)
    rows = read_sft_jsonl(args.train)
    n = int(os.environ.get("WORLD_SIZE", "1"))
    model_dir = resolve_model_dir(args.model)
    train_and_save(args.model, model_dir, args.train, rows, Path(args.output), Path(args.work_dir), s, fmt, (), n)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--train", required=True, help="prompt/completion JSONL (from make-sft-data)")
    p.add_argument("--output", required=True, help="directory for the fine-tuned model")
    p.add_argument("--work-dir", help="checkpoint directory (default: OUTPUT.work); kept across reruns for resume")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object of training settings (see settings.py)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--gpus", type=int, default=None, help="GPUs of this job, all its nodes' (num_processes 'auto' uses them)")
    p.add_argument("--nodes", type=int, default=1, help="nodes of this SLURM job: > 1 starts one launcher per node "
                   "through srun (crossdiff.finetune.multinode)")
    p.add_argument("--metrics-copy", help="also write train_metrics.json here (it stays when the model is deleted)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def _terminate(signum, frame):  # SIGTERM (scancel, snakemake) -> an exception, so temporaries are removed
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    if args.worker:
        if not in_worker():
            raise CrossdiffError("--worker is internal: ranks are started by 'crossdiff finetune' itself")
        worker(args)
        return
    metrics = finetune(args.model, args.train, args.output, args.work_dir, args.settings, args.prompt, gpus=args.gpus,
                       nodes=args.nodes)
    if args.metrics_copy:
        from crossdiff.io import write_json

        write_json(metrics, args.metrics_copy)
    sys.stdout.flush()
