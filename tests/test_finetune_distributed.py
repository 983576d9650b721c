"""A 2-rank fine-tune on CPU through the rule: `crossdiff finetune` starts the ranks with `accelerate
launch --multi_gpu --num_processes 2` (the GPU launch path); on CPU accelerate runs them as DDP over
gloo (it turns FSDP on only on accelerators, see crossdiff/finetune/__init__.py), on GPUs the same
command trains with FSDP2. Checks: one plain model saved, the loss curve equals a 1-process run with
the same global batch, a killed 2-rank job resumes from its checkpoint; and the FSDP arguments."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, make_workdir, snakemake

pytestmark = pytest.mark.slow

STUDY = """
datasets:
  tiny:
    items: {source: synthetic, n_items: 40, max_ops: 2, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 30, seed: 2}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 2}
models:
  - id: tiny-model
    build: tiny
    warmup_dataset: tiny
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 200, warmup_steps: 10, eval_items: 0}
finetune: {num_processes: 2, max_steps: 5, per_device_train_batch_size: 2, learning_rate: 1.0e-3, save_steps: 2}
resources:
  finetune: {gpu: 0, threads: 1}
  evaluate: {gpu: 0, threads: 1}
"""
TARGET = "results/finetune/tiny-model/tiny/bin0"


def test_two_ranks_through_the_rule_match_one_process(tmp_path):
    wf = make_workdir(tmp_path / "wf", STUDY)
    snakemake(wf, "-j1", TARGET, timeout=600)
    out = wf / TARGET
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["engine"] == "ddp" and metrics["global_batch_size"] == 4
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]  # one plain model
    assert not (wf / f"{TARGET}.work").exists()
    log = (wf / "logs/finetune/tiny-model/tiny/bin0.log").read_text()
    assert "accelerate launch --multi_gpu --num_processes 2" in log

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # loads as a plain HF model
    # one process, the same global batch (4 = 2 per rank x 2 ranks); bin 0 has 20 examples, so no
    # step has a partial batch (accelerate would pad a rank's short batch with repeated examples)
    from crossdiff.finetune.run import finetune

    settings = {"num_processes": 1, "max_steps": 5, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_steps": 2}
    single = finetune(wf / "results/models/tiny-model", wf / "results/sft/tiny/bin0.jsonl", tmp_path / "single",
                      settings=settings, prompt=metrics["prompt"])
    two = [p["loss"] for p in metrics["loss_curve"]]
    one = [p["loss"] for p in single["loss_curve"]]
    assert len(two) == len(one) == 5 and metrics["n_examples"] == 20
    # same examples in each step (accelerate hands rank r the r-th half of the step's batch) and the
    # loss normalized by the tokens of all ranks (average_tokens_across_devices): only the order of
    # the float sums differs (fp32)
    assert two == pytest.approx(one, rel=1e-4)
    print(f"2 ranks vs 1 process: max relative loss difference {max(abs(a - b) / b for a, b in zip(two, one)):.2e}")


def test_killed_two_rank_job_resumes_from_its_checkpoint(tmp_path):
    wf = make_workdir(tmp_path / "wf", STUDY)
    snakemake(wf, "-j1", "results/sft/tiny/bin0.jsonl", "results/models/tiny-model", timeout=600)
    out, work = tmp_path / "ft", tmp_path / "ft.work"
    settings = {"num_processes": 2, "max_steps": 30, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "save_steps": 4}
    cmd = [sys.executable, "-m", "crossdiff.cli", "finetune", "--model", str(wf / "results/models/tiny-model"),
           "--train", str(wf / "results/sft/tiny/bin0.jsonl"), "--output", str(out), "--settings", json.dumps(settings)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 300
        while not list(work.glob("checkpoint-*/crossdiff_checkpoint.json")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        assert list(work.glob("checkpoint-*/crossdiff_checkpoint.json")), proc.communicate(timeout=60)[0][-3000:]
        proc.send_signal(signal.SIGTERM)  # what scancel / snakemake send first
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and not out.exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"] and metrics["resumed_from_step"] >= 4 and metrics["global_step"] == 30
    assert metrics["world_size"] == 2 and metrics["share_changed"] > 0.99


def test_fsdp_arguments_for_gpus():
    """What the ranks give TrainingArguments on GPUs (FSDP itself needs CUDA: accelerate runs CPU ranks as DDP)."""
    from transformers import TrainingArguments

    from crossdiff.finetune.settings import resolve_settings
    from crossdiff.finetune.train import _fsdp_args, engine_for

    s = resolve_settings({})
    assert engine_for(s, 4, on_gpu=True) == "fsdp2" and engine_for(s, 2, on_gpu=False) == "ddp"
    assert engine_for(s, 1, on_gpu=True) == "single"
    assert engine_for(resolve_settings({"sharding": "ddp"}), 4, on_gpu=True) == "ddp"
    args = _fsdp_args(s, grad_ckpt=True)
    assert args["fsdp"] == "full_shard auto_wrap"
    cfg = args["fsdp_config"]
    assert cfg["version"] == 2 and cfg["reshard_after_forward"] is True and cfg["cpu_ram_efficient_loading"] is True
    assert cfg["state_dict_type"] == "SHARDED_STATE_DICT" and cfg["activation_checkpointing"] is True
    # transformers accepts them and builds accelerate's FSDP2 plugin arguments from them
    ta = TrainingArguments(output_dir="/tmp/unused-fsdp-check", use_cpu=True, report_to="none", **args)
    assert ta.fsdp_plugin_args["fsdp_version"] == 2 and ta.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    assert ta.fsdp_plugin_args["cpu_ram_efficient_loading"] is True
