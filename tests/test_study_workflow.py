"""The whole DAG on a reduced embedded config: tiny model, 3 bins, fine-tune and evaluate on every bin."""

import json
import re

import polars as pl
import pytest

from conftest import make_workdir, snakemake

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
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 1000, warmup_steps: 120, eval_items: 0}
finetune: {num_train_epochs: 1, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 2}
evaluate: {batch_size: 32}
aggregate: {n_boot: 200}
resources:
  finetune: {gpu: 1, mem_mb: 2000, runtime: 10, threads: 1}
  evaluate: {gpu: 1, mem_mb: 2000, runtime: 10, threads: 1}
gpus: {devices: [0, 1], lock_dir: LOCKS}
"""


def planned_jobs(proc) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)
            if m.group(1) not in ("total", "count")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A workstation run: GPU rules through `crossdiff gpu-run` on 2 virtual GPU slots."""
    root = tmp_path_factory.mktemp("study")
    wd = make_workdir(root, STUDY.replace("LOCKS", str(root / "gpu-locks")))
    snakemake(wd, "--cores", "2", "--resources", "gpu=2", timeout=1500)
    return wd


def test_all_targets_and_exact_results_rows(study):
    table = pl.read_parquet(study / "results/tables/results.parquet")
    # (zero-shot + 3 checkpoints) x 3 test bins, one model, one dataset
    assert table.height == 4 * 3
    assert sorted(set(table["train_bin"])) == ["0", "1", "2", "zero-shot"]
    assert sorted(table["test_bin"].unique().to_list()) == [0, 1, 2]
    assert (table["n_items"] == 30).all()
    zs = table.filter(pl.col("train_bin") == "zero-shot")
    assert (zs["gain"].abs() < 1e-12).all()
    ft = table.filter(pl.col("train_bin") != "zero-shot")
    assert ((ft["gain_lo"] <= ft["gain"]) & (ft["gain"] <= ft["gain_hi"])).all()
    for name in ("tiny/accuracy.png", "tiny/gain.png", "gain_vs_gap.png", "zero_shot.png"):
        assert (study / "results/figures/mini" / name).stat().st_size > 10_000, name
    assert (study / "results/tables/results.csv").exists()
    model = study / "results/finetune/tiny/mini/bin1"
    metrics = json.loads((model / "train_metrics.json").read_text())
    assert metrics["global_step"] > 0 and (model / "config.json").exists()
    assert not (study / "results/finetune/tiny/mini/bin1.work").exists()  # checkpoints cleaned after success
    # every GPU job got one of the two virtual devices from gpu-run
    for b in range(3):
        m = json.loads((study / f"results/finetune/tiny/mini/bin{b}/train_metrics.json").read_text())
        assert m["cuda_visible_devices"] in ("0", "1")
        assert f"CUDA_VISIBLE_DEVICES={m['cuda_visible_devices']} (from " in (study / f"logs/finetune/tiny/mini/bin{b}.log").read_text()


def test_each_checkpoint_loaded_once_for_all_bins(study):
    log = (study / "logs/evaluate/tiny/mini/train1.log").read_text()
    assert "loaded model 1 time(s)" in log
    assert all((study / f"results/eval/tiny/mini/train1/bin{t}.samples.jsonl").exists() for t in range(3))


def test_removed_evaluation_reruns_only_that_job(study):
    target = study / "results/eval/tiny/mini/train2/bin0.json"
    target.unlink()
    jobs = planned_jobs(snakemake(study, "-n", "--cores", "2", str(target.relative_to(study))))
    assert jobs == {"evaluate_checkpoint": 1}, jobs
    jobs = planned_jobs(snakemake(study, "-n", "--cores", "2"))
    assert jobs == {"evaluate_checkpoint": 1, "aggregate": 1, "plot_results": 1, "summarize": 1, "all": 1}, jobs
    snakemake(study, "--cores", "2", str(target.relative_to(study)))
    assert target.exists()


def test_report_shows_heatmaps(study):
    snakemake(study, "--report", "results/report.html")
    html = (study / "results/report.html").read_text(errors="replace")
    assert "gain.png" in html and "accuracy.png" in html and "histogram.png" in html
    assert "summary.png" in html and "The answer in numbers" in html  # the summary opens the report
