"""The GPU acceptance script's CPU smoke mode (issue 18), so it cannot rot: it runs the product's fine-tune
(single, and FSDP2 at world size 1 through torchrun with the test's CPU switch) and lm-eval's HFLM on locally built random Qwen2/Llama models and writes its table."""

import json
import subprocess
import sys

from conftest import REPO


def test_gpu_check_smoke_mode(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["check"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["rows"]}
    assert rows["tiny-qwen2 single"]["ok"] and rows["tiny-llama single"]["ok"]
    assert rows["tiny-llama fsdp2 world 1"]["engine"] == "fsdp2 x1"  # torchrun + ACCELERATE_USE_FSDP
    assert all(rows[k]["share_changed"] > 0.9 and rows[k]["tokens_per_s"] > 0 for k in rows if k.startswith("tiny") and "lora" not in k and rows[k]["ok"])
    lora = rows["tiny-llama lora"]
    assert lora["ok"] and 0 < lora["share_changed"] < 1  # merged adapters change the linear layers only
    qlora = rows["tiny-llama qlora nf4"]
    if qlora["ok"] is None:  # no bitsandbytes or no GPU (CI): skipped, saying why
        assert "bitsandbytes" in qlora["note"] or "CUDA" in qlora["note"]
    else:  # trained, then loaded as evaluation loads it (base/ + adapter/)
        assert qlora["ok"] and rows["qlora eval (hf + peft)"]["ok"]
    assert rows["hf eval tiny-llama"]["ok"] and rows["hf eval tiny-llama"]["items_per_s"] > 0
    assert "| tiny-qwen2 single | True |" in (tmp_path / "gpu_check.md").read_text()
    grpo = rows["grpo vllm colocate tiny-llama"]  # issue 29: GPU and vLLM only, skipped with the reason
    assert grpo["ok"] is None and "CUDA GPU and vllm" in grpo["note"]
