"""config/designs/hase2024_demo.yaml end to end, at a smaller size: Hase et al. 2024's protocol on the embedded
default, its design by name (study.protocol: hase2024: three quantile levels, shared-demonstration ICL, linear
probes, fine-tuning, SGR) beside Kordi et al.'s summary, with the report's front page showing both."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml

from conftest import REPO, make_workdir, snakemake


def _demo_config() -> str:
    cfg = yaml.safe_load((REPO / "config/designs/hase2024_demo.yaml").read_text())
    arith = cfg["datasets"]["arith"]
    arith["items"]["n_items"] = 300
    arith["responses"]["n_models"] = 120
    cfg["models"][0]["build_settings"].update({"hidden_size": 64, "num_layers": 2, "warmup_problems": 1000,
                                                "warmup_steps": 120, "eval_items": 0})
    cfg["finetune"].update({"num_train_epochs": 1, "save_steps": 20})
    cfg["study"]["icl"]["n_bootstrap"] = 3
    cfg["aggregate"] = {"n_boot": 200}
    cfg["summary"] = {**cfg["summary"], "n_boot": 200, "sgr": {**cfg["summary"]["sgr"], "n_boot": 500}}
    return yaml.safe_dump(cfg, sort_keys=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("hase2024_demo"), _demo_config())
    snakemake(wd, "--cores", "2", timeout=1200)
    return wd


def test_the_protocol_by_name_resolves_to_their_design():
    from crossdiff.config import load
    from crossdiff.plan.settings import Plan

    plan = Plan(load(REPO / "config/designs/hase2024_demo.yaml"))
    c = plan.config
    assert c["study"]["protocol"] == "hase2024" and (c["bins"]["scheme"], c["bins"]["edges"]) == ("quantiles", [0.3, 0.7])
    assert c["study"]["methods"] == ["sft", "icl", "probe"] and c["finetune"]["preset"] is None  # the design's own
    icl = plan.icl("arith")
    assert (icl["protocol"], icl["n_bootstrap"], icl["prompt_id"], icl["k"], icl["seed"]) == ("shared", 5, "0040", 2, 1234)
    assert plan.sgr()["hard"] == 2


def test_three_quantile_levels_and_shared_demonstrations(demo):
    bins = pl.read_parquet(demo / "results/bins/arith/bins.parquet")
    sizes = bins.group_by("bin").len().sort("bin")["len"].to_list()
    assert len(sizes) == 3 and sizes[1] > sizes[0] * 1.1 and sizes[1] > sizes[2] * 1.1  # 30% / 40% / 30%, ties outward
    base = demo / "results/eval/tiny-arith/arith"
    for b in range(3):
        training = set(bins.filter((pl.col("bin") == b) & ~pl.col("heldout"))["item_id"])
        sets = None
        for t in range(3):
            rec = json.loads((base / f"icl-k2-train{b}/bin{t}.json").read_text())
            icl = rec["icl"]
            assert icl["protocol"] == "shared" and icl["k"] == 2 and len(icl["bootstrap_values"]) == 3
            sets = sets or icl["demonstrations"]
            assert icl["demonstrations"] == sets  # one set per bootstrap for every test bin
            tested = {json.loads(x)["item_id"] for x in (base / f"icl-k2-train{b}/bin{t}.samples.jsonl").read_text().splitlines()}
            assert not tested & {i for d in sets for i in d}  # never the test item
            assert rec["value"] == pytest.approx(np.mean(icl["bootstrap_values"]))  # same held-out items each bootstrap
        assert all(set(d) <= training for d in sets) and len({tuple(d) for d in sets}) == 3
    assert "loaded model 1 time(s) in this process" in (demo / "logs/evaluate/tiny-arith/arith/icl.log").read_text()


def test_sgr_table_matches_the_results_table(demo):
    table = pl.read_parquet(demo / "results/tables/results.parquet")
    sgr = pl.read_csv(demo / "results/tables/sgr.csv")
    assert sorted(set(sgr["method"])) == ["icl-k2", "probe", "sft"] and sgr.height == 9
    for r in sgr.iter_rows(named=True):
        def value(method, train, t=r["test_bin"]):
            part = table.filter((pl.col("method") == method) & (pl.col("test_bin") == t)
                                & (pl.col("train_bin") == train))
            assert part.height == 1
            return part["value"][0]

        u, e, h = value("zero-shot", "zero-shot"), value(r["method"], "0"), value(r["method"], "2")
        # the runs each cell's interval resamples: ICL's demonstration bootstraps, the probes' bootstraps
        assert r["n_runs_easy"] == r["n_runs_hard"] == {"sft": 1, "icl-k2": 3, "probe": 5}[r["method"]]
        assert (r["unsupervised"], r["easy"], r["hard"]) == pytest.approx((u, e, h))
        if h != u:
            assert r["sgr"] == pytest.approx((e - u) / (h - u))
        if r["sgr_status"] in ("ok", "negative_gap"):
            assert r["sgr_lo"] <= r["sgr"] <= r["sgr_hi"]
            assert (r["gap_lo"] > 0) == (r["sgr_status"] == "ok") and (r["gap_hi"] < 0) == (r["sgr_status"] == "negative_gap")
        else:
            assert r["sgr_lo"] is None and r["sgr_status"] in ("gap_interval_includes_0", "zero_gap")
    assert (demo / "results/figures/sgr.png").stat().st_size > 10_000
    summary = pl.read_csv(demo / "results/tables/summary.csv")  # Kordi et al.'s numbers, one row per method
    assert sorted(summary["method"]) == ["icl-k2", "probe", "sft"] and summary["slope"].is_not_null().all()


def test_report_front_page_shows_sgr_beside_the_gain_heatmaps(demo):
    text = (demo / "results/summary/sgr.rst").read_text()
    assert "Supervision Gap Recovered (Hase et al. 2024)" in text and "icl-k2" in text
    snakemake(demo, "--report", "results/report.html", timeout=600)
    html = (demo / "results/report.html").read_text(errors="replace")
    assert "Supervision Gap Recovered" in html and "The answer in numbers" in html
