"""Memory plan of a GRPO job on one GPU: the policy's training, the optional reference model and generation.

Peak bytes on the job's GPU (``plan``)::

    policy     crossdiff.finetune.memory_plan.plan() of the same model, one GPU, a micro-batch of
               per_device_train_batch_size completions of (prompt + max_completion_length) tokens
               (LoRA: the frozen bf16 base; full fine-tuning: fp32 master + grads + AdamW + bf16 copy)
    reference  beta > 0 and no LoRA: a second copy of the weights in the checkpoint's dtype (2 bytes per
               parameter for bf16/fp16 checkpoints, else 4); TRL re-creates it from the path
               (grpo_trainer.py :983-1003). beta = 0, or LoRA (the adapter is switched off instead): none
    generation vLLM colocate: vllm_gpu_memory_utilization x the GPU's memory, taken by vLLM for its own bf16
               weights and KV cache (the share must hold the weights plus one sequence's KV cache);
               vLLM server: nothing on this GPU; transformers' generate: the KV cache of one generation round
               on this process (per_device_train_batch_size x steps_per_generation sequences)
               ``n * (prompt + completion) * 2 (K and V) * layers * kv_heads * head_dim * bytes``

The verdict compares the sum with ``gpu_mem_gb`` (``resources.finetune.gpu_mem_gb`` / models[].resources). For
the record (tests/test_grpo_plan.py): a 7B model (Qwen2.5-7B-Instruct) fully fine-tuned with beta 0, vLLM colocated
at 0.3 on one 80 GB GPU does NOT fit (AdamW's fp32 state alone is ~122 GB); with LoRA it fits.
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError
from crossdiff.finetune.memory_plan import CONTEXT_BYTES, FRAGMENTATION, GB, param_count, plan, shape

PROMPT_TOKENS = 512  #: the prompt length the plan assumes when none is given (prompts are not truncated)


def weight_bytes_per_param(cfg: dict) -> int:
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    return 2 if dtype in ("bfloat16", "float16", "bf16", "fp16", "half") else 4


def kv_bytes(cfg: dict, tokens: int, bytes_per: int = 2) -> float:
    sh = shape(cfg)
    return float(tokens) * 2 * sh["layers"] * sh["kv_heads"] * sh["head_dim"] * bytes_per


def grpo_plan(cfg: dict, s: dict, *, gpu_mem_gb: float, on_gpu: bool = True, prompt_tokens: int = PROMPT_TOKENS) -> dict:
    """Peak memory of one GRPO job on one GPU (bytes in GB, with a breakdown) for resolved GRPO settings."""
    from crossdiff.finetune.grpo_settings import steps_per_generation, uses_vllm

    completion = int(s["max_completion_length"] or 512)
    seq = prompt_tokens + completion
    ckpt = s.get("gradient_checkpointing", "auto") in (True, "auto")
    policy = plan(cfg, gpus=1, batch=int(s["per_device_train_batch_size"]), seq=seq,
                  master=s.get("master_weights", "fp32"), optimizer=s.get("optim", "adamw_torch"), checkpointing=ckpt,
                  lora=bool(s.get("lora")))
    p = param_count(cfg)
    ref = 0.0
    if float(s["beta"]) > 0 and not s.get("lora"):
        ref = weight_bytes_per_param(cfg) * p * FRAGMENTATION
    vllm = uses_vllm(s, on_gpu)
    generation, vllm_share, needed_share = 0.0, None, None
    if vllm and s["vllm_mode"] == "colocate":
        vllm_share = float(s["vllm_gpu_memory_utilization"]) * gpu_mem_gb * GB
        generation = vllm_share
        needed_share = 2 * p + kv_bytes(cfg, seq)  # its bf16 weights and one sequence's KV cache
    elif not vllm:
        n = int(s["per_device_train_batch_size"]) * steps_per_generation(s)
        generation = kv_bytes(cfg, n * seq, 2 if on_gpu else 4) * FRAGMENTATION
    total = policy["total_gb"] * GB + ref + generation
    return {
        "params": p,
        "gpus": 1,
        "policy_gb": policy["total_gb"],
        "weights_grads_optimizer_gb": policy["weights_grads_optimizer_gb"],
        "activations_gb": policy["activations_gb"],
        "logits_gb": policy["logits_gb"],
        "reference_gb": ref / GB,
        "generation_gb": generation / GB,
        "generation": ("vllm-colocate" if vllm and s["vllm_mode"] == "colocate" else
                       "vllm-server" if vllm else "transformers"),
        "vllm_share_gb": None if vllm_share is None else vllm_share / GB,
        "vllm_needs_gb": None if needed_share is None else needed_share / GB,
        "sequence_tokens": seq,
        "total_gb": total / GB,
        "context_gb": CONTEXT_BYTES / GB,
    }


def fit_message(model, est: dict, gpu_mem_gb: float) -> str | None:
    """None when the GRPO plan fits one GPU of ``gpu_mem_gb``; else what does not fit and what to change."""
    problems = []
    if est["total_gb"] > gpu_mem_gb:
        hints = []
        if est["weights_grads_optimizer_gb"] > 0.5 * gpu_mem_gb:
            hints.append("train a LoRA adapter (grpo.lora or finetune.lora: {r: 16})")
        if est["reference_gb"]:
            hints.append("set grpo.beta: 0 (no reference model) or use LoRA (the adapter is switched off instead)")
        if est["generation"] == "vllm-colocate":
            hints.append("lower grpo.vllm_gpu_memory_utilization, or generate on a vLLM server (grpo.vllm_mode: server)")
        hints.append("lower grpo.per_device_train_batch_size (raise gradient_accumulation_steps) or max_completion_length")
        hints.append("or set models[].resources.gpu_mem_gb to your GPU's real memory")
        problems.append(
            f"model {model}: the GRPO job needs about {est['total_gb']:.0f} GB on its one GPU ({est['params'] / 1e9:.2f}B "
            f"parameters: policy {est['policy_gb']:.0f} GB (weights+gradients+optimizer "
            f"{est['weights_grads_optimizer_gb']:.0f} GB, activations {est['activations_gb']:.0f} GB), reference "
            f"{est['reference_gb']:.0f} GB, generation ({est['generation']}) {est['generation_gb']:.0f} GB) but the GPU "
            f"has {gpu_mem_gb:g} GB (resources gpu_mem_gb). To fit: " + "; ".join(hints))
    if est["vllm_needs_gb"] is not None and est["vllm_needs_gb"] > est["vllm_share_gb"]:
        problems.append(
            f"model {model}: vLLM colocated gets {est['vllm_share_gb']:.0f} GB (grpo.vllm_gpu_memory_utilization x "
            f"{gpu_mem_gb:g} GB) but needs {est['vllm_needs_gb']:.0f} GB for its bf16 weights and one sequence's KV "
            "cache: raise grpo.vllm_gpu_memory_utilization or use vllm_mode: server")
    return "\n".join(problems) or None


def check_before_training(model_ref, model_dir, s: dict) -> None:
    """At the start of a GPU job: stop at once when the plan cannot fit (CROSSDIFF_GPU_MEM_GB or the device's memory)."""
    from crossdiff.finetune.memory_plan import job_gpu_memory_gb, read_config

    mem = job_gpu_memory_gb(s)
    if mem is None:
        return
    cfg = read_config(model_ref, model_dir)
    if cfg is None:
        return
    msg = fit_message(model_ref, grpo_plan(cfg, s, gpu_mem_gb=mem), mem)
    if msg:
        raise CrossdiffError(msg)


def study_plan(plan, mode: str | None = None) -> dict:
    """The GRPO memory plan of every (dataset, model) of the study whose GRPO job runs on a GPU (the dry run, from
    workflow/rules/grpo.smk): refuses (``resources.memory_check: error``) or warns. Returns {model slug: planned
    host mem_mb}."""
    import sys

    from crossdiff.finetune.memory_plan import host_plan
    from crossdiff.finetune.plan_check import model_configs

    mode = mode or plan.config["resources"]["memory_check"]
    if mode == "off" or "grpo" not in plan.study["methods"]:
        return {}
    jobs = []
    for name in plan.study_datasets():
        for slug, m in plan.models.items():
            res = plan.resources("finetune", slug)
            s = plan.grpo(name, slug)
            if res["gpu"] and not m.get("build") and s["device"] != "cpu":
                jobs.append((name, slug, m, res, s))
    configs = model_configs(sorted({m["id"] for _, _, m, _, _ in jobs}), plan.config["resources"]["model_config_cache"])
    problems, planned = [], {}
    for name, slug, m, res, s in jobs:
        cfg, _why = configs[m["id"]]
        if cfg is None:
            continue
        msg = fit_message(m["id"], grpo_plan(cfg, s, gpu_mem_gb=res["gpu_mem_gb"]), res["gpu_mem_gb"])
        if msg:
            problems.append(f"GRPO on dataset {name}: {msg}")
        planned[slug] = max(planned.get(slug, 0), host_plan(cfg, lora=bool(s["lora"]))["mem_mb"])
    problems = list(dict.fromkeys(problems))
    if problems and mode == "error":
        raise CrossdiffError("\n".join(problems))
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    return planned
