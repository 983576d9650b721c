"""The embedded default shows the paper's effect: positive gains near the diagonal that fade with the gap.

One end-to-end run of the embedded default (config/config.yaml) with the bin-stability replicate
fits switched off (they only feed the difficulty half's stability table and cost a py-irt fit);
the study itself (items, leaderboard, base model, fine-tuning, evaluation) is the default's.
"""

import polars as pl
import pytest
import yaml
from scipy.stats import spearmanr

from conftest import REPO, make_workdir, snakemake


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["irt"]["stability"] = {"seeds": [], "engines": []}
    wd = make_workdir(tmp_path_factory.mktemp("demo"), yaml.safe_dump(config, sort_keys=False))
    snakemake(wd, "--cores", "2", timeout=1500)
    return wd


def test_gain_heatmap_shows_the_effect(demo):
    table = pl.read_parquet(demo / "results/tables/results.parquet")
    ft = table.filter(pl.col("train_bin") != "zero-shot")
    held_out = "heldout" in pl.read_parquet(demo / "results/bins/arith/bins.parquet").columns
    # without held-out items the diagonal is trained-on data: only off-diagonal cells count
    near = ft.filter((pl.col("bin_gap").abs() <= 1) & ((pl.col("bin_gap") != 0) | held_out))
    assert near.filter(pl.col("significant") & (pl.col("gain") > 0)).height >= 1, near
    summary = pl.read_csv(demo / "results/tables/summary.csv").row(0, named=True)
    assert summary["slope"] < 0 and summary["slope_hi"] < 0, summary
    assert summary["near_gain"] > summary["far_gain"], summary
    # the zero-shot model finds the bins harder and harder, as the leaderboard did
    zs = table.filter(pl.col("train_bin") == "zero-shot").sort("test_bin")["value"].to_list()
    assert spearmanr(range(len(zs)), zs)[0] <= -0.9 and zs[0] - zs[-1] >= 0.3, zs
    # held-out items (bins.holdout_fraction): the diagonal is a real in-distribution number, and positive
    if held_out:
        diagonal = ft.filter(pl.col("bin_gap") == 0)
        assert diagonal.height == 10 and diagonal["gain"].mean() > 0, diagonal


def test_report_opens_with_the_numbers(demo):
    snakemake(demo, "--report", "results/report.html")
    html = (demo / "results/report.html").read_text(errors="replace")
    assert "The answer in numbers" in html and "per bin of train/test difficulty gap" in html
    assert "data:image/png;base64," in html and "summary.png" in html
