"""GPU acceptance check (issue 18): everything that needs a GPU in one command, no network.

    python benchmarks/gpu_check.py --out $OUT            # on one GPU (H200: under 8 minutes)
    python benchmarks/gpu_check.py --smoke --out DIR     # CPU smoke mode (CI: tests/test_gpu_check.py)

Models are random-initialised Qwen2 and Llama architectures built locally (the hub is unreachable on compute
nodes): tiny, and on a GPU ~0.5B (Qwen2) and ~1.5B (Llama). Each configuration fine-tunes through the
product's own path (crossdiff.finetune.run.finetune: single process; FSDP2 at world size 1 through torchrun
with ACCELERATE_USE_FSDP; with >= 2 GPUs FSDP2 on all of them through `accelerate launch`), with Liger on
(when liger-kernel imports),
padding-free (when flash-attn imports), LoRA on a bf16 base, and QLoRA (``quantization: nf4``, when
bitsandbytes imports) followed by the evaluation's own loading of its unmerged save (base/ + adapter/ through
crossdiff.evaluate.run.load_lm: lm-eval's HFLM with peft). Each row: share of parameters changed, peak GPU memory vs the memory plan, SFT
tokens/s and MFU (6 x params x tokens/s / peak bf16 FLOP/s), hf generation items/s, vLLM items/s when
importable, and a GRPO row (crossdiff.finetune.grpo with vLLM colocated, ~0.5B model, a few steps: generations/s in
items_per_s, seconds per step, peak memory vs the GRPO memory plan; skipped in smoke mode, saying why). Results: ``$OUT/gpu_check.md`` (a table) and ``$OUT/gpu_check.json``. A failing configuration is a
row with its error; the exit status is 1 when any row failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

H200_BF16_FLOPS = 989e12  # dense bf16 peak, H100/H200 SXM

SIZES = {  # name -> (model_type, hidden, layers, heads, kv_heads, intermediate, vocab)
    "tiny-qwen2": ("qwen2", 64, 2, 4, 2, 128, 512),
    "tiny-llama": ("llama", 64, 2, 4, 2, 128, 512),
    "qwen2-0.5b": ("qwen2", 896, 24, 14, 2, 4864, 151936),
    "llama-1.5b": ("llama", 2048, 16, 32, 8, 8192, 128256),
}


def build_model(name: str, root: Path) -> Path:
    """A random-initialised model + a word-level tokenizer with a chat-free vocabulary, saved locally."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

    kind, h, L, heads, kv, inter, vocab = SIZES[name]
    cls = Qwen2Config if kind == "qwen2" else LlamaConfig
    cfg = cls(vocab_size=vocab, hidden_size=h, num_hidden_layers=L, num_attention_heads=heads, num_key_value_heads=kv,
              intermediate_size=inter, max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    out = root / name
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    words = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(
        ["Question:", "Answer:", "what", "is", "plus", "minus", "times"] + [str(d) for d in range(10)])}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>").save_pretrained(out)
    return out


