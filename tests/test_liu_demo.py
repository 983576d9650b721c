"""config/designs/liu2026_demo.yaml end to end, at reduced sizes (issue 28): corpora without responses binned by
operation count, SFT and DFT side by side at two n, every checkpoint scored on its own held-out slices and on a
second generated benchmark (test_on), the optimum per n in the tables, the figure and the report."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from conftest import REPO, crossdiff_cli, make_workdir, snakemake


def reduced() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "designs" / "liu2026_demo.yaml").read_text())
    cfg["datasets"]["arith"]["items"]["n_items"] = 240
    cfg["datasets"]["arith_long"]["items"]["n_items"] = 180
    cfg["study"]["train_sizes"] = [8, 24]
    cfg["models"][0]["build_settings"].update({"hidden_size": 64, "num_layers": 2, "warmup_problems": 1000,
                                               "warmup_steps": 60, "eval_items": 0})
    cfg["finetune"].update({"num_train_epochs": 2})
    cfg["aggregate"] = {"n_boot": 200}
    cfg["summary"] = {"n_boot": 200}
    return cfg


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = reduced()
    wd = make_workdir(tmp_path_factory.mktemp("liu"), yaml.safe_dump(cfg, sort_keys=False))
    snakemake(wd, "--cores", "2", timeout=1500)
    return wd, cfg


def test_no_responses_no_irt_and_bins_by_operation_count(demo):
    wd, _ = demo
    assert not (wd / "results/irt").exists() and not (wd / "results/responses").exists()
    bins = pl.read_parquet(wd / "results/bins/arith/bins.parquet")
    ops = {b: sorted(set(bins.filter(pl.col("bin") == b)["measure"].cast(int))) for b in range(3)}
    assert ops == {0: [2], 1: [3, 4], 2: [5, 6]}  # cutoffs [2.5, 4.5] on n_ops
    assert (bins["difficulty"] == bins["measure"]).all()  # no IRT: the measure is the difficulty


def test_results_and_summary_carry_test_dataset(demo):
    wd, _ = demo
    table = pl.read_parquet(wd / "results/tables/results.parquet")
    cross = table.filter(pl.col("test_dataset") == "arith_long")
    tuned = cross.filter(pl.col("train_bin") != "zero-shot")
    # 3 buckets x 2 sizes x {sft, dft} checkpoints, each on the 3 slices of arith_long
    assert tuned.height == 3 * 2 * 2 * 3 and set(tuned["dataset"]) == {"arith"}
    assert sorted(set(tuned["method"])) == ["dft", "sft"]
    zs = table.filter((pl.col("dataset") == "arith_long") & (pl.col("train_bin") == "zero-shot")).sort("test_bin")
    base = dict(zip(zs["test_bin"], zs["value"]))
    assert all(abs(r["zero_shot"] - base[r["test_bin"]]) < 1e-12 for r in tuned.iter_rows(named=True))
    summary = pl.read_csv(wd / "results/tables/summary.csv")
    assert {"arith", "arith_long"} == set(summary["test_dataset"]) and set(summary["method"]) == {"sft", "dft"}
    for sub in ("tiny-arith", "dft/tiny-arith"):
        for kind in ("accuracy", "gain"):
            assert (wd / f"results/figures/arith/on-arith_long/{sub}/{kind}.png").stat().st_size > 5_000


def test_a_cross_dataset_cell_equals_scoring_the_checkpoint_on_that_bin_directly(demo, tmp_path):
    from crossdiff.config import validate
    from crossdiff.plan.settings import Plan

    wd, cfg = demo
    cell = wd / "results/eval/tiny-arith/arith/dft-train2-n24/on-arith_long/bin1.json"
    rec = json.loads(cell.read_text())
    assert rec["train_dataset"] == "arith" and rec["dataset"] == "arith_long" and rec["train_bin"] == "dft-2-n24"
    settings = Plan(validate(cfg)).evaluate("arith_long", "tiny-arith")
    out = tmp_path / "direct.json"
    proc = crossdiff_cli("evaluate", "--model", str(wd / "results/finetune/tiny-arith/arith/dft-bin2-n24"),
                         "--tasks", str(wd / "results/tasks/arith_long/bin1"), "--outputs", str(out),
                         "--settings", json.dumps(settings), "--model-name", "tiny-arith", "--train-bin", "dft-2-n24")
    assert proc.returncode == 0, proc.stderr[-3000:]
    direct = json.loads(out.read_text())
    assert direct["value"] == rec["value"] and direct["n_items"] == rec["n_items"] == 15  # 60 items, 25% held out
    samples = [json.loads(x) for x in (cell.parent / "bin1.samples.jsonl").read_text().splitlines()]
    mine = [json.loads(x) for x in out.with_name("direct.samples.jsonl").read_text().splitlines()]
    assert [(s["item_id"], s["correct"]) for s in samples] == [(s["item_id"], s["correct"]) for s in mine]


def test_dft_runs_trained_with_trls_dft_loss(demo):
    wd, _ = demo
    for run, loss in (("bin0-n8", "sft"), ("dft-bin0-n8", "dft"), ("dft-bin2-n24", "dft")):
        m = json.loads((wd / f"results/finetune/tiny-arith/arith/{run}/train_metrics.json").read_text())
        assert m["settings"]["loss"] == loss and m["n_examples"] == int(run.rsplit("-n", 1)[1])


def test_optimum_per_n_tables_figure_and_report(demo):
    wd, _ = demo
    per_n = pl.read_csv(wd / "results/tables/optimum_by_n.csv",  # an all-tie column is empty: read it as bins
                        schema_overrides={"best_train_bin": pl.Int64, "tied_train_bins": pl.String})
    assert per_n.height == 2 * 2 * 2  # test datasets x methods x n
    assert sorted(set(per_n["train_size"])) == [8, 24]
    ok = per_n.filter(pl.col("best_train_bin").is_not_null())
    assert ((ok["best_lo"] <= ok["best_train_bin"]) & (ok["best_train_bin"] <= ok["best_hi"])).all()
    ties = per_n.filter(pl.col("best_train_bin").is_null())  # a tie names its bins (at least two)
    assert all(len(t.split()) >= 2 for t in ties["tied_train_bins"]), ties
    shift = pl.read_csv(wd / "results/tables/optimum_shift.csv")
    assert shift.height == 4 and set(shift["verdict"]) <= {"harder with n", "easier with n", "no clear shift"}
    assert ((shift["shift_lo"] <= shift["shift"] + 1e-9) & (shift["shift"] <= shift["shift_hi"] + 1e-9)).all()
    assert (wd / "results/figures/optimum_by_n.png").stat().st_size > 20_000
    snakemake(wd, "--report", "results/report.html")
    html = (wd / "results/report.html").read_text(errors="replace")
    assert "The optimal training difficulty per n" in html and "tested on <strong>arith_long</strong>" in html
