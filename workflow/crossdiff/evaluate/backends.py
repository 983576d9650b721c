"""lm-eval model arguments per backend: the vLLM layout from the evaluation settings and the job's GPUs."""

from __future__ import annotations

import os

from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.decoding import VLLM_ARGS
from crossdiff.prompts.chat import CHAT_TEMPLATE_KWARGS, template_kwargs


def visible_gpus() -> int:
    """GPUs this job may use: CUDA_VISIBLE_DEVICES when set (gpu-run, SLURM), else all CUDA devices."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def vllm_model_args(model_path, s: dict, n_gpus: int, adapter=None, lora_rank: int | None = None) -> dict:
    """lm-eval ``VLLM`` keyword arguments from evaluation settings and the job's GPU count; with ``adapter`` (a
    QLoRA fine-tune's unmerged LoRA adapter, crossdiff.finetune.qlora) vLLM applies it (``lora_local_path``)."""
    if n_gpus < 1:
        raise CrossdiffError("evaluation settings.backend is 'vllm' but this job sees no GPU "
                             "(resources.evaluate.gpu must be >= 1; CUDA_VISIBLE_DEVICES is empty)")
    dp = s["data_parallel"]
    tp = s["tensor_parallel"]
    if tp == "auto":
        if n_gpus % dp:
            raise CrossdiffError(f"evaluation settings.data_parallel {dp} does not divide the job's {n_gpus} GPU(s)")
        tp = n_gpus // dp
    if tp * dp != n_gpus:
        raise CrossdiffError(f"evaluation settings: tensor_parallel {tp} x data_parallel {dp} = {tp * dp} GPU(s), "
                             f"but the job has {n_gpus} (resources.evaluate.gpu); make them match")
    if dp > 1:
        from importlib.util import find_spec

        if find_spec("ray") is None:
            raise CrossdiffError("evaluation settings.data_parallel > 1: lm-eval runs vLLM replicas as Ray actors, and "
                                 "ray is not installed (not a vllm dependency). Use data_parallel: 1 (one replica per "
                                 "job; snakemake runs jobs in parallel), or pip install ray; note that lm-eval then "
                                 "rebuilds the engines for every request batch")
    dtype = s["dtype"] if s["dtype"] != "auto" else "bfloat16"
    if s["max_length"] and s["max_model_len"] and s["max_length"] != s["max_model_len"]:
        raise CrossdiffError("evaluation settings: max_length and max_model_len differ; set one")
    args = {"pretrained": str(model_path), "dtype": dtype, "batch_size": s["batch_size"],
            "tensor_parallel_size": tp, "data_parallel_size": dp, "gpu_memory_utilization": float(s["gpu_memory_util"]),
            "seed": int(s["seed"]), "chat_template_args": dict(CHAT_TEMPLATE_KWARGS),
            **VLLM_ARGS}  # the model's generation_config.json never changes the decoding
    if s["max_model_len"] or s["max_length"]:
        args["max_model_len"] = int(s["max_model_len"] or s["max_length"])
    if adapter is not None:
        from crossdiff.finetune.qlora import vllm_lora_rank

        args["lora_local_path"] = str(adapter)
        args["max_lora_rank"] = vllm_lora_rank(lora_rank or 16)
    extra = dict(s["model_args"])
    args["chat_template_args"] = template_kwargs(extra.pop("chat_template_args", None))  # the fixed date_string stays
    clash = sorted(set(extra) & set(args))
    if clash:
        raise CrossdiffError(f"evaluation settings.model_args repeats {clash}; set them with their own keys")
    return {**args, **extra}


def hf_model_kwargs(s: dict) -> dict:
    """Extra HFLM keyword arguments. ``batch_size: auto`` sizes batches at HFLM's ``max_length``, which is the
    model's whole context (131072 for Llama 3.x) unless set: detection then settles at 1-2 sequences. So with
    auto and no ``max_length``, ``auto_batch_max_length`` bounds it (prompt + generated tokens; longer contexts
    are cut from the left by lm-eval)."""
    kwargs = dict(s["model_args"])
    kwargs["chat_template_args"] = template_kwargs(kwargs.get("chat_template_args"))  # the fixed date_string stays
    if s["max_length"]:
        kwargs["max_length"] = s["max_length"]
    elif s["batch_size"] == "auto" and "max_length" not in kwargs:
        kwargs["max_length"] = int(s["auto_batch_max_length"])
    return kwargs
