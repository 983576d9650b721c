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


# ------------------------------------------------------------------ study designs (issue 12)
DESIGNS = STUDY.replace("bins: {n_bins: 3}", """bins: {n_bins: 3, holdout_fraction: 0.2}
study:
  train_bins: [0, 2]
  train_sets:
    easy: {bins: [0, 1], size: 10}
    up: {bins: all, size: 12, order: easy_to_hard}
  train_sizes: [8, null]
  seeds: [1, 2]""").replace("gpu: 1", "gpu: 0").replace(
    "save_steps: 2}", "save_steps: 2, lora: {r: 4}}")  # seeds with a curriculum need a seeded step (issue 20)


def test_planned_jobs_are_the_product_of_sets_sizes_and_seeds(tmp_path):
    wd = make_workdir(tmp_path, DESIGNS.replace("LOCKS", str(tmp_path / "locks")))
    jobs = planned_jobs(snakemake(wd, "-n", "--cores", "1"))
    runs = (2 + 2) * 2 * 2  # (train bins + train sets) x sizes x seeds
    assert jobs["finetune"] == runs and jobs["evaluate_checkpoint"] == runs
    assert jobs["make_sft_data"] == 2  # full-size single bins keep today's rule and path
    assert jobs["make_train_set"] == 2 + 2 * 2  # bins at n=8; sets at n=8 and at their own size
    assert jobs["make_task"] == 3 and jobs["evaluate_zero_shot"] == 1 and jobs["size_difficulty"] == 1
    # one cell is a target that builds only what it needs: one training set, one fine-tune, one evaluation
    cell = "results/eval/tiny/mini/set-up-n8-seed2/bin1.json"
    proc = snakemake(wd, "-n", "-p", "--cores", "1", cell)
    assert planned_jobs(proc) == {
        "prepare_items": 1, "simulate_leaderboard": 1, "import_responses": 1, "fit_irt": 1, "make_bins": 1,
        "build_base_model": 1, "make_train_set": 1, "finetune": 1, "make_task": 3, "evaluate_checkpoint": 1,
    }
    out = proc.stdout + proc.stderr
    assert "--train-bins 0 1 2 --size 8 --order easy_to_hard" in out
    line = next(x for x in out.splitlines() if "--output results/finetune/tiny/mini/set-up-n8-seed2 --settings" in x)
    settings = json.loads(line.split("--settings '")[1].split("'")[0])  # the run's resolved settings, complete
    assert (settings["learning_rate"], settings["seed"], settings["shuffle"]) == (0.0005, 2, False)
    assert "--holdout-fraction 0.2 --holdout-seed 0" in out


def test_default_paths_unchanged_without_designs(tmp_path):
    wd = make_workdir(tmp_path, STUDY.replace("LOCKS", str(tmp_path / "locks")).replace("gpu: 1", "gpu: 0"))
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    out = proc.stdout + proc.stderr
    for b in range(3):
        assert f"--train results/sft/mini/bin{b}.jsonl --output results/finetune/tiny/mini/bin{b} " in out
        assert f"--train-bin {b} " in out and f"results/eval/tiny/mini/train{b}/bin0.json" in out
    assert "make_train_set" not in out and "--holdout-fraction" not in out and "--show-diagonal" not in out
    assert '"shuffle": false' not in out and '"shuffle": true' in out and "size_difficulty" not in out


E2E = STUDY.replace("bins: {n_bins: 3}", """bins: {n_bins: 3, holdout_fraction: 0.2}
study:
  train_bins: [1]
  train_sets:
    up: {bins: all, size: 12, order: easy_to_hard}
  seeds: [1, 2]""").replace("gpu: 1", "gpu: 0").replace(
    "save_steps: 2}", "save_steps: 2, lora: {r: 4}}")  # seeds with a curriculum need a seeded step (issue 20).replace("num_train_epochs: 1", "num_train_epochs: 1, max_steps: 2")


def test_designs_end_to_end_held_out_diagonal_curriculum_seeds(tmp_path):
    wd = make_workdir(tmp_path, E2E.replace("LOCKS", str(tmp_path / "locks")))
    snakemake(wd, "--cores", "2", timeout=900)
    bins = pl.read_parquet(wd / "results/bins/mini/bins.parquet")
    held = bins.filter(pl.col("heldout"))
    table = pl.read_parquet(wd / "results/tables/results.parquet")
    # every cell is scored on the held-out items of its test bin only
    for t in range(3):
        assert (table.filter(pl.col("test_bin") == t)["n_items"] == held.filter(pl.col("bin") == t).height).all()
    train = [json.loads(x) for x in (wd / "results/sft/mini/bin1.jsonl").read_text().splitlines()]
    assert len(train) == bins.filter((pl.col("bin") == 1) & ~pl.col("heldout")).height
    assert sorted(table["train_bin"].unique().to_list()) == ["1", "set-up", "zero-shot"]
    ft = table.filter(pl.col("train_bin") != "zero-shot")
    assert (ft["n_seeds"] == 2).all() and ft["gain_lo"].is_not_null().all()
    diag = table.filter((pl.col("train_bin") == "1") & (pl.col("test_bin") == 1))
    assert diag.height == 1 and diag["gain"].is_not_null().all()
    # the curriculum ran in order, unshuffled, with the run's seed
    m = json.loads((wd / "results/finetune/tiny/mini/set-up-seed2/train_metrics.json").read_text())
    assert m["settings"]["shuffle"] is False and m["settings"]["seed"] == 2 and m["n_examples"] == 12
    m1 = json.loads((wd / "results/finetune/tiny/mini/bin1-seed1/train_metrics.json").read_text())
    assert m1["settings"]["shuffle"] is True and m1["settings"]["seed"] == 1
    rows = [json.loads(x) for x in (wd / "results/sft/mini/set-up.jsonl").read_text().splitlines()]
    d = dict(zip(bins["item_id"], bins["difficulty"]))
    assert [d[r["item_id"]] for r in rows] == sorted(d[r["item_id"]] for r in rows)
    assert not {r["item_id"] for r in rows} & set(held["item_id"])
    assert (wd / "results/figures/mini/tiny/gain.png").stat().st_size > 10_000
