"""Fine-tuning precision (fp32 master weights, the pure-bf16 guard, the changed share) and resume
safety against real kills (issue 9, issue 13 item 4). One tiny model per module; each fine-tune is a
few steps of a 2-layer model (seconds)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import polars as pl
import pytest

from conftest import REPO
from crossdiff.items.synthetic import generate_items
from crossdiff.errors import CrossdiffError

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 200,
         "warmup_steps": 10, "batch_size": 32, "eval_items": 0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from crossdiff.models.tiny import build_base_model
    from crossdiff.study.sft_data import make_sft_data

    root = tmp_path_factory.mktemp("ftsafe")
    items = generate_items(40, seed=7)
    items.write_parquet(root / "items.parquet")
    order = items["n_ops"].rank("ordinal").cast(pl.Int64) - 1
    pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64), "bin": order * 2 // 40}).write_parquet(
        root / "bins.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    make_sft_data(root / "items.parquet", root / "bins.parquet", 0, root / "bin0.jsonl")
    return {"root": root, "model": root / "base", "train": root / "bin0.jsonl"}


# ------------------------------------------------------------------------------------ precision


def test_default_settings_change_every_parameter_at_paper_lr(env):
    """lr 5e-6 (the paper's), default settings, 5 steps: fp32 master weights move >= 99% of the weights."""
    from crossdiff.finetune.run import finetune

    out = env["root"] / "ft_prec"
    metrics = finetune(env["model"], env["train"], out, settings={"max_steps": 5, "per_device_train_batch_size": 4})
    saved = json.loads((out / "train_metrics.json").read_text())
    assert saved["settings"]["learning_rate"] == 5e-6
    assert saved["param_dtype"] == "float32" and saved["optimizer_state_dtype"] == "float32"
    assert saved["precision"] == "fp32" and saved["save_dtype"] == "fp32"
    assert saved["share_changed"] >= 0.99, saved["share_changed"]
    assert saved["n_compared"] == json.loads((env["model"] / "build_info.json").read_text())["parameters"]
    assert metrics["share_changed"] == saved["share_changed"]
    assert saved["train_loss"] == pytest.approx(sum(p["loss"] for p in saved["loss_curve"]) / 5)


def test_pure_bf16_is_refused_unless_opted_in():
    from crossdiff.finetune.settings import precision_plan, resolve_settings

    with pytest.raises(CrossdiffError, match="pure-bf16 weights.*allow_pure_bf16: true"):
        resolve_settings({"master_weights": "bf16"})
    s = resolve_settings({"master_weights": "bf16", "allow_pure_bf16": True})
    assert precision_plan(s, on_gpu=True, bf16_supported=True)["mode"] == "pure-bf16"
    # the default on a GPU: bf16 compute, fp32 master, saved in bf16 for evaluation
    d = precision_plan(resolve_settings({}), on_gpu=True, bf16_supported=True)
    assert d == {"master_dtype": "fp32", "compute_bf16": True, "save_dtype": "bf16", "mode": "bf16-mixed (fp32 master)"}
    assert precision_plan(resolve_settings({}), on_gpu=False, bf16_supported=False)["mode"] == "fp32"


def test_settings_that_cannot_work_are_refused():
    from crossdiff.finetune.settings import accumulation_steps, resolve_settings, world_size

    with pytest.raises(CrossdiffError, match="padding_free needs.*flash_attention_2"):
        resolve_settings({"padding_free": True})
    assert resolve_settings({"padding_free": True, "attn_implementation": "flash_attention_2"})["padding_free"]
    s = resolve_settings({"global_batch_size": 8, "per_device_train_batch_size": 2})
    assert [accumulation_steps(s, n) for n in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(CrossdiffError, match="not a multiple"):
        accumulation_steps(s, 8)
    assert world_size(resolve_settings({}), 4) == 4 and world_size(resolve_settings({}), 0) == 1
    assert world_size(resolve_settings({"num_processes": 2}), 0) == 2
    with pytest.raises(CrossdiffError, match="unknown key"):
        resolve_settings({"bf17": True})


def test_pure_bf16_refused_before_any_training(env):
    from crossdiff.finetune.run import finetune

    out = env["root"] / "ft_bf16"
    with pytest.raises(CrossdiffError, match="pure-bf16"):
        finetune(env["model"], env["train"], out, settings={"master_weights": "bf16", "max_steps": 1})
    assert not out.exists() and not (env["root"] / "ft_bf16.work").exists()


def test_why_the_guard_exists_bf16_adamw_loses_small_updates():
    """The measured effect behind the guard, on plain tensors: AdamW at lr 5e-6 on bf16 weights of
    magnitude ~0.02 leaves most of them unchanged; on fp32 weights every one moves."""
    import torch

    torch.manual_seed(0)
    shares = {}
    for dtype in (torch.bfloat16, torch.float32):
        w = torch.nn.Parameter((torch.randn(4096) * 0.02).to(dtype))
        w0 = w.detach().clone()
        opt = torch.optim.AdamW([w], lr=5e-6, weight_decay=0.0)
        for _ in range(10):
            w.grad = torch.randn_like(w)
            opt.step()
        shares[dtype] = float((w.detach() != w0).float().mean())
    assert shares[torch.float32] == 1.0
    assert shares[torch.bfloat16] < 0.5


# ------------------------------------------------------------------------------------ resume safety

# Runs `crossdiff finetune` with one Trainer/save step slowed down and announced by a sentinel file,
# so that the test can SIGKILL the real process while it is writing (checkpoint or final model).
SLOW_SAVE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    where, sentinel = os.environ["SLOW_WHERE"], Path(os.environ["SLOW_SENTINEL"])
    if where == "checkpoint":
        from transformers import Trainer
        orig = Trainer._save_rng_state
        def slow(self, output_dir):
            orig(self, output_dir)
            if self.state.global_step == int(os.environ["SLOW_STEP"]):
                sentinel.write_text(str(output_dir)); time.sleep(60)
        Trainer._save_rng_state = slow
    else:
        from transformers import PreTrainedModel
        orig = PreTrainedModel.save_pretrained
        def slow(self, d, *a, **k):
            orig(self, d, *a, **k)
            if Path(d).name.startswith("."):
                sentinel.write_text(str(d)); time.sleep(60)
        PreTrainedModel.save_pretrained = slow
    from crossdiff.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _cli(env, out, settings, extra_env=None):
    args = ["finetune", "--model", str(env["model"]), "--train", str(env["train"]), "--output", str(out),
            "--settings", json.dumps(settings)]
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), **(extra_env or {})}
    return [sys.executable, "-c", SLOW_SAVE, *args], full_env


