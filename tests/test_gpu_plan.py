"""Issue 18: the dry-run checks of each model's fine-tune (crossdiff/finetune/plan_check.py): global batch
split per model (item 2), host RAM in the plan and in mem_mb (item 3), bounded config.json look-ups (item 10)."""

import json
import time

import pytest
import yaml

from conftest import REPO
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.memory_plan import host_plan, param_count
from crossdiff.finetune.plan_check import check_model, check_models, model_config
from crossdiff.finetune.settings import resolve_settings

MODELS = {k: v for k, v in json.loads((REPO / "tests/fixtures/paper_models.json").read_text()).items() if not k.startswith("_")}
PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())


def _res(m):
    return {**{"gpu": 1, "mem_mb": 64000, "gpu_mem_gb": 80}, **PAPER["resources"]["finetune"], **m["resources"]}


def test_global_batch_that_does_not_divide_is_refused_per_model():
    """8 GPUs x per-device 2 cannot make global batch 8: refused at dry run, naming the model (item 2)."""
    s = resolve_settings({**PAPER["finetune"], "per_device_train_batch_size": 2})
    problems, _ = check_model("Qwen/Qwen2.5-14B-Instruct", MODELS["Qwen/Qwen2.5-14B-Instruct"], s, {"gpu": 8, "mem_mb": 256000, "gpu_mem_gb": 80})
    assert len(problems) == 1 and "Qwen/Qwen2.5-14B-Instruct on 8 GPU(s)" in problems[0] and "global_batch_size 8" in problems[0]
    problems, _ = check_model("q7", MODELS["Qwen/Qwen2.5-7B-Instruct"], s, {"gpu": 4, "mem_mb": 128000, "gpu_mem_gb": 80})
    assert problems == []


def test_paper_config_passes_every_check():
    s = resolve_settings(PAPER["finetune"])
    for m in PAPER["models"]:
        problems, mem = check_model(m["id"], MODELS[m["id"]], s, _res(m))
        assert problems == [], problems
        assert mem is not None


def test_host_ram_rank0_loading_vs_every_rank():
    """fp32 load x 1.4 on rank 0 only under FSDP2 with cpu_ram_efficient_loading; on every rank otherwise (item 3)."""
    cfg = MODELS["Qwen/Qwen2.5-14B-Instruct"]
    p = param_count(cfg)
    r0 = host_plan(cfg, ranks=8, rank0_loading=True)
    every = host_plan(cfg, ranks=8, rank0_loading=False)
    assert r0["loaders"] == 1 and every["loaders"] == 8
    assert r0["host_gb"] == pytest.approx((1.4 * 4 * p + 8 * 4e9) / 1e9)
    assert every["host_gb"] > 600 > 256 > r0["host_gb"]  # the 256 GB the paper config requests
    s = resolve_settings(PAPER["finetune"])
    _, mem = check_model("q14", cfg, s, {"gpu": 8, "mem_mb": 256000, "gpu_mem_gb": 80})
    assert mem == r0["mem_mb"]
    _, mem_off = check_model("q14", cfg, {**s, "cpu_ram_efficient_loading": False}, {"gpu": 8, "mem_mb": 256000, "gpu_mem_gb": 80})
    assert mem_off == every["mem_mb"]


def test_mem_mb_is_raised_to_the_host_plan(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"):
        (cache / (name.replace("/", "--") + ".json")).write_text(json.dumps(MODELS[name]))
    models = {"q7": {"id": "Qwen/Qwen2.5-7B-Instruct"}, "q1": {"id": "Qwen/Qwen2.5-1.5B-Instruct"}}
    res = {"q7": {"gpu": 4, "mem_mb": 16000, "gpu_mem_gb": 80}, "q1": {"gpu": 1, "mem_mb": 64000, "gpu_mem_gb": 80}}
    s = resolve_settings({"per_device_train_batch_size": 1, "max_length": 4096})
    planned = check_models(models, s, res.__getitem__, cache)
    assert planned["q7"] > 16000 and "requesting mem_mb" in capsys.readouterr().err
    assert planned["q1"] < 64000


def test_config_lookup_is_bounded_and_cached(tmp_path, monkeypatch):
    """No route to the hub: one attempt per model, at most `timeout` seconds, then a note (item 10)."""
    import huggingface_hub

    calls = []

    def hang(*a, **k):
        calls.append(a)
        time.sleep(30)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hang)
    t0 = time.monotonic()
    cfg, why = model_config("org/unreachable", tmp_path, timeout=0.5)
    assert cfg is None and "no answer from the hub within 0.5 s" in why and time.monotonic() - t0 < 2
    assert len(calls) == 1
    # offline: the HF cache only, no download attempt
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg, why = model_config("org/unreachable", tmp_path, timeout=0.5)
    assert cfg is None and "HF_HUB_OFFLINE" in why and len(calls) == 1
    # a successful look-up is written to the crossdiff cache and read from it next time
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(_write(tmp_path / "dl.json", MODELS["Qwen/Qwen2.5-7B-Instruct"])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    cfg, _ = model_config("Qwen/Qwen2.5-7B-Instruct", tmp_path / "c", timeout=5)
    assert cfg == MODELS["Qwen/Qwen2.5-7B-Instruct"] and (tmp_path / "c/Qwen--Qwen2.5-7B-Instruct.json").is_file()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hang)
    assert model_config("Qwen/Qwen2.5-7B-Instruct", tmp_path / "c", timeout=0.5)[0] == cfg


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_refusal_is_an_error_in_error_mode(tmp_path):
    cache = tmp_path
    (cache / "Qwen--Qwen2.5-14B-Instruct.json").write_text(json.dumps(MODELS["Qwen/Qwen2.5-14B-Instruct"]))
    s = resolve_settings({"per_device_train_batch_size": 2, "global_batch_size": 8, "max_length": 4096})
    with pytest.raises(CrossdiffError, match="global_batch_size 8"):
        check_models({"q14": {"id": "Qwen/Qwen2.5-14B-Instruct"}}, s, lambda m: {"gpu": 8, "mem_mb": 1, "gpu_mem_gb": 80}, cache)


def test_lookups_run_concurrently_under_one_deadline(tmp_path, monkeypatch):
    """Seven unreachable models cost one timeout, not seven."""
    import huggingface_hub

    from crossdiff.finetune.plan_check import model_configs

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: time.sleep(30))
    t0 = time.monotonic()
    out = model_configs([f"org/m{i}" for i in range(7)], tmp_path, timeout=0.5)
    assert time.monotonic() - t0 < 1.5
    assert all(cfg is None and "within 0.5 s" in why for cfg, why in out.values())


def test_eight_bit_optimizer_with_fsdp2_is_refused_at_dry_run():
    s = resolve_settings({"optim": "paged_adamw_8bit", "per_device_train_batch_size": 1, "max_length": 4096})
    problems, _ = check_model("q7", MODELS["Qwen/Qwen2.5-7B-Instruct"], s, {"gpu": 4, "mem_mb": 128000, "gpu_mem_gb": 80})
    assert len(problems) == 1 and "paged_adamw_8bit" in problems[0] and "q7 on 4 GPU(s)" in problems[0]
    assert check_model("q1", MODELS["Qwen/Qwen2.5-1.5B-Instruct"], s, {"gpu": 1, "mem_mb": 64000, "gpu_mem_gb": 80})[0] == []
