"""config/paper.yaml plans exactly the paper's study (data sources replaced by local fixtures)."""

import re

import yaml

from conftest import REPO, make_workdir, snakemake

FIX = REPO / "tests" / "fixtures" / "datasets"
LOCAL_ITEMS = {"arc": FIX / "arc.jsonl", "gsm8k": FIX / "gsm8k.jsonl", "mmlu_pro": FIX / "mmlu_pro.jsonl",
               "bbh": FIX / "bbh", "math": FIX / "math", "musr": FIX / "musr"}


def test_paper_config_plans_one_job_per_model_dataset_bin(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert len(config["models"]) == 7 and set(config["datasets"]) == set(LOCAL_ITEMS)
    assert config["finetune"]["learning_rate"] == 5e-6 and config["finetune"]["num_train_epochs"] == 5
    responses = tmp_path / "responses.csv"
    responses.write_text("model_id,item_id,correct\nm,0,1\n")
    for name, ds in config["datasets"].items():
        assert ds["responses"]["source"] == "leaderboard"
        ds["items"]["path"] = str(LOCAL_ITEMS[name])
        ds["responses"] = {"source": "table", "path": str(responses)}
    wd = make_workdir(tmp_path / "wd", yaml.safe_dump(config))
    proc = snakemake(wd, "-n", "--cores", "8", "--quiet", "rules")
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)}
    assert counts["finetune"] == 7 * 6 * 10
    assert counts["evaluate_checkpoint"] == 7 * 6 * 10  # one cross-bin evaluation per checkpoint
    assert counts["evaluate_zero_shot"] == 7 * 6
    assert counts["make_task"] == 6 * 10
    # MATH trains on each model family's own solutions (models[].solutions.math): one SFT file per model
    assert counts["make_sft_data"] == 5 * 10 and counts["make_model_sft_data"] == 7 * 10
    assert counts["attach_model_solutions"] == 7
    families = {m["id"]: m["solutions"]["math"]["config"] for m in config["models"]}
    assert all(c == ("math-solutions__meta-llama_Llama-3.1-8B-Instruct" if i.startswith("meta-llama/")
                     else "math-solutions__Qwen_Qwen2.5-14B-Instruct") for i, c in families.items())
    assert counts["fit_irt"] == 6 and counts["prepare_items"] == 6
    assert "build_base_model" not in counts  # hub models are loaded, not built
