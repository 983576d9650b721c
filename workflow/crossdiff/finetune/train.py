"""One fine-tuning process (rank): build the SFTTrainer, train (resuming), gather and save the model.

Loss is on completion tokens only (``completion_only_loss=True``). Full fine-tuning by default;
``lora`` switches to a peft LoRA adapter merged (``merge_and_unload``) before saving, so evaluation
loads a plain model; except QLoRA (``quantization: nf4``), saved unmerged as the dequantised base plus the
adapter (crossdiff.finetune.qlora), which evaluation applies through peft / vLLM's LoRA; ``quantization: int8``
likewise. ``objective: multiple_choice`` trains Hase et al.'s loss over the options instead
(crossdiff.finetune.mc_objective: pre-tokenised option sequences, its own collator and ``compute_loss``).

Precision (see settings.py): the model is loaded with fp32 parameters; on a GPU the forward and
backward run in bf16 (Trainer ``bf16=True`` = torch autocast; under FSDP the engine's mixed
precision casts the gathered shards to bf16 while the sharded fp32 parameters stay the master
copy, and gradients are reduce-scattered in fp32 every micro-batch: fp32_gradient_reduction,
sync_each_batch), so AdamW updates fp32 weights with fp32 moments. Under FSDP2 with
``cpu_ram_efficient_loading`` only rank 0 reads the weights (rank0_loading_env). The saved model is cast
once to ``save_dtype`` (bf16 when trained with bf16 compute) and config.json says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from crossdiff.compute import deterministic_torch
from crossdiff.errors import CrossdiffError
from crossdiff.finetune import qlora
from crossdiff.finetune.checkpoints import completion_callback, last_complete_checkpoint
from crossdiff.finetune.settings import TRL_LOSS_TYPES, accumulation_steps, engine_for, is_bnb_optimizer, precision_plan  # noqa: F401
from crossdiff.finetune.weights import changed_share, optimizer_state_dtype
from crossdiff.io import atomic_path, write_json
from crossdiff.prompts.format import PromptFormat
from crossdiff.study.sft_data import check_lengths


def choose_device(s: dict) -> str:
    """cpu or cuda for ``finetune.device``; cuda on a host without CUDA is an error naming the key."""
    from crossdiff.compute import device_for

    return "cuda" if device_for(s["device"], "finetune.device").startswith("cuda") else "cpu"


def _fsdp_args(s: dict, grad_ckpt: bool) -> dict:
    """TrainingArguments' FSDP2 settings: FULL_SHARD (reshard after forward), one unit per decoder layer
    (the model's ``_no_split_modules``), sharded checkpoints, rank-0-only loading."""
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "SHARDED_STATE_DICT",
            "cpu_ram_efficient_loading": bool(s["cpu_ram_efficient_loading"]),
            "activation_checkpointing": grad_ckpt,
        },
        # reduce-scatter every micro-batch: without it FSDP2 keeps an unsharded gradient of the whole model
        # between the micro-batches of an accumulation step
        "accelerator_config": {"gradient_accumulation_kwargs": {"sync_each_batch": True}},
    }


def schedule_kwargs(s: dict) -> dict:
    """The learning-rate schedule's SFTConfig arguments: ``final_lr_ratio`` r with the linear schedule is
    transformers' polynomial schedule of power 1 ending at ``lr_end = r * learning_rate``, i.e.
    ``lr * (1 - (1 - r) * step / T)``: Hase et al.'s linear schedule over ``T / (1 - r)`` steps (their probes.py:395-401)."""
    r = s.get("final_lr_ratio")
    if r is None:
        return {"lr_scheduler_type": s["lr_scheduler_type"]}
    return {"lr_scheduler_type": "polynomial",
            "lr_scheduler_kwargs": {"lr_end": float(r) * float(s["learning_rate"]), "power": 1.0}}


