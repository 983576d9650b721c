"""FSDP2 on 2 gloo CPU ranks through the real launch path (issue 18): `crossdiff finetune` -> `accelerate
launch --multi_gpu` -> ranks with the project's own FSDP2 settings. The only test-side switch: the ranks get
ACCELERATE_USE_FSDP=true and tests/fsdp_cpu/sitecustomize.py, which makes accelerate keep its FSDP plugin on
CPU. Covers training, sharded (DCP) checkpoints, kill and exact resume, rank-0 loading and the gathered save."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 200,
         "warmup_steps": 5, "batch_size": 32, "eval_items": 0}


def _tiny(root):
    import polars as pl

    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model
    from crossdiff.study.sft_data import make_sft_data

    items = generate_items(40, seed=3)
    items.write_parquet(root / "items.parquet")
    order = items["n_ops"].rank("ordinal").cast(pl.Int64) - 1
    pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64), "bin": order * 2 // 40}).write_parquet(root / "bins.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    make_sft_data(root / "items.parquet", root / "bins.parquet", 0, root / "bin0.jsonl")


def test_fsdp2_on_cpu_ranks_trains_checkpoints_resumes_and_saves(tmp_path):
    _tiny(tmp_path)
    out, work = tmp_path / "ft", tmp_path / "ft.work"
    settings = {"num_processes": 2, "sharding": "fsdp", "max_steps": 12, "per_device_train_batch_size": 2,
                "learning_rate": 1e-3, "save_steps": 4}
    cmd = [sys.executable, "-m", "crossdiff.cli", "finetune", "--model", str(tmp_path / "base"),
           "--train", str(tmp_path / "bin0.jsonl"), "--output", str(out), "--settings", json.dumps(settings)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests/fsdp_cpu'}{os.pathsep}{REPO / 'workflow'}",
           "ACCELERATE_USE_FSDP": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 300
        while not list(work.glob("checkpoint-*/crossdiff_checkpoint.json")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        assert list(work.glob("checkpoint-*/crossdiff_checkpoint.json")), proc.communicate(timeout=60)[0][-4000:]
        proc.send_signal(signal.SIGTERM)
        first = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and not out.exists()
    ckpt = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    assert list(ckpt.rglob("*.distcp")), sorted(p.name for p in ckpt.rglob("*"))  # sharded (DCP) model/optimizer state
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-4000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["engine"] == "fsdp2" and metrics["world_size"] == 2 and metrics["rank0_loading"] is True
    assert metrics["resumed_from_step"] >= 4 and metrics["global_step"] == 12
    assert metrics["share_changed"] > 0.9 and metrics["gradient_reduce_dtype"] == "fp32"
    assert "accelerate launch --multi_gpu --num_processes 2" in first
    # transformers saw FSDP rank-0 loading in both ranks (rank 1 builds on the meta device)
    assert "rank 0: rank-0 loading on" in log and "rank 1: rank-0 loading on" in log
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)  # the gathered save is a plain HF model
    assert sum(p.numel() for p in model.parameters()) == json.loads((tmp_path / "base/build_info.json").read_text())["parameters"]
