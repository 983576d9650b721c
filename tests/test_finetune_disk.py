"""storage.delete_finetuned_models: a fine-tuned model is a snakemake temp() deleted once its
evaluation is written (--notemp keeps it); its train_metrics.json stays beside it."""

import json

import pytest

from conftest import make_workdir, snakemake

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
finetune: {max_steps: 2, per_device_train_batch_size: 4, learning_rate: 1.0e-3}
evaluate: {batch_size: 32}
resources:
  finetune: {gpu: 0, threads: 1}
  evaluate: {gpu: 0, threads: 1}
storage: {delete_finetuned_models: true}
"""
EVAL = "results/eval/tiny-model/tiny/train0/bin1.json"
MODEL = "results/finetune/tiny-model/tiny/bin0"


def test_finetuned_model_deleted_after_its_evaluation_metrics_kept(tmp_path):
    wf = make_workdir(tmp_path / "wf", STUDY)
    # --notemp keeps the model
    snakemake(wf, "-j1", "--notemp", EVAL, timeout=600)
    assert (wf / MODEL / "model.safetensors").exists() and (wf / f"{MODEL}.train_metrics.json").exists()
    # without it, the model goes as soon as its evaluation has been written
    for f in (wf / "results/eval/tiny-model/tiny/train0").iterdir():
        f.unlink()
    snakemake(wf, "-j1", EVAL, timeout=600)
    assert (wf / EVAL).exists()
    assert not (wf / MODEL).exists(), "the fine-tuned model should be removed once evaluated"
    metrics = json.loads((wf / f"{MODEL}.train_metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["share_changed"] > 0.99
    assert not (wf / f"{MODEL}.work").exists()