def sft_config_kwargs(s: dict, work_dir, *, engine: str, on_gpu: bool, prec: dict, grad_ckpt: bool, accum: int,
                      items_per_device: int | None = None, env=None) -> dict:
    """SFTConfig's arguments for resolved settings (tests build a real SFTConfig from them under the pinned
    transformers/TRL: a renamed field fails there, not on the first GPU). ``items_per_device``: the multiple-choice
    objective's items per micro-batch (crossdiff.finetune.mc_objective). ``env``: the rank's environment
    (default os.environ), whose torchrun variables give ``sharding: hybrid`` its nodes (crossdiff.finetune.multinode)."""
    from crossdiff.finetune.multinode import parallelism_config_kwargs

    extra = {**_fsdp_args(s, grad_ckpt), **parallelism_config_kwargs(s, env)} if engine == "fsdp2" else {}
    if s.get("objective", "sft") == "multiple_choice":  # pre-tokenised option sequences, their own collator
        extra.update(dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False)
    kw = dict(
        output_dir=str(work_dir),
        num_train_epochs=s["num_train_epochs"],
        max_steps=s["max_steps"],
        learning_rate=s["learning_rate"],
        **schedule_kwargs(s),
        warmup_steps=float(s["warmup_ratio"]),  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=s["weight_decay"],
        adam_beta1=s["adam_beta1"],
        adam_beta2=s["adam_beta2"],
        max_grad_norm=s["max_grad_norm"],
        optim=s["optim"],
        per_device_train_batch_size=s["per_device_train_batch_size"],
        gradient_accumulation_steps=accum,
        # padding-free batches: TRL refuses max_length without packing (it would not enforce it), so the
        # examples are truncated here instead (truncate_dataset, after TRL's tokenization)
        max_length=None if s["padding_free"] else s["max_length"],
        seed=s["seed"],
        data_seed=s["seed"],
        bf16=prec["compute_bf16"],
        fp16=False,
        # under FSDP its own (fsdp_config) is used, and this must be an explicit False: TRL defaults it
        # to True and transformers 5.19 refuses both at once
        gradient_checkpointing=grad_ckpt and engine != "fsdp2",
        use_liger_kernel=bool(s["use_liger_kernel"]),
        padding_free=bool(s["padding_free"]),
        use_cpu=not on_gpu,
        completion_only_loss=True,
        loss_type=TRL_LOSS_TYPES[s["loss"]],  # dft: trl/trainer/sft_trainer.py:1612-1618 (crossdiff.finetune.dft)
        train_sampling_strategy="random" if s["shuffle"] else "sequential",  # curricula keep their order
        packing=False,
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",
        save_steps=s["save_steps"],
        save_total_limit=s["save_total_limit"],
        save_only_model=False,
        report_to="none",
        dataloader_num_workers=0,
        dataset_num_proc=None,
        ddp_find_unused_parameters=False if engine == "ddp" else None,
        # a 14B rank-0 gather + save can outlast the default 30 min while the other ranks wait at the barrier
        ddp_timeout=int(s["ddp_timeout"]),
        disable_tqdm=False,
        **extra,
    )
    if items_per_device is not None:
        kw["per_device_train_batch_size"] = int(items_per_device)
    return kw


def rank0_loading_env(config) -> None:
    """transformers reads the weights on rank 0 only (the others build the model on the meta device and get
    their shards from rank 0 when FSDP2 wraps it) when ACCELERATE_USE_FSDP and FSDP_CPU_RAM_EFFICIENT_LOADING
    are set and the process group is up, before ``from_pretrained``. ``accelerate launch --multi_gpu``
    sets neither: without this every rank holds a full fp32 copy in host RAM."""
    _ = config.device  # initializes accelerate's PartialState, i.e. the process group
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
    from transformers.distributed.fsdp import is_fsdp_enabled

    print(f"rank {os.environ.get('RANK', '0')}: rank-0 loading {'on' if is_fsdp_enabled() else 'OFF'}", flush=True)


def fp32_gradient_reduction(trainer) -> None:
    """FSDP2 with bf16 compute: all-gather bf16 parameters but reduce-scatter gradients in fp32 (accelerate's
    default policy reduces in bf16), so the fp32 master weights get fp32 gradient sums."""
    import torch

    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is None:
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy

    plugin.mixed_precision_policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.bfloat16)


def truncate_dataset(dataset, max_length: int):
    """Cut every per-token column of a tokenized dataset to ``max_length`` (what TRL does when it gets
    max_length; with padding_free it cannot)."""
    def cut(example):
        n = len(example["input_ids"])
        return {k: (v[:max_length] if isinstance(v, list) and len(v) == n else v) for k, v in example.items()}

    return dataset.map(cut)


