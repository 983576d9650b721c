"""The study's cost before it runs and its results while it runs (issue 31, part B), on one small shared study:
a reduced embedded default (tiny model, 3 bins) run up to its evaluation cells.

* ``crossdiff estimate`` equals a direct computation: the SFT JSONLs tokenized by the tiny tokenizer as the
  trainer tokenizes them, times epochs; 6 x the model's own parameter count x tokens / (MFU x peak); and the
  trainer's own token count (train_metrics.json);
* ``snakemake results/partial/progress.csv`` with some evaluation cells deleted: the right counts, the existing
  cells drawn and tabled, no evaluation or fine-tune scheduled, the main DAG's plan unchanged.
"""

import csv
import json
import re
import subprocess

import pytest

from conftest import BIN, make_workdir, snakemake

STUDY = """
datasets:
  mini:
    items: {source: synthetic, n_items: 90, max_ops: 3, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 3}
models:
  - id: tiny
    build: tiny
    warmup_dataset: mini
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 600, warmup_steps: 60, eval_items: 0}
finetune: {num_train_epochs: 2, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 2}
evaluate: {batch_size: 32}
aggregate: {n_boot: 100}
summary: {n_boot: 100}
resources:
  finetune: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
  evaluate: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
"""
CELLS = [f"results/eval/tiny/mini/{label}/bin{t}.json" for label in ("zero-shot", "train0", "train1", "train2")
         for t in range(3)]


def jobs_of(proc) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)
            if m.group(1) not in ("total", "count")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("cost"), STUDY)
    snakemake(wd, "--cores", "2", *CELLS, timeout=900)
    return wd


def estimate_json(wd, *extra):
    out = wd / "estimate.json"
    proc = subprocess.run([str(BIN / "crossdiff"), "estimate", "--configfile", "config/config.yaml", "--directory",
                           str(wd), "--json", str(out), *extra], capture_output=True, text=True, cwd=wd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def estimated(study):
    """The CLI on the study: the tiny model's tokenizer counts the SFT data (and caches the counts)."""
    return estimate_json(study)


def test_estimate_equals_a_hand_count_of_the_sft_data(study, estimated):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, text = estimated
    tok = AutoTokenizer.from_pretrained(study / "results/models/tiny")
    assert not tok.chat_template  # plain prompt + completion + EOS, as SFTTrainer trains the tiny model
    per_bin = {}
    for b in range(3):
        rows = [json.loads(line) for line in (study / f"results/sft/mini/bin{b}.jsonl").read_text().splitlines()]
        per_bin[b] = sum(len(tok(r["prompt"] + r["completion"] + tok.eos_token)["input_ids"]) for r in rows)
        metrics = json.loads((study / f"results/finetune/tiny/mini/bin{b}/train_metrics.json").read_text())
        assert metrics["train_tokens_per_epoch"] == per_bin[b]  # the trainer counted the same tokens
    tokens = 2 * sum(per_bin.values())  # num_train_epochs: 2
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(study / "results/models/tiny").parameters())
    (sft,) = [r for r in result["rows"] if r["method"] == "sft"]
    assert sft["tokens_from"] == "sft/tokenizer" and sft["fine_tunes"] == 3
    assert sft["train_tokens"] == tokens
    assert sft["train_examples"] == sum(1 for b in range(3) for _ in
                                        (study / f"results/sft/mini/bin{b}.jsonl").read_text().splitlines())
    assert sft["train_gpu_h"] == pytest.approx(6 * params * tokens / (0.33 * 989e12) / 3600, rel=1e-12)
    # the saved model is fp32 on CPU (4 bytes/parameter); every fine-tuned model is kept (storage default)
    assert sft["model_gb"] == pytest.approx(4 * params / 1e9) and sft["kept_gb"] == pytest.approx(3 * 4 * params / 1e9)
    assert "| tiny | mini | sft | 3 |" in text
    # the dry run prints the same totals from the cache the CLI wrote (it never loads a tokenizer itself)
    proc = snakemake(study, "-n", "--cores", "1")
    line = next(ln for ln in proc.stderr.splitlines() if "training tokens" in ln)
    from crossdiff.plan.estimate import _tokens

    assert line.startswith(f"estimate:   {_tokens(tokens)} training tokens (from sft/tokenizer)"), line


