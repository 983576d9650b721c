"""Memory plan (crossdiff/finetune/memory_plan.py) for the paper's seven models, per-model resources, and the
dry-run stop of a fine-tune that cannot fit."""

import json
import shutil

import pytest

from conftest import REPO, make_workdir, snakemake
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.memory_plan import fit_message, param_count, plan

MODELS = {k: v for k, v in json.loads((REPO / "tests/fixtures/paper_models.json").read_text()).items() if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_matches_the_published_size(name):
    cfg = MODELS[name]
    assert param_count(cfg) == pytest.approx(cfg["params_published"], rel=0.02)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_state_memory_is_16_bytes_per_parameter_sharded(name, gpus):
    """fp32 weights + fp32 gradients + two fp32 AdamW moments = 16 B/parameter, over N GPUs (FULL_SHARD)."""
    closed_form = 16 * MODELS[name]["params_published"] / gpus / 1e9
    est = plan(MODELS[name], gpus=gpus, batch=1, seq=4096)
    assert est["weights_grads_optimizer_gb"] == pytest.approx(closed_form, rel=0.15)
    assert est["total_gb"] > est["weights_grads_optimizer_gb"]
    # pure bf16 halves it; an 8-bit optimizer saves 6 of the 16 bytes
    assert plan(MODELS[name], gpus=gpus, master="bf16")["weights_grads_optimizer_gb"] == pytest.approx(closed_form / 2, rel=0.15)
    assert plan(MODELS[name], gpus=gpus, optimizer="paged_adamw_8bit")["weights_grads_optimizer_gb"] == pytest.approx(
        closed_form * 10 / 16, rel=0.15)


def test_activation_checkpointing_reduces_the_peak_and_liger_does_not_change_the_logits():
    """TRL 1.16 scores through its chunked LM head (tiles of 4096 tokens x 32768 vocabulary) and switches
    Liger's fused cross-entropy off: the logits term is one tile, with or without Liger (issue 18, item 7)."""
    cfg = MODELS["Qwen/Qwen2.5-1.5B-Instruct"]
    full = plan(cfg, batch=2, seq=4096, checkpointing=False)
    ckpt = plan(cfg, batch=2, seq=4096, checkpointing=True)
    liger = plan(cfg, batch=2, seq=4096, checkpointing=True, liger=True)
    assert full["activations_gb"] > 5 * ckpt["activations_gb"]
    assert liger["logits_gb"] == ckpt["logits_gb"] == pytest.approx(4096 * 32768 * 6 / 1e9)
    assert ckpt["logits_gb"] < 1.0  # was 22.4 GB for Qwen (full b*s*V logits x 3)


def test_fsdp2_keeps_the_root_unit_gathered():
    """Under FSDP2 the embeddings/final norm/LM head (not a decoder layer) are one unit gathered in bf16 with
    their bf16 gradient: not divided by the GPUs (issue 18, item 7)."""
    cfg = MODELS["Qwen/Qwen2.5-7B-Instruct"]
    root = cfg["vocab_size"] * cfg["hidden_size"] * 2  # untied
    e4, e8 = plan(cfg, gpus=4, batch=1, seq=4096), plan(cfg, gpus=8, batch=1, seq=4096)
    assert e4["compute_copy_gb"] == e8["compute_copy_gb"] > 4 * root / 1e9


def test_what_fits_where():
    q7, q14, small = MODELS["Qwen/Qwen2.5-7B-Instruct"], MODELS["Qwen/Qwen2.5-14B-Instruct"], MODELS["Qwen/Qwen2.5-1.5B-Instruct"]
    assert fit_message("q1.5", plan(small, gpus=1, batch=2, seq=4096), 1, 80) is None
    msg = fit_message("Qwen/Qwen2.5-14B-Instruct", plan(q14, gpus=1, batch=2, seq=4096), 1, 80)
    assert msg and "Qwen/Qwen2.5-14B-Instruct" in msg and "1 GPU(s)" in msg and "80 GB" in msg
    assert "models[].resources.gpu: 8" in msg
    assert fit_message("q14", plan(q14, gpus=8, batch=1, seq=4096), 8, 80) is None
    assert fit_message("q7", plan(q7, gpus=1, batch=1, seq=4096), 1, 80) is not None  # ~122 GB of state alone


def test_settings_plan_uses_finetune_settings():
    from crossdiff.finetune.settings import resolve_settings
    from crossdiff.finetune.memory_plan import settings_plan

    cfg = MODELS["meta-llama/Llama-3.1-8B-Instruct"]
    a = settings_plan(cfg, resolve_settings({"per_device_train_batch_size": 1, "max_length": 4096}), 4)
    b = settings_plan(cfg, resolve_settings({"per_device_train_batch_size": 4, "max_length": 4096}), 4)
    assert b["activations_gb"] == pytest.approx(4 * a["activations_gb"])
    assert a["gpus"] == 4


STUDY = """
datasets:
  tiny:
    items: {{source: synthetic, n_items: 40, max_ops: 2, max_digits: 2, seed: 1}}
    responses: {{source: simulated, n_models: 30, seed: 2}}
irt: {{engine: fast, stability: {{seeds: [], engines: []}}}}
bins: {{n_bins: 2}}
models:
  - id: {big}
    resources: {{gpu: {gpus}, mem_mb: 64000}}
  - id: {small}
    resources: {{gpu: 1}}
resources:
  finetune: {{gpu: 0, gpu_mem_gb: 80}}
"""


def _local_model(root, name):
    d = root / name.replace("/", "__")
    d.mkdir(parents=True)
    cfg = {k: v for k, v in MODELS[name].items() if k != "params_published"}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_dry_run_stops_a_finetune_that_cannot_fit_and_uses_per_model_gpus(tmp_path):
    big = _local_model(tmp_path / "models", "Qwen/Qwen2.5-14B-Instruct")
    small = _local_model(tmp_path / "models", "Qwen/Qwen2.5-1.5B-Instruct")
    wf = make_workdir(tmp_path / "wf", STUDY.format(big=big, small=small, gpus=1))
    proc = snakemake(wf, "-n", "results/finetune", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"model {big}: the fine-tune needs about" in text and "on 1 GPU(s)" in text and "resources.gpu: 8" in text
    # with 8 GPUs it fits; the plan has one job per model and bin, each with its own GPU count
    wf8 = make_workdir(tmp_path / "wf8", STUDY.format(big=big, small=small, gpus=8))
    shutil.rmtree(wf8 / "results", ignore_errors=True)
    proc = snakemake(wf8, "-n", "-p", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "--count 8" in out and "--count 1" in out and "--gpus 8" in out
    # the 14B's host RAM plan (fp32 load on rank 0 + 8 ranks) is above its mem_mb 64000: the job asks for the plan
    from crossdiff.finetune.memory_plan import host_plan

    need = host_plan(MODELS["Qwen/Qwen2.5-14B-Instruct"], ranks=8, rank0_loading=True)["mem_mb"]
    assert need > 64000 and f"mem_mb={need}" in out and "requesting mem_mb" in out


def test_a_job_on_a_too_small_gpu_stops_before_loading(tmp_path, monkeypatch):
    """The check at the start of each rank (crossdiff/finetune/train.py), with the GPU's memory given by
    CROSSDIFF_GPU_MEM_GB (CUDA faked: no GPU here)."""
    import torch

    from crossdiff.finetune.settings import resolve_settings
    from crossdiff.finetune.memory_plan import check_before_training

    d = _local_model(tmp_path, "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CROSSDIFF_GPU_MEM_GB", "80")
    with pytest.raises(CrossdiffError, match="needs about .* GB per GPU on 1 GPU"):
        check_before_training(str(d), d, resolve_settings({"max_length": 4096, "per_device_train_batch_size": 2}), 1)
    check_before_training(str(d), d, resolve_settings({"max_length": 4096, "per_device_train_batch_size": 1}), 8)


@pytest.mark.parametrize("broken,expected", [
    ('{"hidden_size": 64, "num_attention_he', "is not readable JSON"),
    (json.dumps({"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}), "vocab_size"),
    (json.dumps({"hidden_size": "abc", "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 10}),
     "not a positive integer"),
])
def test_broken_config_json_is_named_with_its_model(tmp_path, broken, expected):
    """issue 20, item 14: truncated JSON, a missing size, a size that is not a number."""
    from crossdiff.finetune.memory_plan import read_config

    (tmp_path / "config.json").write_text(broken)
    with pytest.raises(CrossdiffError, match=expected) as info:
        read_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(info.value) and f"model {tmp_path}" in str(info.value)


def test_more_gpus_are_suggested_only_when_they_fit():
    """A plan whose activations and logits alone exceed the GPU: no GPU count is suggested."""
    q14 = MODELS["Qwen/Qwen2.5-14B-Instruct"]
    replan = lambda g: plan(q14, gpus=g, batch=64, seq=4096)  # noqa: E731
    msg = fit_message("q14", replan(1), 1, 80, replan=replan)
    assert "resources.gpu:" not in msg and "more GPUs alone do not help" in msg
    assert replan(16)["total_gb"] > 80  # indeed: not even 16 fit
    fits = lambda g: plan(q14, gpus=g, batch=1, seq=4096)  # noqa: E731
    msg = fit_message("q14", fits(1), 1, 80, replan=fits)
    g = int(msg.split("resources.gpu: ")[1].split(")")[0])
    assert fits(g)["total_gb"] <= 80 and fits(g // 2)["total_gb"] > 80
