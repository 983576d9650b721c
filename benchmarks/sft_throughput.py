"""Full fine-tuning throughput, MFU and peak memory of random-weight models of the paper's shapes.

No download: the models are built from their published config values (Qwen2.5-1.5B / 7B) with random
weights. Variants (each a few optimizer steps of AdamW on random tokens, after warm-up steps):

- ``pure-bf16``: parameters, gradients and AdamW state in bf16 (the old default; refused by the
  workflow unless allow_pure_bf16),
- ``fp32-master``: fp32 parameters and AdamW state, bf16 autocast compute (the workflow's default on
  one GPU),
- ``fsdp``: FSDP2 FULL_SHARD over the ranks of ``torchrun --nproc_per_node N`` (bf16 param dtype,
  fp32 reduce, fp32 sharded master: the workflow's default for ``gpu: N``),
- ``+liger`` (Liger kernels, if liger-kernel is installed) and ``+padding-free`` (packed sequences
  with per-document positions and flash-attention-2, if flash-attn is installed) on top of the
  fp32-master / fsdp variants.

A kernel-level benchmark (a hand-written training loop, the HF full-logits loss), NOT the workflow's path:
TRL 1.16 scores through its own chunked LM head at completion positions and turns Liger's fused linear
cross-entropy off (the ``+liger`` variant here keeps it on). The workflow's own numbers (TRL SFTTrainer,
FSDP2 with fp32 gradient reduce-scatter, peak vs memory plan) come from ``benchmarks/gpu_check.py``.

MFU = 6 x parameters x tokens/s / peak dense bf16 FLOP/s of the GPU (``--peak-tflops``, default
from the device name: H100/H200 SXM 989, A100 312; attention FLOPs are not counted, so MFU is
slightly understated at long sequences). Peak memory: torch.cuda.max_memory_allocated (GPU) or the
process's max RSS (CPU).

    python benchmarks/sft_throughput.py --shape qwen2.5-1.5b --seq 4096            # one GPU
    torchrun --nproc_per_node 8 benchmarks/sft_throughput.py --shape qwen2.5-7b --variants fsdp
    python benchmarks/sft_throughput.py --smoke                                     # CPU, tiny shape
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

SHAPES = {  # published config.json values
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=128, vocab_size=512, tie_word_embeddings=True),
}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def build(shape: str, attn: str | None, liger: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2

        apply_liger_kernel_to_qwen2()
    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, use_cache=False)
    if attn:
        cfg._attn_implementation = attn
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def run_variant(name: str, a, device: str) -> dict:
    import torch

    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if dist else 1
    liger, padfree = "+liger" in name, "+padding-free" in name
    base = name.split("+")[0]
    if base == "fsdp" and not dist:
        return {"variant": name, "skipped": "needs torchrun with >= 2 processes"}
    if liger:
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            return {"variant": name, "skipped": "liger-kernel not installed"}
    if padfree:
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return {"variant": name, "skipped": "flash-attn not installed"}
    on_gpu = device.startswith("cuda")
    model = build(a.shape, "flash_attention_2" if padfree else ("sdpa" if on_gpu else None), liger)
    n_params = sum(p.numel() for p in model.parameters())
    if base == "pure-bf16":
        model = model.to(device=device, dtype=torch.bfloat16)
    else:
        model = model.to(device)
    if a.checkpointing:
        model.gradient_checkpointing_enable()
    if base == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-6, betas=(0.9, 0.99), fused=on_gpu)
    vocab = SHAPES[a.shape]["vocab_size"]
    ids = torch.randint(0, vocab, (a.batch, a.seq), device=device)
    kwargs = {}
    if padfree:  # one row of batch x seq tokens made of documents of seq/4 tokens each
        ids = ids.reshape(1, -1)
        kwargs["position_ids"] = torch.arange(a.seq // 4, device=device).repeat(a.batch * 4).reshape(1, -1)
    autocast = base == "fp32-master" and on_gpu
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids, **kwargs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens_per_s_gpu = a.batch * a.seq * a.steps / dt
    dev_name = torch.cuda.get_device_name() if on_gpu else "cpu"
    peak = peak_tflops(dev_name, a.peak_tflops)
    mfu = 6 * n_params * tokens_per_s_gpu / (peak * 1e12) if peak else None
    mem = torch.cuda.max_memory_allocated() / 1e9 if on_gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out = {"variant": name, "shape": a.shape, "params": n_params, "gpus": world, "seq": a.seq, "batch": a.batch,
           "checkpointing": a.checkpointing, "tokens_per_s_per_gpu": round(tokens_per_s_gpu, 1),
           "mfu": round(mfu, 4) if mfu is not None else None, "peak_tflops": peak,
           "peak_mem_gb": round(mem, 2), "device": dev_name}
    del model, opt
    if on_gpu:
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1, help="sequences per GPU per step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="pure-bf16,fp32-master,fp32-master+liger,fp32-master+padding-free,fsdp,fsdp+liger")
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny shape, seq 64, 2 steps")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    import torch

    if a.smoke:
        a.shape, a.seq, a.batch, a.steps, a.warmup, a.checkpointing = "tiny", 64, 2, 2, 1, False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "LOCAL_RANK" in os.environ:
        backend = "nccl" if device == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rows = []
    for v in a.variants.split(","):
        if device == "cpu" and "liger" in v:
            rows.append({"variant": v, "skipped": "Liger needs a GPU"})
            continue
        rows.append(run_variant(v.strip(), a, device))
    if int(os.environ.get("RANK", "0")) == 0:
        cols = ["variant", "params", "gpus", "seq", "batch", "tokens_per_s_per_gpu", "mfu", "peak_mem_gb", "device"]
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            if "skipped" in r:
                print(f"| {r['variant']} | skipped: {r['skipped']} |")
            else:
                print("| " + " | ".join(str(r[c]) for c in cols) + " |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
