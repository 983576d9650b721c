"""The Snakemake DAG end to end: dry run, full run of a small config, no-op rerun, partial rerun, lint."""

import re

import polars as pl
import pytest

from conftest import REPO, make_workdir, snakemake

SMALL = """
datasets:
  tiny:
    items: {source: synthetic, n_items: 150, seed: 1}
    responses: {source: simulated, n_models: 80, missing_rate: 0.1, n_duplicates: 2, seed: 2}
filters: {min_responses_per_model: 20, min_responses_per_item: 10}
irt: {engine: fast, seed: 3, stability: {seeds: [4], engines: [py-irt-compatible]}}
bins: {n_bins: 3}
"""


def planned_jobs(proc) -> dict[str, int]:
    """Rule -> count from snakemake's job-stats table."""
    counts = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^\s*([a-z_]+)\s+(\d+)\s*$", line)
        if m and m.group(1) not in ("total", "job", "count"):
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_default_config_dry_run(tmp_path):
    """The embedded default plans the whole study (in a fresh directory: no results yet)."""
    wd = make_workdir(tmp_path, (REPO / "config" / "config.yaml").read_text())
    jobs = planned_jobs(snakemake(wd, "-n", "--cores", "2"))
    expected = {"prepare_items": 1, "simulate_leaderboard": 1, "import_responses": 1, "fit_irt": 1,
                "fit_irt_replicate": 2, "bin_stability": 1, "make_bins": 1, "difficulty_truth": 1,
                "build_base_model": 1, "model_table": 1, "make_sft_data": 10, "finetune": 10,
                "make_task": 10, "evaluate_zero_shot": 1, "evaluate_checkpoint": 10, "aggregate": 1,
                "plot_results": 1}
    assert {k: jobs.get(k) for k in expected} == expected, jobs


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("wf"), SMALL)
    snakemake(wd, "--cores", "2")
    return wd


EXPECTED = [
    "results/items/tiny.parquet",
    "results/simulated/tiny/responses.parquet",
    "results/simulated/tiny/truth_items.parquet",
    "results/responses/tiny.parquet",
    "results/responses/tiny.dropped.csv",
    "results/responses/tiny.stats.json",
    "results/irt/tiny/items.parquet",
    "results/irt/tiny/models.parquet",
    "results/irt/tiny/heldout.parquet",
    "results/irt/tiny/fit.json",
    "results/bins/tiny/bins.parquet",
    "results/bins/tiny/summary.csv",
    "results/bins/tiny/stability.csv",
] + [f"results/figures/tiny/difficulty/{f}.png" for f in ("histogram", "bin_accuracy", "calibration", "spearman", "truth")]


def test_every_declared_output_exists(small_run):
    for rel in EXPECTED:
        p = small_run / rel
        assert p.exists() and p.stat().st_size > 0, rel
    for rel in EXPECTED:
        if rel.endswith(".png"):
            assert (small_run / rel).stat().st_size > 10_000, f"{rel} looks empty"
    bins = pl.read_parquet(small_run / "results/bins/tiny/bins.parquet")
    assert sorted(bins.group_by("bin").len()["len"].to_list()) == [50, 50, 50] or bins.height < 150
    dropped = pl.read_csv(small_run / "results/responses/tiny.dropped.csv")
    assert (dropped["reason"] == "duplicate_model").sum() == 2
    stability = pl.read_csv(small_run / "results/bins/tiny/stability.csv")
    assert stability["comparison"].to_list() == ["seed4", "py-irt-compatible"]
    assert ((stability["share_changed_bin"] >= 0) & (stability["share_changed_bin"] <= 1)).all()
    logs = list((small_run / "logs").rglob("*.log"))
    assert len(logs) >= 10


def test_second_run_is_noop(small_run):
    proc = snakemake(small_run, "-n", "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_deleted_bin_table_reruns_only_its_dependents(small_run):
    target = small_run / "results/bins/tiny/bins.parquet"
    target.unlink()
    jobs = planned_jobs(snakemake(small_run, "-n", "--cores", "2", "results/bins/tiny/bins.parquet"))
    assert jobs == {"make_bins": 1}, jobs
    jobs = planned_jobs(snakemake(small_run, "-n", "--cores", "2"))
    assert set(jobs) == {"make_bins", "difficulty_histogram", "difficulty_bin_accuracy", "all"}, jobs
    snakemake(small_run, "--cores", "2", "results/bins/tiny/bins.parquet")
    assert target.exists()


def test_report_is_built(small_run):
    snakemake(small_run, "--report", "results/report.html")
    html = (small_run / "results/report.html").read_text(errors="replace")
    assert "histogram.png" in html and "calibration.png" in html


def test_configfile_replaces_the_embedded_default(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(SMALL)
    proc = snakemake(REPO, "-n", "-p", "--cores", "1", "--configfile", str(own), "--config", "irt={engine: py-irt-compatible}")
    out = proc.stdout + proc.stderr
    assert "results/items/tiny.parquet" in out
    assert '"engine": "py-irt-compatible"' in out  # --config still overrides a key of the given file
    assert '"holdout_fraction": 0.05' in out  # ... and the file's other irt keys (and defaults) stay
    assert "arith" not in out and "tiny-arith" not in out  # the default's dataset and model are gone


def test_bad_config_stops_with_key_name(tmp_path):
    wd = make_workdir(tmp_path, SMALL.replace("bins: {n_bins: 3}", "bins: {n_bin: 3}"))
    proc = snakemake(wd, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "bins.n_bin" in proc.stdout + proc.stderr


def test_lint_is_clean_but_the_justified_conda_lint():
    proc = snakemake(REPO, "--lint", check=False)
    out = proc.stdout + proc.stderr
    lints = {line.strip() for line in out.splitlines() if line.startswith("    * ")}
    # justified in the Snakefile header: one pinned environment for every rule
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, lints
    assert "Lints for snakefile" not in out, out
