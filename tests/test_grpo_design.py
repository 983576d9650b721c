"""config/designs/grpo.yaml end to end at reduced sizes (one shared study): SFT and GRPO side by side in the results
table, heatmaps, summary and report, with the GRPO jobs' diagnostics; and config/grpo_math.yaml plans offline."""

import json

import polars as pl
import pytest
import yaml

from conftest import REPO, make_workdir, snakemake


def _reduced() -> str:
    cfg = yaml.safe_load((REPO / "config/designs/grpo.yaml").read_text())
    cfg["datasets"]["arith"]["items"]["n_items"] = 90
    cfg["datasets"]["arith"]["responses"]["n_models"] = 60
    # a base model that gets some sums right (sampled at temperature 1), so that GRPO's groups carry signal
    cfg["models"][0]["build_settings"].update({"warmup_problems": 1500, "warmup_steps": 120})
    cfg["study"]["train_sizes"] = [8]  # bins of 30 items: 15 to train on
    cfg["finetune"].update({"num_train_epochs": 1})
    cfg["grpo"].update({"max_steps": 3, "num_generations": 4, "per_device_train_batch_size": 16})
    cfg["aggregate"] = {"n_boot": 200}
    cfg["summary"] = {"n_boot": 200}
    return yaml.safe_dump(cfg)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("grpo_design"), _reduced())
    snakemake(wd, "--cores", "2", timeout=900)
    return wd


def test_sft_and_grpo_side_by_side(study):
    table = pl.read_parquet(study / "results/tables/results.parquet")
    assert sorted(set(table["method"])) == ["grpo", "sft", "zero-shot"]
    for m in ("sft", "grpo"):
        part = table.filter(pl.col("method") == m)
        assert part.height == 9 and sorted(set(part["train_bin"])) == ["0-n8", "1-n8", "2-n8"]
        assert part["gain_lo"].null_count() == 0 and ((part["gain_lo"] <= part["gain"]) & (part["gain"] <= part["gain_hi"])).all()
    summary = pl.read_csv(study / "results/tables/summary.csv")
    assert sorted(summary["method"].to_list()) == ["grpo", "sft"]
    for col in ("slope", "near_gain", "far_gain", "asymmetry"):
        assert col in summary.columns, summary.columns
    text = (study / "results/summary/summary.rst").read_text()
    assert text.index("method=sft") < text.index("method=grpo")
    assert text.count("data:image/png") == 2  # SFT's gain heatmap and GRPO's on the front page
    for name in ("tiny-arith/gain.png", "grpo/tiny-arith/gain.png", "grpo/tiny-arith/accuracy.png"):
        assert (study / "results/figures/arith" / name).stat().st_size > 10_000, name


def test_grpo_jobs_record_their_diagnostics(study):
    diag = pl.read_csv(study / "results/tables/grpo_diagnostics.csv")
    assert diag["run"].to_list() == ["grpo-bin0-n8", "grpo-bin1-n8", "grpo-bin2-n8"] and (diag["steps"] == 3).all()
    assert (study / "results/figures/grpo_reward_curves.png").stat().st_size > 10_000
    assert diag["reward_mean"].max() > 0 and diag["learnable_share"].max() > 0  # rewards to learn from
    for b in range(3):
        m = json.loads((study / f"results/finetune/tiny-arith/arith/grpo-bin{b}-n8/train_metrics.json").read_text())
        assert [c["step"] for c in m["reward_curve"]] == [1, 2, 3] and 0 <= m["learnable_share"] <= 1
        groups = (study / f"results/finetune/tiny-arith/arith/grpo-bin{b}-n8/reward_groups.jsonl").read_text().splitlines()
        assert len(groups) == 3 * 4  # 3 steps x 4 prompts (16 completions in groups of 4)
        assert m["n_examples"] == 8 and {json.loads(g)["item_id"] for g in groups} <= set(
            json.loads(x)["item_id"] for x in (study / f"results/sft/arith/bin{b}-n8.jsonl").read_text().splitlines())
    log = (study / "logs/evaluate/tiny-arith/arith/grpo-train1-n8.log").read_text()
    assert "loaded model 1 time(s) in this process" in log


def test_paper_scale_grpo_config_plans_offline(tmp_path):
    proc = snakemake(tmp_path, "--configfile", str(REPO / "config/grpo_math.yaml"), "-n", "--cores", "1",
                     env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    out = proc.stdout + proc.stderr
    assert "finetune_grpo" in out and "pass_rate_measure" in out


def test_an_e2h_scheduled_set_runs_through_the_dag(study):
    """A train set with E2H's classic schedule, on the shared study's data and base model: one GRPO job draws one
    level per generation round, easiest first, and is scored on every held-out bin."""
    cfg = yaml.safe_load(_reduced())
    cfg["study"] = {"methods": ["grpo"], "train_sizes": [8], "train_sets": {"e2h": {"bins": "all", "schedule": "classic"}}}
    (study / "config" / "e2h.yaml").write_text(yaml.safe_dump(cfg))
    run = "grpo-set-e2h-n8"
    targets = [f"results/eval/tiny-arith/arith/{run}/bin{t}.json" for t in range(3)]
    snakemake(study, "--configfile", str(study / "config" / "e2h.yaml"), "--cores", "2", *targets)
    m = json.loads((study / f"results/finetune/tiny-arith/arith/{run}/train_metrics.json").read_text())
    data = [json.loads(x) for x in (study / "results/sft/arith/set-e2h-n8.jsonl").read_text().splitlines()]
    assert sorted(r["bin"] for r in data) == [0, 0, 0, 1, 1, 1, 2, 2]  # equal shares of 8, easier bins first
    assert m["schedule"]["name"] == "classic" and m["schedule"]["rounds"] == 3 == m["global_step"]
    assert m["schedule"]["prompts_per_level"] == [3, 3, 2] and m["settings"]["schedule"] == "classic"
    assert [c["mean_level"] for c in m["level_curve"]] == [0, 1, 2]  # 4 prompts per round, one level each
    for t in range(3):
        rec = json.loads((study / f"results/eval/tiny-arith/arith/{run}/bin{t}.json").read_text())
        assert rec["train_bin"] == "grpo-set-e2h-n8" and rec["n_items"] == 15
