"""Memory plan of a full fine-tune: peak memory per GPU from a model's ``config.json``.

Parameter count (decoder-only Llama/Qwen2-style model)::

    P = V*h (embeddings) + [V*h if not tied] (lm head) + h (final norm)
        + L * ( h*(n_q*d) + 2*h*(n_kv*d) + (n_q*d)*h      attention q, k, v, o  (d = head_dim)
                + [n_q*d + 2*n_kv*d if qkv bias]          (Qwen2: bias on q, k, v)
                + 3*h*I                                    SwiGLU gate, up, down
                + 2*h )                                    two RMSNorms

Bytes per parameter (AdamW, full fine-tuning), sharded over N GPUs by FSDP FULL_SHARD / ZeRO-3::

    fp32 master weights 4 + fp32 gradients 4 + AdamW moments 8 (8-bit optimizers: 2)   / N
    + bf16 compute copy 2: the whole model on one GPU (autocast's weight casts), or under FSDP
      the gathered bf16 layers in flight (two decoder layers: the current one and the prefetched one)
    pure bf16 (opt-in): weights 2 + gradients 2 + moments 4, / N

QLoRA (``quantization="nf4"`` with LoRA): the base's decoder-layer weights in NF4 with double
quantisation (4 bits + 8-bit block constants per 64 weights + their fp32 constants per 256 blocks:
``4.127/8`` bytes per weight); embeddings, lm_head and norms stay bf16 (2 bytes); the LoRA adapters
(``r*(in+out)`` per targeted linear) train in fp32 with AdamW: 16 bytes per adapter parameter.
One GPU (QLoRA runs one process). ``quantization="int8"`` (LLM.int8): 1 byte per decoder-layer weight plus an
fp32 scale per output row (counted as 4 bytes per row of the hidden size), the rest as for NF4.

Activations per GPU (bf16, per micro-batch of b sequences of s tokens; flash/SDPA attention, no s^2
term): without activation checkpointing ``b*s*L*(18*h + 4*I + 4*n_kv*d) * 2 bytes`` (inputs of
every norm, projection, activation and the attention output kept for the backward); with it only
each layer's input (``b*s*h*2`` per layer) plus one layer's full activations. Logits: TRL (1.16)
scores through its own chunked fused LM head at completion positions only, in tiles of at most
4096 tokens x 32768 vocabulary entries (bf16 product + fp32 softmax statistics), and switches Liger's
fused linear cross-entropy off: ``min(b*s, 4096) * min(V, 32768) * 6`` bytes whatever Liger does.
Under FSDP2 the root unit (embeddings, final norm, LM head: not a decoder layer) stays gathered in
bf16 from the forward to its backward, with its bf16 gradient before the reduce-scatter:
``(2 + 2) * P_root``. Gradient accumulation under FSDP2 reduce-scatters every micro-batch
(``sync_each_batch``), so no unsharded full-model gradient is kept between micro-batches.
Plus 1.5 GB of CUDA context and workspace, and 10% for allocator fragmentation.

Host RAM per job (``host_plan``): ``from_pretrained`` reads fp32 weights, and the FSDP2 wrap (or
the move to the GPU) holds a second, partial copy at its peak: ``1.4 * 4 * P`` per process that
loads. With FSDP2 and ``cpu_ram_efficient_loading`` only rank 0 loads (crossdiff sets
ACCELERATE_USE_FSDP for transformers; the other ranks start on the meta device); otherwise (single
GPU, DDP) every rank does. Plus 4 GB per rank for the interpreter, CUDA host state and the data.

Several nodes (``resources nodes`` N x ``gpu`` G, crossdiff.finetune.multinode): FSDP2 shards over all
N x G ranks (``sharding: fsdp``), or with ``sharding: hybrid`` over the G ranks of one node (each node holds
a full replica of the sharded state: ``/ G``, not ``/ (N x G)``); activations, logits and the gathered
units are per GPU whatever the node count. Host RAM is per node (sbatch ``--mem`` is per node): node 0 holds
the rank-0 loader and its G ranks, every other node G ranks; planned as node 0's.

This is a plan, not a measurement: it is meant to be conservative to within ~15%, which is what
decides whether a configuration can run at all (``benchmarks/sft_throughput.py`` measures the peak).
"""