def build_trainer(model_path, rows: list[dict], work_dir, s: dict, fmt: PromptFormat, callbacks=(), n_processes: int = 1):
    """Construct the SFTTrainer (exposed so tests can inspect its collator and batches)."""
    from crossdiff.hub import offline_env

    offline_env(model_path)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    device = choose_device(s)
    deterministic_torch(device)  # fixed CPU threads (not the core count); deterministic kernels on the CPU
    on_gpu = device == "cuda"
    prec = precision_plan(s, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    grad_ckpt = on_gpu and s["gradient_checkpointing"] in (True, "auto")
    engine = engine_for(s, n_processes, on_gpu)
    accum = accumulation_steps(s, n_processes)
    from crossdiff.finetune.multinode import nodes_of_launch

    # the config first: with FSDP it tells transformers (FSDP_CPU_RAM_EFFICIENT_LOADING) that only
    # rank 0 reads the weights
    mc = s.get("objective", "sft") == "multiple_choice"
    if mc:
        from crossdiff.finetune import mc_objective
    config = SFTConfig(**sft_config_kwargs(s, work_dir, engine=engine, on_gpu=on_gpu, prec=prec,
                                           grad_ckpt=grad_ckpt, accum=accum,
                                           items_per_device=mc_objective.items_per_batch(s, rows) if mc else None))
    if engine == "fsdp2" and s["cpu_ram_efficient_loading"]:
        rank0_loading_env(config)
    if s["attn_implementation"] == "flash_attention_2":
        from importlib.util import find_spec

        if find_spec("flash_attn") is None:
            raise CrossdiffError("finetune settings.attn_implementation is 'flash_attention_2' (needed by padding_free) "
                                 "but flash-attn is not installed: pip install flash-attn==2.8.3.post2 --no-build-isolation "
                                 "(envs/requirements-gpu.txt), or set padding_free: false and attn_implementation: null")
    load_dtype = torch.bfloat16 if prec["master_dtype"] == "bf16" else torch.float32
    kwargs = {"dtype": load_dtype}
    if s["attn_implementation"]:
        kwargs["attn_implementation"] = s["attn_implementation"]
    kwargs.update(qlora.model_kwargs(s, on_gpu))  # QLoRA: 4-bit NF4 base ({} otherwise); refused without bitsandbytes/GPU
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    except OSError as exc:
        raise CrossdiffError(f"{model_path}: cannot load model/tokenizer: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = fmt.use_chat(tokenizer)
    trainer_cls, collator = SFTTrainer, None
    if mc:  # finetune.objective multiple_choice: Hase et al.'s loss over the options (crossdiff.finetune.mc_objective)
        dataset, collator = mc_objective.dataset_and_collator(rows, tokenizer, fmt, chat, s["max_length"])
        trainer_cls = mc_objective.trainer_class()
    else:
        dataset = Dataset.from_list([fmt.training_example(r, chat) for r in rows])
    peft_config = None
    if s["lora"]:
        from peft import LoraConfig

        lo = s["lora"]
        peft_config = LoraConfig(
            r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
            target_modules=lo["target_modules"], task_type="CAUSAL_LM",
        )
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[completion_callback(), *callbacks],
        **({"data_collator": collator} if collator is not None else {}),
    )
    if s["padding_free"]:
        trainer.train_dataset = truncate_dataset(trainer.train_dataset, s["max_length"])
    if engine == "fsdp2" and prec["compute_bf16"]:
        fp32_gradient_reduction(trainer)
    runtime = {
        "device": device,
        "bf16": prec["compute_bf16"],
        "precision": prec["mode"],
        "save_dtype": prec["save_dtype"],
        "gradient_checkpointing": grad_ckpt,
        "chat_template": chat,
        "engine": engine,
        "world_size": n_processes,
        "nodes": nodes_of_launch(),
        "sharding": s["sharding"] if engine == "fsdp2" else engine,
        "gradient_accumulation_steps": accum,
        "global_batch_size": s["per_device_train_batch_size"] * accum * n_processes,
        "rank0_loading": engine == "fsdp2" and bool(s["cpu_ram_efficient_loading"]),
        "gradient_reduce_dtype": "fp32" if engine != "single" else None,  # FSDP2: fp32_gradient_reduction
        "objective": s.get("objective", "sft"),
        "items_per_micro_batch": config.per_device_train_batch_size if mc else None,
    }
    return trainer, tokenizer, runtime


def saved_dtype_in_config(path: Path, save_dtype: str) -> None:
    """config.json's ``dtype`` names the saved weights' dtype (save_pretrained writes the in-memory
    model's, fp32 for a bf16 save): loaders with dtype "auto" (vLLM, lm-eval) then load what is on disk."""
    cfg = json.loads(path.read_text())
    cfg["dtype"] = "bfloat16" if save_dtype == "bf16" else "float32"
    cfg.pop("torch_dtype", None)
    write_json(cfg, path)


def mean_train_loss(history: list[dict]) -> float | None:
    """Mean training loss over every step of the run, from the logged losses (each logged loss is
    the mean of the steps since the previous log), including steps before a resume: the Trainer's own
    ``training_loss`` only averages the steps run by this process (0.0 when resumed at the end)."""
    total = weight = 0.0
    prev = 0
    for h in history:
        if "loss" in h and "step" in h:
            n = max(1, int(h["step"]) - prev)
            total += float(h["loss"]) * n
            weight += n
            prev = int(h["step"])
    return total / weight if weight else None


def _mesh_of(trainer) -> dict | None:
    """FSDP2's device mesh (dimension name -> size, e.g. {"dp_replicate": 2, "dp_shard": 2} under hybrid
    sharding), None without one."""
    mesh = getattr(trainer.accelerator, "torch_device_mesh", None)
    if mesh is None or not getattr(mesh, "mesh_dim_names", None):
        return None
    return {str(name): int(size) for name, size in zip(mesh.mesh_dim_names, mesh.shape)}


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def bf16_save_warnings(weights: dict, save_dtype: str) -> list[str]:
    """A bf16 save that rounds away most of what training changed: the evaluation would score a model
    close to the base one (small lr, few steps). Said loudly, recorded in train_metrics.json."""
    full, kept = weights.get("share_changed"), weights.get("share_changed_bf16")
    if save_dtype != "bf16" or not full or kept is None or kept >= 0.5 * full:
        return []
    return [f"the bf16 save keeps the training's change in only {kept:.1%} of the parameters (trained in fp32: "
            f"{full:.1%}); evaluation will see a model close to the base model. Train longer or at a higher "
            f"learning rate, or save and evaluate in fp32 (finetune.save_dtype: fp32, evaluate.dtype: float32)"]


def _peak_gpu_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def assemble_metrics(*, model_path, train_path, rows, trainer, resume, wall, n_tokens_epoch, start_epoch,
                     s, fmt, runtime, weights: dict, param_dtype, optim_dtype, lengths: dict) -> dict:
    """Everything train_metrics.json records (add new entries here)."""
    epochs_run = float(trainer.state.epoch or 0.0) - start_epoch
    history = trainer.state.log_history
    return {
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
        "train_loss": mean_train_loss(history),
        "loss_curve": [
            {"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "learning_rate": h.get("learning_rate")}
            for h in history if "loss" in h
        ],
        "param_dtype": param_dtype,
        "optimizer_state_dtype": optim_dtype,
        **weights,
        "settings": s,
        "prompt": fmt.to_config(),
        "lengths": lengths,
        "peak_gpu_gb": _peak_gpu_gb(),  # rank 0's torch.cuda.max_memory_allocated (None on CPU)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **runtime,
    }


def train_and_save(model_path, model_dir, train_path, rows, output, work_dir, s, fmt, callbacks=(), n_processes=1) -> dict | None:
    """Train one job (this process is one rank of it); rank 0 saves the gathered model atomically.
    Returns the metrics on rank 0, None on the other ranks."""
    import torch

    from crossdiff.finetune.memory_plan import check_before_training

    # each rank checks its own GPU (in the rank, so the launcher never opens a CUDA context)
    from crossdiff.finetune.multinode import nodes_of_launch

    check_before_training(model_path, model_dir, s, n_processes, nodes_of_launch())
    resume = last_complete_checkpoint(work_dir)
    trainer, tokenizer, runtime = build_trainer(model_dir, rows, work_dir, s, fmt, callbacks, n_processes)
    lengths = check_lengths(trainer, rows, fmt, s["max_length"])  # truncation counts; error or drop if no completion
    n_tokens_epoch = sum(len(x) for x in trainer.train_dataset["input_ids"])
    start_epoch = 0.0
    if resume:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        start_epoch = float(state.get("epoch") or 0.0)
        print(f"resuming from {resume} (step {state.get('global_step')})", flush=True)
    t0 = time.time()
    if resume and int(state.get("global_step") or 0) >= int(state.get("max_steps") or 0) > 0:
        # killed after the last checkpoint (e.g. during the final save): nothing left to train
        # (train() would run one more step); load the checkpoint's weights and state instead
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        print(f"{resume} is the final step: saving it without training", flush=True)
    else:
        trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - t0

    runtime["device_mesh"] = _mesh_of(trainer)
    param_dtype = str(next(trainer.model.parameters()).dtype).replace("torch.", "")
    optim_dtype = optimizer_state_dtype(trainer.optimizer)
    if runtime["engine"] == "fsdp2":
        state_dict = trainer.accelerator.get_state_dict(trainer.model)  # collective: gathered on rank 0
        model = trainer.accelerator.unwrap_model(trainer.model)
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if s.get("quantization"):  # QLoRA: saved unmerged (base/ + adapter/), see crossdiff.finetune.qlora
            state_dict = None
        else:
            if s["lora"]:
                model = model.merge_and_unload()
            state_dict = model.state_dict()
    metrics = None
    if _is_main() and state_dict is None:  # QLoRA: the dequantised base (bf16, exact) and the fp32 adapter
        with atomic_path(output, directory=True) as tmp:
            manifest = qlora.save_for_evaluation(model, tokenizer, tmp, s["quantization"])
            weights = {"share_changed": manifest["share_changed_fp32"], "share_changed_bf16": None,
                       "share_changed_bf16_merge": manifest["share_changed_bf16_merge"], "warnings": [],
                       "note": "QLoRA: saved unmerged (base/ = the dequantised NF4 base, adapter/ = the LoRA adapter); "
                               "share_changed counts the adapted layers' weights W + s*B@A changes in fp32"}
            metrics = assemble_metrics(
                model_path=model_path, train_path=train_path, rows=rows, trainer=trainer, resume=resume, wall=wall,
                n_tokens_epoch=n_tokens_epoch, start_epoch=start_epoch, s=s, fmt=fmt, runtime=runtime,
                weights=weights, param_dtype=param_dtype, optim_dtype=optim_dtype, lengths=lengths,
            )
            write_json(metrics, Path(tmp) / "train_metrics.json")
    elif _is_main():
        weights = changed_share(state_dict, model_dir)
        dtype = torch.bfloat16 if runtime["save_dtype"] == "bf16" else torch.float32
        weights["warnings"] = bf16_save_warnings(weights, runtime["save_dtype"])
        for w in weights["warnings"]:
            print(f"WARNING: {w}", flush=True)
        state_dict = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
        model.config.dtype = dtype
        metrics = assemble_metrics(
            model_path=model_path, train_path=train_path, rows=rows, trainer=trainer, resume=resume, wall=wall,
            n_tokens_epoch=n_tokens_epoch, start_epoch=start_epoch, s=s, fmt=fmt, runtime=runtime,
            weights=weights, param_dtype=param_dtype, optim_dtype=optim_dtype, lengths=lengths,
        )
        with atomic_path(output, directory=True) as tmp:
            model.save_pretrained(tmp, state_dict=state_dict)
            saved_dtype_in_config(Path(tmp) / "config.json", runtime["save_dtype"])
            tokenizer.save_pretrained(tmp)
            write_json(metrics, Path(tmp) / "train_metrics.json")
        curve = metrics["loss_curve"]
        print(
            f"fine-tuned {model_path} on {len(rows)} examples ({runtime['engine']}, {n_processes} process(es), "
            f"{runtime['precision']}): {metrics['global_step']} steps in {wall:.1f} s, "
            f"final loss {curve[-1]['loss'] if curve else 'n/a'}, share of parameters changed "
            f"{weights.get('share_changed')}; saved to {output}",
            flush=True,
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return metrics
