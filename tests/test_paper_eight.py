"""config/paper.yaml's commented GPQA-Extended and IFEval entries, uncommented, make a valid eight-dataset config."""

import re

import yaml

from crossdiff.config import validate

from conftest import REPO


def test_uncommented_paper_config_has_the_authors_eight_benchmarks():
    text = (REPO / "config" / "paper.yaml").read_text()
    # uncomment exactly the dataset blocks: "  # name:" and their "  #   key: ..." lines
    text = re.sub(r"^  # (gpqa_extended|ifeval):$", r"  \1:", text, flags=re.M)
    text = re.sub(r"^  #   ", "    ", text, flags=re.M)
    config = yaml.safe_load(text)
    assert list(config["datasets"]) == ["arc", "gsm8k", "mmlu_pro", "bbh", "math", "musr", "gpqa_extended", "ifeval"]
    out = validate(config)
    assert out["datasets"]["gpqa_extended"]["responses"]["task"] == "leaderboard_gpqa_extended"
    assert out["datasets"]["ifeval"]["items"]["solutions"]["column"] == "answer"
    assert out["datasets"]["ifeval"]["responses"]["metric"] == "prompt_level_strict_acc"