from __future__ import annotations

import json
from pathlib import Path

from crossdiff.errors import CrossdiffError

GB = 1e9
CONTEXT_BYTES = 1.5 * GB
FRAGMENTATION = 1.10
TOKEN_TILE, VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob tiles
LOAD_FACTOR = 1.4  # peak host bytes while loading + wrapping, per fp32 byte of the model
RANK_HOST_BYTES = 4 * GB


def _get(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    if default is not None:
        return default
    which = repr(names[0]) if len(names) == 1 else "none of " + ", ".join(map(repr, names))
    raise CrossdiffError(f"{which} is not set (config.json needs it for the memory plan)")


def _size(cfg: dict, *names, default=None) -> int:
    """A positive integer size of config.json (the first of ``names`` that is set), else a CrossdiffError
    naming the field and its value."""
    value = _get(cfg, *names, default=default)
    name = next((n for n in names if cfg.get(n) is not None), names[0])
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        n = int(value)
    except (TypeError, ValueError):
        raise CrossdiffError(f"{name!r} is {value!r}: not a positive integer") from None
    if n <= 0:
        raise CrossdiffError(f"{name!r} is {value!r}: not a positive integer")
    return n


def shape(cfg: dict) -> dict:
    """The sizes that matter, from a config.json dict (text_config of multimodal configs). A size
    missing or not a positive integer is a CrossdiffError naming the field."""
    if isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]
    h = _size(cfg, "hidden_size", "n_embd", "d_model")
    heads = _size(cfg, "num_attention_heads", "n_head")
    return {
        "hidden": h,
        "layers": _size(cfg, "num_hidden_layers", "n_layer"),
        "heads": heads,
        "kv_heads": _size(cfg, "num_key_value_heads", default=heads),
        "head_dim": _size(cfg, "head_dim") if cfg.get("head_dim") else h // heads,
        "intermediate": _size(cfg, "intermediate_size", "n_inner", default=4 * h),
        "vocab": _size(cfg, "vocab_size"),
        "tied": bool(cfg.get("tie_word_embeddings", False)),
        "qkv_bias": bool(cfg.get("attention_bias", cfg.get("model_type") in ("qwen2",))),
    }


def layer_params(sh: dict) -> int:
    h, d, q, kv, i = sh["hidden"], sh["head_dim"], sh["heads"], sh["kv_heads"], sh["intermediate"]
    attn = h * q * d + 2 * h * kv * d + q * d * h + ((q * d + 2 * kv * d) if sh["qkv_bias"] else 0)
    return attn + 3 * h * i + 2 * h


def param_count(cfg: dict) -> int:
    sh = shape(cfg)
    emb = sh["vocab"] * sh["hidden"]
    return emb * (1 if sh["tied"] else 2) + sh["hidden"] + sh["layers"] * layer_params(sh)


NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # NF4 + double-quantised block constants