def test_measured_gpu_check_output_goes_straight_in(study, estimated, tmp_path):
    measured = tmp_path / "gpu_check.json"
    measured.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "rows": [
        {"check": "qwen2-0.5b single", "ok": True, "mfu": 0.2},
        {"check": "llama-1.5b single", "ok": True, "mfu": 0.3},
        {"check": "llama-1.5b lora", "ok": True, "mfu": 0.9},
        {"check": "hf eval qwen2-0.5b", "ok": True, "items_per_s": 10.0}]}))
    result, _ = estimate_json(study, "--measured", str(measured), "--no-tokenize")  # exact counts from the cache
    base, _ = estimated
    (sft,) = [r for r in result["rows"] if r["method"] == "sft"]
    (sft0,) = [r for r in base["rows"] if r["method"] == "sft"]
    assert sft["train_tokens"] == sft0["train_tokens"] and sft["tokens_from"] == "sft/tokenizer"
    # the median full fine-tuning MFU (0.25) replaces the default 0.33
    assert sft["train_gpu_h"] == pytest.approx(sft0["train_gpu_h"] * 0.33 / 0.25)
    assert "gpu_check on NVIDIA H100" in result["assumptions"]["training"]


def cell_value(wd, path):
    return json.loads((wd / path).read_text())["value"]


def test_partial_results_from_the_cells_that_exist(study):
    before = jobs_of(snakemake(study, "-n", "--cores", "1"))
    gone = ["results/eval/tiny/mini/train2/bin0.json", "results/eval/tiny/mini/zero-shot/bin1.json"]
    kept = {c: cell_value(study, c) for c in CELLS if c not in gone}
    for c in gone:
        (study / c).unlink()
        (study / c.replace(".json", ".samples.jsonl")).unlink()
    plan = snakemake(study, "-n", "--cores", "1", "results/partial/progress.csv")
    assert jobs_of(plan) == {"partial_results": 1}, plan.stdout  # no evaluation, no fine-tune
    snakemake(study, "--cores", "1", "results/partial/progress.csv")
    out = study / "results/partial"
    progress = {(r["method"]): (int(r["cells_done"]), int(r["cells_planned"]))
                for r in csv.DictReader((out / "progress.csv").open())}
    assert progress == {"zero-shot": (2, 3), "sft": (8, 9)}
    assert list(csv.DictReader((out / "progress.csv").open()))[0].keys() == {
        "model", "dataset", "method", "cells_done", "cells_planned"}
    table = list(csv.DictReader((out / "table.csv").open()))
    missing = {(r["method"], r["train_bin"], r["test_bin"]) for r in table if r["missing"] == "true"}
    assert missing == {("sft", "2", "0"), ("zero-shot", "zero-shot", "1")}
    drawn = {r["result"]: float(r["value"]) for r in table if r["missing"] == "false"}
    assert drawn == pytest.approx(kept)  # every existing cell, with its own value
    for name in ("accuracy.png", "gain.png"):
        assert (out / "figures/mini/tiny" / name).stat().st_size > 10_000
    (summary,) = list(csv.DictReader((out / "summary.csv").open()))
    # cells with a gain: a zero-shot cell on their test bin (0 and 2), off the diagonal: (0,2), (1,0), (1,2)
    assert summary["method"] == "sft" and int(summary["n_cells"]) == 3 and summary["partial"] == "8 of 9 cells"
    assert float(summary["slope_lo"]) <= float(summary["slope"]) <= float(summary["slope_hi"])
    assert (out / "summary.txt").read_text().startswith("PARTIAL RESULTS: 10 of 12 planned evaluation cells")
    # the main DAG plans exactly the same jobs as before the partial build, and the two deleted cells' jobs
    after = jobs_of(snakemake(study, "-n", "--cores", "1"))
    assert after["evaluate_zero_shot"] == before.get("evaluate_zero_shot", 0) + 1
    assert after["evaluate_checkpoint"] == before.get("evaluate_checkpoint", 0) + 1
    assert "partial_results" not in after and "finetune" not in after
    # up to date while nothing changes; rebuilt when a cell goes (or comes)
    assert jobs_of(snakemake(study, "-n", "--cores", "1", "results/partial/progress.csv")) == {}
    (study / "results/eval/tiny/mini/train1/bin1.json").unlink()
    assert jobs_of(snakemake(study, "-n", "--cores", "1", "results/partial/progress.csv")) == {"partial_results": 1}