def _kill_while_saving(env, out, settings, where, step=0):
    sentinel = env["root"] / f"sentinel-{out.name}"
    cmd, full_env = _cli(env, out, settings, {"SLOW_WHERE": where, "SLOW_STEP": str(step), "SLOW_SENTINEL": str(sentinel)})
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 240
        while not sentinel.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert sentinel.exists(), f"the save was never reached:\n{proc.communicate(timeout=30)[0][-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Path(sentinel.read_text())


def _run(env, out, settings):
    cmd, full_env = _cli(env, out, settings, {"SLOW_WHERE": "none", "SLOW_SENTINEL": "/dev/null"})
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


RESUME = {"max_steps": 6, "save_steps": 2, "save_total_limit": 5, "per_device_train_batch_size": 4,
          "learning_rate": 1e-3}


def test_kill_while_saving_a_checkpoint_resumes_from_the_newest_complete_one(env):
    out = env["root"] / "ft_kill_ckpt"
    work = env["root"] / "ft_kill_ckpt.work"
    half = _kill_while_saving(env, out, RESUME, "checkpoint", step=4)
    assert half.name == "checkpoint-4" and half.is_dir()
    assert not (half / "trainer_state.json").exists(), "killed before the Trainer's last file"
    assert (work / "checkpoint-2" / "crossdiff_checkpoint.json").exists()
    log = _run(env, out, RESUME)
    assert "checkpoint-4: incomplete checkpoint" in log
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["global_step"] == 6
    steps = [p["step"] for p in metrics["loss_curve"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6 and 1 in steps  # pre-resume losses kept
    assert metrics["train_loss"] > 0 and metrics["train_loss"] == pytest.approx(
        sum(p["loss"] for p in metrics["loss_curve"]) / len(steps), rel=1e-6)
    assert not work.exists()


def test_kill_during_final_save_leaves_no_stray_copy_and_loss_is_right(env):
    out = env["root"] / "ft_kill_final"
    settings = {**RESUME, "save_steps": 3}
    tmp = _kill_while_saving(env, out, settings, "final")
    assert tmp.name.startswith(".ft_kill_final.") and tmp.exists(), "the hidden copy exists while saving"
    assert not out.exists()
    log = _run(env, out, settings)
    assert "temporary copy left by an interrupted save" in log
    assert not tmp.exists() and not [p for p in env["root"].iterdir() if p.name.startswith(".ft_kill_final.")]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-6") and metrics["global_step"] == 6
    # resumed at the last step: the Trainer's own training_loss would be 0.0
    assert metrics["train_loss"] == pytest.approx(sum(p["loss"] for p in metrics["loss_curve"]) / 6, rel=1e-6)
    assert metrics["train_loss"] > 0.1


def test_rebuilt_base_model_at_the_same_path_never_resumes_old_checkpoints(env, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from crossdiff.finetune.checkpoints import fingerprint, model_content_id, prepare_work_dir

    base = tmp_path / "base"
    shutil.copytree(env["model"], base)
    before = model_content_id(base)
    fp1 = fingerprint(base, [{"prompt": "a", "completion": "b"}], {"lr": 1}, {}, 1)
    work, out = tmp_path / "out.work", tmp_path / "out"
    prepare_work_dir(work, out, fp1, {})
    (work / "checkpoint-1").mkdir()
    # "rebuild": same file name, same shapes and header, different weights
    w = load_file(base / "model.safetensors")
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in w.items()}, base / "model.safetensors",
              metadata={"format": "pt"})
    assert model_content_id(base) != before
    fp2 = fingerprint(base, [{"prompt": "a", "completion": "b"}], {"lr": 1}, {}, 1)
    assert fp2 != fp1
    said = []
    assert prepare_work_dir(work, out, fp2, {}, say=said.append) is None
    assert not (work / "checkpoint-1").exists() and "base-model content" in said[0]


def test_complete_checkpoint_rules(tmp_path):
    from crossdiff.finetune.checkpoints import is_complete, last_complete_checkpoint, mark_complete

    for n in (2, 4, 6):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 10)
        (d / "trainer_state.json").write_text("{}")
        if n != 6:
            mark_complete(d)
    assert not is_complete(tmp_path / "checkpoint-6")  # no marker: the kill came first
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-4")
    (tmp_path / "checkpoint-4" / "model.safetensors").write_bytes(b"x" * 3)  # truncated after marking
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-2")
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path) is None


def test_bf16_save_that_rounds_away_training_is_said_loudly():
    from crossdiff.finetune.train import bf16_save_warnings

    (w,) = bf16_save_warnings({"share_changed": 1.0, "share_changed_bf16": 0.187}, "bf16")
    assert "18.7%" in w and "save_dtype: fp32" in w
    assert bf16_save_warnings({"share_changed": 1.0, "share_changed_bf16": 0.9}, "bf16") == []
    assert bf16_save_warnings({"share_changed": 1.0, "share_changed_bf16": 0.1}, "fp32") == []
    assert bf16_save_warnings({"share_changed": None, "share_changed_bf16": None}, "bf16") == []