def lora_param_count(cfg: dict, r: int = 16) -> int:
    """Adapter parameters of LoRA rank ``r`` on every linear of every decoder layer (``all-linear``)."""
    sh = shape(cfg)
    h, d, q, kv, i = sh["hidden"], sh["head_dim"], sh["heads"], sh["kv_heads"], sh["intermediate"]
    dims = [(h, q * d), (h, kv * d), (h, kv * d), (q * d, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
    return sh["layers"] * sum(r * (a + b) for a, b in dims)


def quantized_bytes_per_weight(quantization: str | None, cfg: dict) -> float:
    """Bytes per decoder-layer weight of a quantised base (NF4 or LLM.int8 with its fp32 row scales)."""
    return 1 + 4 / shape(cfg)["hidden"] if quantization == "int8" else NF4_BYTES


def qlora_state_bytes(cfg: dict, r: int = 16, quantization: str = "nf4") -> float:
    """Weights + adapter training state of a QLoRA fine-tune (bytes): NF4 layers, bf16 rest, fp32 adapters + AdamW."""
    sh = shape(cfg)
    p = param_count(cfg)
    quantized = sh["layers"] * (layer_params(sh) - 2 * sh["hidden"])  # the linears; norms stay bf16
    return quantized * quantized_bytes_per_weight(quantization, cfg) + (p - quantized) * 2 + 16 * lora_param_count(cfg, r)


def plan(cfg: dict, *, gpus: int = 1, batch: int = 1, seq: int = 4096, master: str = "fp32",
         optimizer: str = "adamw_torch", checkpointing: bool = True, liger: bool = False, lora: bool = False,
         quantization: str | None = None, lora_r: int = 16, shard_over: int | None = None) -> dict:
    """Peak memory per GPU (bytes, with a breakdown) of one full fine-tune on ``gpus`` ranks whose sharded
    state is split over ``shard_over`` of them (default all; hybrid sharding: one node's)."""
    sh = shape(cfg)
    p = param_count(cfg)
    ranks = max(1, int(gpus))
    n = ranks if shard_over is None else max(1, min(ranks, int(shard_over)))
    eight_bit = "8bit" in optimizer
    if quantization in ("nf4", "int8"):  # QLoRA: one process, the whole 4-bit (8-bit) model on its GPU
        state = qlora_state_bytes(cfg, lora_r, quantization)
        compute = 0.0
    elif lora:  # frozen bf16 base + small adapters: weights only (adapter states are negligible)
        state = 2 * p
        compute = 0.0
    elif master == "bf16":
        state = (2 + 2 + (2 if eight_bit else 4)) * p / n
        compute = 0.0
    else:
        state = (4 + 4 + (2 if eight_bit else 8)) * p / n
        root = sh["vocab"] * sh["hidden"] * (1 if sh["tied"] else 2) + sh["hidden"]
        # one GPU: autocast's bf16 weight copies; FSDP2: two decoder layers in flight + the root unit
        # gathered in bf16 with its bf16 gradient
        compute = 2 * p if ranks == 1 else 2 * 2 * layer_params(sh) + (2 + 2) * root
    h, L, i, kvd = sh["hidden"], sh["layers"], sh["intermediate"], sh["kv_heads"] * sh["head_dim"]
    tokens = batch * seq
    per_layer_full = tokens * (18 * h + 4 * i + 4 * kvd) * 2
    acts = (tokens * h * 2 * L + per_layer_full) if checkpointing else per_layer_full * L
    logits = min(tokens, TOKEN_TILE) * min(sh["vocab"], VOCAB_TILE) * (2 + 4)  # TRL's chunked LM head; liger: no change
    total = (state + compute + acts + logits) * FRAGMENTATION + CONTEXT_BYTES
    return {
        "params": p,
        "gpus": ranks,
        "shard_over": n,
        "weights_grads_optimizer_gb": state / GB,
        "compute_copy_gb": compute / GB,
        "activations_gb": acts / GB,
        "logits_gb": logits / GB,
        "total_gb": total / GB,
    }


def host_plan(cfg: dict, *, ranks: int = 1, rank0_loading: bool = False, lora: bool = False) -> dict:
    """Peak host RAM (bytes) of one fine-tuning job of ``ranks`` processes (see the module docstring)."""
    p = param_count(cfg)
    n = max(1, int(ranks))
    per_load = (2 if lora else 4) * p * LOAD_FACTOR
    loaders = 1 if (rank0_loading and n > 1) else n
    total = loaders * per_load + n * RANK_HOST_BYTES
    return {"params": p, "ranks": n, "loaders": loaders, "host_gb": total / GB,
            "mem_mb": int(-(-total // 1e6)), "rank0_loading": loaders == 1 and n > 1}


def read_config(model_ref, model_dir=None) -> dict | None:
    """config.json of a local directory, or of a hub id from the cache (or the hub: a few KB).
    None when it cannot be had (offline and not cached); a broken one (not JSON, a size missing or
    not a number) is a CrossdiffError naming the model and the file."""
    for d in (model_dir, model_ref):
        if d is not None and (Path(str(d)) / "config.json").is_file():
            return load_config_file(model_ref, Path(str(d)) / "config.json")
    if model_ref is None or Path(str(model_ref)).exists():
        return None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        path = try_to_load_from_cache(str(model_ref), "config.json")
        if not isinstance(path, str):
            path = hf_hub_download(str(model_ref), "config.json")
    except Exception:  # offline, gated, unknown: the check happens again when the job starts
        return None
    return load_config_file(model_ref, Path(path))


def config_problem(model_ref, cfg, where) -> str | None:
    """None when ``cfg`` (the parsed config.json at ``where``) has every size the plan needs; else
    one line naming the model, the file and the field."""
    if not isinstance(cfg, dict):
        return f"model {model_ref}: {where} holds {type(cfg).__name__}, expected a JSON object (the model's config.json)"
    try:
        shape(cfg)
    except CrossdiffError as exc:
        return f"model {model_ref}: {where}: {exc}"
    return None


def load_config_file(model_ref, path: Path, hint: str = "re-download or rebuild the model") -> dict:
    """The parsed, checked config.json at ``path``: a CrossdiffError naming the model and the file when it
    is not JSON (truncated, not UTF-8) or lacks a size (and which)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CrossdiffError(f"model {model_ref}: {path} is not readable JSON ({exc}); expected the model's "
                             f"config.json ({hint})") from None
    msg = config_problem(model_ref, cfg, path)
    if msg:
        raise CrossdiffError(f"{msg} ({hint})")
    return cfg


def settings_plan(cfg: dict, s: dict, gpus: int, on_gpu: bool = True, nodes: int = 1) -> dict:
    """plan() for resolved finetune settings (crossdiff.finetune.settings) on ``gpus`` ranks in all, spread
    over ``nodes`` nodes (``sharding: hybrid`` then shards within a node)."""
    from crossdiff.finetune.settings import shard_size

    ckpt = s.get("gradient_checkpointing", "auto") in (True, "auto") if on_gpu else False
    shard = shard_size({"sharding": s.get("sharding", "fsdp")}, max(1, int(gpus)), nodes)
    return plan(
        cfg, gpus=gpus, batch=s.get("per_device_train_batch_size", 8), seq=s.get("max_length", 1024),
        master=s.get("master_weights", "fp32"), optimizer=s.get("optim", "adamw_torch"), checkpointing=ckpt,
        liger=bool(s.get("use_liger_kernel")), lora=bool(s.get("lora")),
        quantization=s.get("quantization"), lora_r=int((s.get("lora") or {}).get("r", 16)), shard_over=shard,
    )


def fit_message(model, est: dict, gpus: int, gpu_mem_gb: float, replan=None, nodes: int = 1,
                replan_nodes=None, first_hints=()) -> str | None:
    """None when the plan fits ``gpus`` GPUs of ``gpu_mem_gb``; else what does not fit and what to change.
    ``replan(g)``: the plan on g GPUs; more GPUs are suggested only when that plan fits. ``nodes``: the job's
    nodes (``gpus`` is then GPUs per node); ``replan_nodes(k)``: the plan on k nodes, suggested when it fits."""
    if est["total_gb"] <= gpu_mem_gb:
        return None
    nodes = max(1, int(nodes or 1))
    more = [g for g in (2, 4, 8, 16) if g > gpus]
    if replan is None:  # from the estimate alone (no config to re-plan with): suggest g GPUs only when the
        # sharded state takes at most 60% of a GPU, leaving room for activations, logits and FSDP's
        # gathered units, which the estimate cannot re-derive
        def replan(g):
            return {"total_gb": est["weights_grads_optimizer_gb"] * est.get("shard_over", est["gpus"]) / g * FRAGMENTATION / 0.6}
    hint_gpus = next((g for g in more if replan(g)["total_gb"] <= gpu_mem_gb), None)
    hint_nodes = None
    if replan_nodes is not None:
        hint_nodes = next((k for k in (2, 4, 8, 16, 32, 64) if k > nodes and replan_nodes(k)["total_gb"] <= gpu_mem_gb), None)
    hints = list(first_hints)
    if hint_gpus:
        hints.append(f"give it more GPUs (models[].resources.gpu: {hint_gpus})")
    elif more and not hint_nodes and not first_hints:
        hints.append(f"more GPUs alone do not help (not even {more[-1]}: activations and logits stay per GPU)")
    if hint_nodes:
        hints.append(f"spread it over more nodes (models[].resources.nodes: {hint_nodes} with gpu: {gpus}; SLURM only)")
    hints.append("lower finetune.per_device_train_batch_size (raise global_batch_size's accumulation) or max_length")
    hints.append("turn on finetune.gradient_checkpointing")
    hints.append("or set models[].resources.gpu_mem_gb to your GPUs' real memory")
    return (
        f"model {model}: the fine-tune needs about {est['total_gb']:.0f} GB per GPU on "
        f"{f'{nodes} nodes x ' if nodes > 1 else ''}{gpus} GPU(s) "
        f"({est['params'] / 1e9:.2f}B parameters: weights+gradients+optimizer {est['weights_grads_optimizer_gb']:.0f} GB, "
        f"activations {est['activations_gb']:.0f} GB, logits {est['logits_gb']:.0f} GB per GPU) but a GPU has "
        f"{gpu_mem_gb:g} GB (resources gpu_mem_gb). To fit: " + "; ".join(hints)
    )


def job_gpu_memory_gb(s: dict) -> float | None:
    """GB of the job's first GPU (CROSSDIFF_GPU_MEM_GB or the device's own memory); None on a CPU job."""
    import os

    try:
        import torch

        if not torch.cuda.is_available() or s.get("device") == "cpu":
            return None
        return float(os.environ.get("CROSSDIFF_GPU_MEM_GB") or torch.cuda.get_device_properties(0).total_memory / GB)
    except Exception:
        return None


def check_before_training(model_ref, model_dir, s: dict, n_processes: int, nodes: int = 1) -> None:
    """At the start of a job on GPUs: stop at once when the plan cannot fit (CROSSDIFF_GPU_MEM_GB or the
    device's own memory). ``nodes``: the nodes the ``n_processes`` ranks span."""
    mem = job_gpu_memory_gb(s)
    if mem is None:
        return
    cfg = read_config(model_ref, model_dir)
    if cfg is None:
        return
    if nodes > 1:
        per_node = max(1, n_processes // nodes)
        msg = fit_message(model_ref, settings_plan(cfg, s, n_processes, nodes=nodes), per_node, mem, nodes=nodes,
                          replan_nodes=lambda k: settings_plan(cfg, s, k * per_node, nodes=k))
    else:
        msg = fit_message(model_ref, settings_plan(cfg, s, n_processes), n_processes, mem,
                          replan=lambda g: settings_plan(cfg, s, g))
    if msg:
        raise CrossdiffError(msg)


def format_table(rows: list[tuple[str, dict]]) -> str:
    out = ["| model | params | GPUs | weights+grads+AdamW / GPU | activations | logits | total / GPU |", "|---|---|---|---|---|---|---|"]
    for name, e in rows:
        out.append(
            f"| {name} | {e['params'] / 1e9:.2f}B | {e['gpus']} | {e['weights_grads_optimizer_gb']:.1f} GB | "
            f"{e['activations_gb']:.1f} GB | {e['logits_gb']:.1f} GB | {e['total_gb']:.1f} GB |"
        )
    return "\n".join(out)
