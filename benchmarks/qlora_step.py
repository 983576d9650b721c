"""A real QLoRA fine-tune through crossdiff's own path (finetune.quantization: nf4), on a GPU.

Builds the tiny local base model (crossdiff.models.tiny, its own tokenizer; no download), writes a small
training file, and runs ``crossdiff.finetune.run.finetune`` with ``{"quantization": "nf4", "lora": ...}``
for a few optimizer steps: bitsandbytes loads the base in NF4 (double quantisation, bf16 compute), the
LoRA adapters train, and the fine-tune is saved unmerged (crossdiff.finetune.qlora: ``base/`` the dequantised
base, ``adapter/`` the LoRA adapter, ``qlora.json``). Checks and prints: ``base/`` is a plain bf16 checkpoint
(no quantization_config, no LoRA keys) whose weights are the NF4 round trip of the base's (not the base's
own); the model evaluation loads (base + adapter through peft, bf16 as on a GPU) differs from ``base/`` alone,
i.e. the adapter reaches evaluation; the share of adapted weights a bf16 merge would have kept; the loss
curve; peak GPU memory (torch.cuda.max_memory_allocated). Without bitsandbytes or a GPU it prints why and exits
0 (skipped).

    python benchmarks/qlora_step.py [--steps 4] [--hidden 256 --layers 4] [--quantization int8]

``--quantization int8``: Hase et al.'s 8-bit base with their recipe (``preset: hase2024``, 8-bit Adam) the same way;
``base/`` then holds the row-wise dequantised int8 weights (crossdiff.finetune.qlora.INT8_NOTE).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--quantization", choices=("nf4", "int8"), default="nf4")
    args = ap.parse_args()

    from crossdiff.finetune.qlora import bitsandbytes_missing

    why = bitsandbytes_missing()
    if why:
        print(f"SKIPPED: {why}")
        return 0
    import torch
    from transformers import AutoModelForCausalLM

    from crossdiff.finetune.run import finetune
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model
    from crossdiff.prompts.format import PromptFormat

    with tempfile.TemporaryDirectory(prefix="crossdiff-qlora-") as tmp:
        tmp = Path(tmp)
        items = generate_items(200, seed=1)
        items.write_parquet(tmp / "items.parquet")
        build_base_model(tmp / "base", tmp / "items.parquet",
                         {"hidden_size": args.hidden, "num_layers": args.layers, "num_heads": 4,
                          "intermediate_size": 4 * args.hidden, "warmup_steps": 20, "eval_items": 0})
        fmt = PromptFormat.from_config({})
        with open(tmp / "train.jsonl", "w") as f:
            for it in items.head(64).to_dicts():
                f.write(json.dumps({**fmt.sft_record(it), "bin": 0}) + "\n")
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        metrics = finetune(tmp / "base", tmp / "train.jsonl", tmp / "out",
                           settings={"quantization": args.quantization, "lora": {"r": 8, "alpha": 16},
                                     **({"preset": "hase2024"} if args.quantization == "int8" else {}),
                                     "max_steps": args.steps, "learning_rate": 1e-3,
                                     "per_device_train_batch_size": 8, "save_steps": 1000})
        wall = time.time() - t0
        peak = torch.cuda.max_memory_allocated() / 1e9
        from crossdiff.finetune.qlora import eval_paths, load_for_evaluation

        base_dir, adapter_dir, manifest = eval_paths(tmp / "out")
        assert adapter_dir is not None, "a QLoRA fine-tune is saved unmerged (qlora.json, base/, adapter/)"
        cfg = json.loads((Path(base_dir) / "config.json").read_text())
        assert "quantization_config" not in cfg, "base/ must be a plain checkpoint"
        plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16).to("cuda")
        original = AutoModelForCausalLM.from_pretrained(tmp / "base", dtype=torch.bfloat16)
        assert not any("lora" in k or "base_layer" in k for k in plain.state_dict())
        w, w0 = plain.state_dict(), original.state_dict()
        requantised = sum(int(not torch.equal(w[k].cpu(), w0[k])) for k in w if k in w0)
        evaluated = load_for_evaluation(tmp / "out", torch.bfloat16).to("cuda")
        ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]], device="cuda")
        with torch.no_grad():
            effect = float((evaluated(ids).logits.float() - plain(ids).logits.float()).abs().max())
        print(json.dumps({"quantization": manifest.get("quantization"), "optim": metrics["settings"]["optim"],
                          "steps": metrics["global_step"], "loss_curve": [c["loss"] for c in metrics["loss_curve"]],
                          "base_dtype": str(next(plain.parameters()).dtype), "base_tensors_nf4_rounded": requantised,
                          "tensors": len(w), "adapter_effect_max_abs_logit": effect,
                          "share_changed_fp32": manifest["share_changed_fp32"],
                          "share_changed_bf16_merge": manifest["share_changed_bf16_merge"],
                          "peak_gpu_gb": round(peak, 3), "wall_s": round(wall, 1)}, indent=1))
        assert requantised > 0, f"base/ should hold the dequantised {args.quantization} weights"
        assert effect > 0, "the adapter does not reach the evaluated model"
    return 0


if __name__ == "__main__":
    sys.exit(main())
