"""vLLM evaluation: lm-eval VLLM arguments from the config and the job's GPUs; hf vs vllm agreement."""

import importlib.util
import json
import os

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.run import resolve_settings, visible_gpus, vllm_model_args


def test_tensor_parallel_fills_the_jobs_gpus():
    s = resolve_settings({"backend": "vllm"})
    assert vllm_model_args("/m", s, 4) == {
        "pretrained": "/m", "dtype": "bfloat16", "batch_size": 32, "tensor_parallel_size": 4,
        "data_parallel_size": 1, "gpu_memory_utilization": 0.9, "seed": 42,
        "generation_config": "vllm", "chat_template_args": {"date_string": "26 Jul 2024"}}


def test_data_parallel_and_explicit_settings(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else real(name, *a))  # as if ray were installed
    s = resolve_settings({"backend": "vllm", "data_parallel": 2, "gpu_memory_util": 0.8, "seed": 7, "dtype": "float16",
                          "max_model_len": 8192, "batch_size": "auto", "model_args": {"enforce_eager": True}})
    args = vllm_model_args("ckpt", s, 8)
    assert args["tensor_parallel_size"] == 4 and args["data_parallel_size"] == 2
    assert args["gpu_memory_utilization"] == 0.8 and args["seed"] == 7 and args["dtype"] == "float16"
    assert args["max_model_len"] == 8192 and args["batch_size"] == "auto" and args["enforce_eager"] is True
    assert vllm_model_args("c", resolve_settings({"max_length": 4096}), 1)["max_model_len"] == 4096


def test_layouts_that_do_not_match_the_job_are_refused():
    with pytest.raises(CrossdiffError, match=r"tensor_parallel 2 x data_parallel 1 = 2 GPU\(s\), but the job has 4"):
        vllm_model_args("m", resolve_settings({"tensor_parallel": 2}), 4)
    with pytest.raises(CrossdiffError, match="data_parallel 3 does not divide the job's 4 GPU"):
        vllm_model_args("m", resolve_settings({"data_parallel": 3}), 4)
    with pytest.raises(CrossdiffError, match="sees no GPU"):
        vllm_model_args("m", resolve_settings({}), 0)
    with pytest.raises(CrossdiffError, match=r"model_args repeats \['seed'\]"):
        vllm_model_args("m", resolve_settings({"model_args": {"seed": 1}}), 1)
    with pytest.raises(CrossdiffError, match="gpu_memory_util"):
        resolve_settings({"gpu_memory_util": 1.5})


def test_gpu_count_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0


def test_vllm_backend_without_vllm_says_how_to_install(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from crossdiff.evaluate.run import load_lm

    with pytest.raises(CrossdiffError, match=r"vllm is not installed \(pip install -r envs/requirements-gpu.txt\)"):
        load_lm(tmp_path, resolve_settings({"backend": "vllm"}))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not importable here (CPU-only install): "
                    "the hf-vs-vllm agreement test needs envs/requirements-gpu.txt and a GPU")
def test_hf_and_vllm_agree_per_item(tmp_path):
    """Same tiny model, same tasks: >= 98% equal per-item correctness (generation), identical choices (MC)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vllm is importable but no CUDA device is available")
    from crossdiff.models.tiny import build_base_model
    from crossdiff.items.synthetic import generate_items
    from crossdiff.evaluate.run import evaluate_model, make_task, samples_path

    items = generate_items(200, seed=11)
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "bins.parquet")
    build_base_model(tmp_path / "model", tmp_path / "items.parquet", {"warmup_problems": 2000, "warmup_steps": 300})
    gen = make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "gen", "gen", {})
    mc_items = items.with_columns(pl.col("answer").map_elements(
        lambda a: json.dumps([a, str(int(a) + 1), str(int(a) - 3)]), return_dtype=pl.Utf8).alias("choices"))
    mc_items.write_parquet(tmp_path / "mc_items.parquet")
    make_task(tmp_path / "mc_items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "mc", "mc",
              {"scoring": "multiple_choice"})
    assert gen["n_items"] == 200
    got = {}
    for backend in ("hf", "vllm"):
        outs = [tmp_path / backend / "gen.json", tmp_path / backend / "mc.json"]
        settings = {"backend": backend, "dtype": "float32" if backend == "hf" else "float16", "batch_size": 16,
                    **({"gpu_memory_util": 0.3, "max_model_len": 512} if backend == "vllm" else {})}
        evaluate_model(tmp_path / "model", [tmp_path / "gen", tmp_path / "mc"], outs, settings)
        got[backend] = [{r["item_id"]: r for r in map(json.loads, samples_path(o).read_text().splitlines())} for o in outs]
    gen_same = sum(got["hf"][0][k]["correct"] == got["vllm"][0][k]["correct"] for k in got["hf"][0]) / 200
    assert gen_same >= 0.98, gen_same
    assert all(got["hf"][1][k]["prediction"] == got["vllm"][1][k]["prediction"] for k in got["hf"][1])
