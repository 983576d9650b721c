"""Fine-tune a base model on one bin's prompt/completion JSONL with TRL's ``SFTTrainer``.

Loss is on completion tokens only (``completion_only_loss=True``). Full fine-tuning by default;
``lora`` switches to a peft LoRA adapter that is merged (``merge_and_unload``) before saving, so
evaluation always loads a plain model. Checkpoints go to a work directory every ``save_steps`` steps
(keeping ``save_total_limit``); rerunning an interrupted job resumes from the last checkpoint there.
The final model + tokenizer + ``train_metrics.json`` are written atomically into the output directory.

Settings (``--settings`` JSON). Defaults follow the paper (Kordi et al. 2025) where it states them:

=============================  ===========  =====================================================
key                            default      meaning
=============================  ===========  =====================================================
num_train_epochs               5            paper
learning_rate                  5e-6         paper
lr_scheduler_type              "cosine"     paper
warmup_ratio                   0.1          paper
weight_decay                   0.1          paper
bf16                           "auto"       paper uses bf16; "auto" = bf16 on CUDA only (on CPU
                                            bf16 is ~10x slower); true on CPU is ignored
seed                           42           paper
per_device_train_batch_size    8
gradient_accumulation_steps    1
max_length                     1024         tokens per example (longer ones are truncated)
max_steps                      -1           > 0 overrides epochs
gradient_checkpointing         "auto"       "auto" = on CUDA only
device                         "auto"       "auto" (cuda if available), "cuda" or "cpu"
logging_steps                  1
save_steps                     50           checkpoint every N optimizer steps
save_total_limit               2
keep_checkpoints               false        keep the work directory after success
lora                           null         null = full fine-tuning; or {"r": 16, "alpha": 32,
                                            "dropout": 0.05, "target_modules": "all-linear"}
shuffle                        true         false = train in file order (curricula: the
                                            trainer's sequential sampler, see crossdiff.study)
=============================  ===========  =====================================================
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, iter_jsonl, write_json
from crossdiff.prompts import PromptFormat
from crossdiff.sft_data import check_lengths

DEFAULTS: dict = {
    "num_train_epochs": 5,
    "learning_rate": 5e-6,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "weight_decay": 0.1,
    "bf16": "auto",
    "seed": 42,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "max_steps": -1,
    "gradient_checkpointing": "auto",
    "device": "auto",
    "logging_steps": 1,
    "save_steps": 50,
    "save_total_limit": 2,
    "keep_checkpoints": False,
    "lora": None,
    "shuffle": True,
}
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def resolve_settings(settings: dict | None) -> dict:
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"finetune settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    if s["lora"] is not None:
        if not isinstance(s["lora"], dict):
            raise CrossdiffError(f"finetune settings.lora: expected null or an object, got {s['lora']!r}")
        bad = sorted(set(s["lora"]) - set(LORA_DEFAULTS))
        if bad:
            raise CrossdiffError(f"finetune settings.lora: unknown key(s) {bad}; known: {sorted(LORA_DEFAULTS)}")
        s["lora"] = {**LORA_DEFAULTS, **s["lora"]}
    if not (isinstance(s["warmup_ratio"], (int, float)) and 0 <= s["warmup_ratio"] < 1):
        raise CrossdiffError(f"finetune settings.warmup_ratio: expected a number in [0, 1), got {s['warmup_ratio']!r}")
    if s["device"] not in ("auto", "cuda", "cpu"):
        raise CrossdiffError(f"finetune settings.device: expected auto, cuda or cpu, got {s['device']!r}")
    return s


def choose_device(s: dict) -> str:
    import torch

    if s["device"] == "cpu":
        return "cpu"
    if s["device"] == "cuda" and not torch.cuda.is_available():
        raise CrossdiffError("finetune settings.device is 'cuda' but no CUDA device is available")
    return "cuda" if torch.cuda.is_available() else "cpu"


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


def last_checkpoint(work_dir) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(work_dir).is_dir():
        return None
    return get_last_checkpoint(str(work_dir))


def build_trainer(model_path, rows: list[dict], work_dir, s: dict, fmt: PromptFormat, callbacks=()):
    """Construct the SFTTrainer (exposed so tests can inspect its collator and batches)."""
    from crossdiff.base_model import offline_env

    offline_env(model_path)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    device = choose_device(s)
    on_gpu = device == "cuda"
    bf16 = on_gpu and (s["bf16"] is True or s["bf16"] == "auto") and torch.cuda.is_bf16_supported()
    grad_ckpt = on_gpu and s["gradient_checkpointing"] in (True, "auto")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(
            str(model_path), dtype=torch.bfloat16 if bf16 else torch.float32
        )
    except OSError as exc:
        raise CrossdiffError(f"{model_path}: cannot load model/tokenizer: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = fmt.use_chat(tokenizer)
    dataset = Dataset.from_list([fmt.training_example(r, chat) for r in rows])
    config = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=s["num_train_epochs"],
        max_steps=s["max_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type=s["lr_scheduler_type"],
        warmup_steps=float(s["warmup_ratio"]),  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=s["weight_decay"],
        per_device_train_batch_size=s["per_device_train_batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        max_length=s["max_length"],
        seed=s["seed"],
        data_seed=s["seed"],
        bf16=bf16,
        fp16=False,
        activation_checkpointing=grad_ckpt,  # transformers 5 name of gradient_checkpointing
        use_cpu=not on_gpu,
        completion_only_loss=True,
        train_sampling_strategy="random" if s["shuffle"] else "sequential",  # curricula keep their order
        packing=False,
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",
        save_steps=s["save_steps"],
        save_total_limit=s["save_total_limit"],
        report_to="none",
        dataloader_num_workers=0,
        dataset_num_proc=None,
        disable_tqdm=False,
    )
    peft_config = None
    if s["lora"]:
        from peft import LoraConfig

        lo = s["lora"]
        peft_config = LoraConfig(
            r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
            target_modules=lo["target_modules"], task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    return trainer, tokenizer, {"device": device, "bf16": bf16, "gradient_checkpointing": grad_ckpt, "chat_template": chat}


def _fingerprint(model_path, rows, s, fmt) -> str:
    payload = json.dumps(
        {"model": str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path),
         "rows": rows, "settings": {k: v for k, v in s.items() if k != "keep_checkpoints"},
         "prompt": fmt.to_config()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def finetune(
    model_path,
    train_path,
    output,
    work_dir=None,
    settings: dict | None = None,
    prompt: dict | None = None,
    callbacks=(),
) -> dict:
    """Train, save the final model atomically into ``output``; returns the metrics dict."""
    s = resolve_settings(settings)
    fmt = PromptFormat.from_config(prompt)
    s = {**s, "max_length": fmt.max_length or s["max_length"]}  # a benchmark's own limit (prompt.max_length)
    rows = read_sft_jsonl(train_path)
    output = Path(output)
    work_dir = Path(work_dir) if work_dir else output.with_name(output.name + ".work")
    fingerprint = _fingerprint(model_path, rows, s, fmt)
    stamp = work_dir / "crossdiff_run.json"
    if work_dir.exists():
        old = json.loads(stamp.read_text()).get("fingerprint") if stamp.exists() else None
        if old != fingerprint:
            print(f"{work_dir}: checkpoints belong to other inputs or settings; starting afresh")
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json({"fingerprint": fingerprint, "model": str(model_path), "train": str(train_path)}, stamp)

    resume = last_checkpoint(work_dir)
    trainer, tokenizer, runtime = build_trainer(model_path, rows, work_dir, s, fmt, callbacks)
    lengths = check_lengths(trainer, rows, fmt, s["max_length"])  # truncation counts; error or drop if no completion
    n_tokens_epoch = sum(len(x) for x in trainer.train_dataset["input_ids"])
    start_epoch = 0.0
    if resume:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        start_epoch = float(state.get("epoch") or 0.0)
        print(f"resuming from {resume} (step {state.get('global_step')})")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - t0

    model = trainer.model
    if s["lora"]:
        model = model.merge_and_unload()
    epochs_run = float(trainer.state.epoch or 0.0) - start_epoch
    history = trainer.state.log_history
    metrics = {
        "model": str(model_path),
        "train_data": str(train_path),
        "n_examples": len(rows),
        "global_step": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "resumed_from": resume,
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else None,
        "wall_seconds": wall,
        "train_tokens_per_epoch": n_tokens_epoch,
        "tokens_per_second": n_tokens_epoch * epochs_run / wall if wall > 0 else None,
        "train_loss": result.training_loss,
        "loss_curve": [
            {"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "learning_rate": h.get("learning_rate")}
            for h in history if "loss" in h
        ],
        "settings": s,
        "prompt": fmt.to_config(),
        "lengths": lengths,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **runtime,
    }
    with atomic_path(output, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(metrics, Path(tmp) / "train_metrics.json")
    if not s["keep_checkpoints"]:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(
        f"fine-tuned {model_path} on {len(rows)} examples: {metrics['global_step']} steps in {wall:.1f} s, "
        f"final loss {metrics['loss_curve'][-1]['loss'] if metrics['loss_curve'] else 'n/a'}; saved to {output}"
    )
    return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--train", required=True, help="prompt/completion JSONL (from make-sft-data)")
    p.add_argument("--output", required=True, help="directory for the fine-tuned model")
    p.add_argument("--work-dir", help="checkpoint directory (default: OUTPUT.work); kept across reruns for resume")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object of training settings (see module doc)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")


def run(args: argparse.Namespace) -> None:
    finetune(args.model, args.train, args.output, args.work_dir, args.settings, args.prompt)