def write_data(path: Path, n: int, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            q = f"Question: what is {' '.join(str(a))} plus {' '.join(str(b))} " + " ".join(str(rng.randint(0, 9)) for _ in range(40))
            fh.write(json.dumps({"item_id": f"i{i}", "prompt": q + " Answer:", "completion": " " + " ".join(str(a + b))}) + "\n")
    return path


def planned_gb(model_dir: Path, s: dict, gpus: int) -> float | None:
    from crossdiff.finetune.memory_plan import settings_plan
    from crossdiff.finetune.settings import resolve_settings

    cfg = json.loads((model_dir / "config.json").read_text())
    return settings_plan(cfg, resolve_settings(s), gpus)["total_gb"]


def _row(label: str, model_dir: Path, s: dict, gpus: int, m: dict, wall: float) -> dict:
    import torch

    from crossdiff.finetune.memory_plan import param_count

    params = param_count(json.loads((model_dir / "config.json").read_text()))
    tps = m["tokens_per_second"] or 0.0
    return {"check": label, "ok": True, "wall_s": round(wall, 1), "engine": f"{m['engine']} x{m['world_size']}",
            "share_changed": m.get("share_changed"), "peak_gb": m.get("peak_gpu_gb"),
            "plan_gb": planned_gb(model_dir, s, max(1, m["world_size"])), "tokens_per_s": round(tps, 1),
            "mfu": round(6 * params * tps / (H200_BF16_FLOPS * max(1, gpus)), 4) if torch.cuda.is_available() else None}


def finetune_row(label: str, model_dir: Path, data: Path, root: Path, s: dict, gpus: int) -> dict:
    """The product's own entry point (crossdiff.finetune.run.finetune; > 1 process: accelerate launch)."""
    import torch

    from crossdiff.finetune.run import finetune

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # rows run in this process one after the other
    t0 = time.time()
    m = finetune(model_dir, data, root / label.replace(" ", "_"), settings=s, prompt={"max_length": None}, gpus=gpus)
    return _row(label, model_dir, s, gpus, m, time.time() - t0)


def fsdp_world1_row(label: str, model_dir: Path, data: Path, root: Path, s: dict, smoke: bool) -> dict:
    """FSDP2 at world size 1 (one GPU): the product's rank (`crossdiff finetune --worker`) started by torchrun
    with ACCELERATE_USE_FSDP (what `accelerate launch --use_fsdp` sets). In smoke mode the ranks also get
    tests/fsdp_cpu (accelerate keeps FSDP on CPU only with it)."""
    import subprocess

    from crossdiff.finetune.launch import free_port

    out, work = root / label.replace(" ", "_"), root / (label.replace(" ", "_") + ".work")
    work.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    path = [str(repo / "workflow")] + ([str(repo / "tests/fsdp_cpu")] if smoke else [])
    env = {**os.environ, "ACCELERATE_USE_FSDP": "true", "PYTHONPATH": os.pathsep.join(path[::-1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port()),
           "-m", "crossdiff.cli", "finetune", "--worker", "--model", str(model_dir), "--train", str(data),
           "--output", str(out), "--work-dir", str(work), "--settings", json.dumps(s), "--prompt", json.dumps({"max_length": None})]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError((proc.stdout + proc.stderr)[-600:])
    return _row(label, model_dir, s, 1, json.loads((out / "train_metrics.json").read_text()), time.time() - t0)


def hf_eval_row(model_dir: Path, n_items: int, smoke: bool) -> dict:
    """lm-eval's HFLM (what `crossdiff evaluate` runs), greedy generate_until, items/s."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=str(model_dir), device=device, dtype="bfloat16" if device == "cuda" else "float32",
              batch_size=8 if smoke else "auto", max_length=1024)
    reqs = [Instance("generate_until", {}, (f"Question: what is {i % 10} plus {i % 7} Answer:",
                                             {"until": ["</s>"], "max_gen_toks": 8 if smoke else 256, "do_sample": False}), i)
            for i in range(n_items)]
    t0 = time.time()
    out = lm.generate_until(reqs)
    wall = time.time() - t0
    return {"check": f"hf eval {model_dir.name}", "ok": len(out) == n_items, "wall_s": round(wall, 1),
            "items_per_s": round(n_items / wall, 2)}


def vllm_row(model_dir: Path, n_items: int) -> dict:
    if find_spec("vllm") is None:
        return {"check": "vllm eval", "ok": None, "note": "vllm not importable: skipped"}
    from vllm import LLM, SamplingParams

    llm = LLM(str(model_dir), dtype="bfloat16", gpu_memory_utilization=0.5, max_model_len=2048)
    t0 = time.time()
    outs = llm.generate([f"Question: what is {i % 10} plus 3 Answer:" for i in range(n_items)], SamplingParams(max_tokens=256, temperature=0))
    wall = time.time() - t0
    return {"check": f"vllm eval {model_dir.name}", "ok": len(outs) == n_items, "wall_s": round(wall, 1), "items_per_s": round(n_items / wall, 2)}


def plan_rows(smoke: bool) -> list[tuple]:
    """(label, model, settings, gpus, requirement) of each fine-tuning check."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    base = {"max_steps": 3 if smoke else 30, "per_device_train_batch_size": 2 if smoke else 4, "learning_rate": 1e-4,
            "save_steps": 1000, "max_length": 256 if smoke else 1024, "warmup_ratio": 0.0}
    names = ["tiny-qwen2", "tiny-llama"] if smoke else ["tiny-qwen2", "qwen2-0.5b", "llama-1.5b"]
    rows = []
    for name in names:
        rows.append((f"{name} single", name, {**base, "num_processes": 1}, max(gpus, 1), None))
    big = names[-1]
    # FSDP2 at world size 1 (torchrun + ACCELERATE_USE_FSDP) and, with >= 2 GPUs, the product's own launch
    rows.append((f"{big} fsdp2 world 1", big, {**base, "num_processes": 1, "sharding": "fsdp"}, 1, "fsdp-world-1"))
    if gpus >= 2:  # (2 CPU ranks: tests/test_finetune_distributed.py)
        rows.append((f"{big} fsdp2 x{gpus}", big, {**base, "num_processes": gpus, "sharding": "fsdp"}, gpus, None))
    rows.append((f"{big} liger", big, {**base, "num_processes": 1, "use_liger_kernel": True}, 1, "liger_kernel"))
    rows.append((f"{big} padding-free", big, {**base, "num_processes": 1, "padding_free": True,
                                              "attn_implementation": "flash_attention_2"}, 1, "flash_attn"))
    # LoRA on a bf16 base (merged before saving), and QLoRA (4-bit NF4 base, saved unmerged: crossdiff.finetune.qlora)
    rows.append((f"{big} lora", big, {**base, "num_processes": 1, "lora": {"r": 8}}, 1, None))
    rows.append((f"{big} qlora nf4", big, {**base, "num_processes": 1, "quantization": "nf4", "lora": {"r": 8}}, 1,
                 "bitsandbytes"))
    return rows


def qlora_eval_row(out: Path, n_items: int) -> dict:
    """A QLoRA fine-tune loaded as evaluation loads it (crossdiff.evaluate.run.load_lm: base/ + adapter/ through
    lm-eval's HFLM with peft), greedy generation; the adapter's effect on the logits (with vs without it)."""
    import torch
    from lm_eval.api.instance import Instance

    from crossdiff.evaluate.run import load_lm, resolve_settings

    lm = load_lm(out, resolve_settings({"batch_size": 8, "max_length": 1024}))
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]], device=lm.model.device)
    with torch.no_grad():
        with_adapter = lm.model(ids).logits.float()
        with lm.model.disable_adapter():
            without = lm.model(ids).logits.float()
    reqs = [Instance("generate_until", {}, (f"Question: what is {i % 10} plus {i % 7} Answer:",
                                             {"until": ["</s>"], "max_gen_toks": 8, "do_sample": False}), i)
            for i in range(n_items)]
    t0 = time.time()
    got = lm.generate_until(reqs)
    manifest = json.loads((out / "qlora.json").read_text())
    return {"check": "qlora eval (hf + peft)", "ok": len(got) == n_items and bool((with_adapter != without).any()),
            "wall_s": round(time.time() - t0, 1), "items_per_s": round(n_items / (time.time() - t0), 2),
            "note": f"adapter effect max|dlogit| {float((with_adapter - without).abs().max()):.3g}; weights changed "
                    f"{manifest['share_changed_fp32']:.1%} (fp32) vs {manifest['share_changed_bf16_merge']:.1%} (bf16 merge)"}


def grpo_row(model_dir: Path, root: Path, smoke: bool) -> dict:
    """GRPO (issue 29) through the product's own path (crossdiff.finetune.grpo.grpo): a few steps on the 0.5B model
    with vLLM colocated on the GPU (TRL's GRPOTrainer, vllm_mode colocate at 0.3 of the GPU), exact-match rewards
    on arithmetic items; generations/s, seconds per step, peak GPU memory (torch's allocator: the policy, and vLLM's
    weights and KV cache where vLLM allocates through torch) vs crossdiff.finetune.grpo_memory's plan."""
    label = f"grpo vllm colocate {model_dir.name}"
    if smoke:
        return {"check": label, "ok": None, "note": "GRPO with vLLM colocate needs a CUDA GPU and vllm: skipped in smoke mode"}
    if find_spec("vllm") is None:
        return {"check": label, "ok": None, "note": "vllm not importable: skipped"}
    import random

    import polars as pl
    import torch

    from crossdiff.finetune.grpo import grpo
    from crossdiff.finetune.grpo_memory import grpo_plan

    rng = random.Random(0)
    rows = []
    for i in range(64):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"item_id": f"g{i}", "question": f"what is {a} plus {b}", "answer": str(a + b)})
    pl.DataFrame(rows).write_parquet(root / "grpo_items.parquet")
    train = root / "grpo_train.jsonl"
    train.write_text("".join(json.dumps({"item_id": r["item_id"], "prompt": "-", "completion": "-"}) + "\n" for r in rows))
    steps = 4
    settings = {"num_generations": 8, "per_device_train_batch_size": 64, "max_completion_length": 128, "max_steps": steps,
                "learning_rate": 1e-6, "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                "save_steps": 1000}
    finetune = {"device": "cuda", "seed": 0}
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    m = grpo(model_dir, train, root / "grpo_items.parquet", root / "grpo_out", settings=settings, finetune=finetune,
             prompt={"template": "Question: {question}\nAnswer:", "target": " {answer}", "max_gen_toks": 128})
    wall = time.time() - t0
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    plan = grpo_plan(json.loads((model_dir / "config.json").read_text()), m["settings"], gpu_mem_gb=gpu_gb,
                     prompt_tokens=m["prompt_tokens_max"])
    return {"check": label, "ok": m["global_step"] == steps, "wall_s": round(wall, 1), "engine": m["generation"],
            "share_changed": m.get("share_changed"), "peak_gb": m.get("peak_gpu_gb"), "plan_gb": round(plan["total_gb"], 1),
            "items_per_s": round(m["generations_per_second"] or 0.0, 2),
            "note": f"{m['wall_seconds'] / steps:.2f} s/step, {m['completions']} generations; plan: policy "
                    f"{plan['policy_gb']:.1f} GB + vLLM share {plan['generation_gb']:.1f} GB; reward "
                    f"{m['reward_first']} -> {m['reward_last']}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--smoke", action="store_true", help="CPU smoke mode: tiny models, a few steps")
    args = ap.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "work"
    root.mkdir(exist_ok=True)
    data = write_data(root / "train.jsonl", 16 if args.smoke else 400)
    built, results = {}, []
    t_start = time.time()
    for label, name, s, gpus, needs in plan_rows(args.smoke):
        if needs == "fsdp-world-1":
            try:
                if name not in built:
                    built[name] = build_model(name, root / "models")
                results.append(fsdp_world1_row(label, built[name], data, root, s, args.smoke))
            except Exception as exc:
                results.append({"check": label, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[-300:]}"})
            continue
        if needs == "bitsandbytes":  # QLoRA: bitsandbytes and a CUDA device, else skipped with the reason
            from crossdiff.finetune.qlora import bitsandbytes_missing

            why = bitsandbytes_missing()
            if why:
                results.append({"check": label, "ok": None, "note": f"{why}: skipped"})
                continue
        elif needs and find_spec(needs) is None:
            results.append({"check": label, "ok": None, "note": f"{needs} not importable: skipped"})
            continue
        if needs and args.smoke and needs != "bitsandbytes":
            results.append({"check": label, "ok": None, "note": "GPU-only: skipped in smoke mode"})
            continue
        try:
            if name not in built:
                built[name] = build_model(name, root / "models")
            results.append(finetune_row(label, built[name], data, root, s, gpus))
            if s.get("quantization"):
                results.append(qlora_eval_row(root / label.replace(" ", "_"), 8 if args.smoke else 64))
        except Exception as exc:  # a row per failure; the others still run
            results.append({"check": label, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            traceback.print_exc()
    eval_model = built.get("tiny-llama" if args.smoke else "qwen2-0.5b") or next(iter(built.values()))
    for fn in (lambda: hf_eval_row(eval_model, 16 if args.smoke else 200, args.smoke),
               lambda: vllm_row(eval_model, 200) if not args.smoke else {"check": "vllm eval", "ok": None, "note": "GPU-only: skipped in smoke mode"}):
        try:
            results.append(fn())
        except Exception as exc:
            results.append({"check": "eval", "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    try:  # GRPO with vLLM colocate on the ~0.5B model (issue 29)
        grpo_model = built.get("qwen2-0.5b") or (build_model("qwen2-0.5b", root / "models") if not args.smoke else eval_model)
        results.append(grpo_row(grpo_model, root, args.smoke))
    except Exception as exc:
        results.append({"check": "grpo vllm colocate", "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        traceback.print_exc()
    cols = ["check", "ok", "wall_s", "engine", "share_changed", "peak_gb", "plan_gb", "tokens_per_s", "mfu", "items_per_s", "note", "error"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        lines.append("| " + " | ".join("" if r.get(c) is None else (f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])) for c in cols) + " |")
    table = "\n".join(lines)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
    (args.out / "gpu_check.md").write_text(f"# gpu_check on {device}, {time.time() - t_start:.0f} s\n\n{table}\n")
    (args.out / "gpu_check.json").write_text(json.dumps({"device": device, "rows": results}, indent=1))
    print(table)
    return 1 if any(r.get("ok") is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
