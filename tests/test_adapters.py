"""Benchmark adapters on local fixtures written in each dataset's real schema (no network)."""

import json

import polars as pl
import pytest

from crossdiff.items.adapters import ADAPTERS, load_items
from crossdiff.errors import CrossdiffError

from conftest import REPO, crossdiff_cli

FIX = REPO / "tests" / "fixtures" / "datasets"


def test_arc():
    df = load_items("arc", {"path": str(FIX / "arc.jsonl")})
    assert df["item_id"].to_list() == ["0", "1", "2", "3"]  # = the leaderboard's doc_id (row index)
    assert df["answer"].to_list() == ["2", "1", "2", "0"]  # index of answerKey among the labels, numeric labels too
    assert json.loads(df["choices"][0])[2] == "Planetary days will become shorter."
    assert {"n_choices", "question_words", "question_length"} <= set(df.columns)


def test_gsm8k_final_answer_and_steps():
    df = load_items("gsm8k", {"path": str(FIX / "gsm8k.jsonl")})
    assert df["answer"].to_list() == ["18", "3", "70000"]
    assert df["n_steps"].to_list() == [2, 2, 4] and df["n_calculations"].to_list() == [2, 2, 4]
    assert df["solution"][0].endswith("#### 18")


def test_mmlu_pro_keeps_category_and_ten_options():
    df = load_items("mmlu_pro", {"path": str(FIX / "mmlu_pro.jsonl")})
    assert df["answer"].to_list() == ["8", "5", "1"] and df["n_choices"].to_list() == [9, 10, 4]
    assert df["category"].to_list() == ["business", "business", "math"]


def test_bbh_subtasks_from_a_directory():
    df = load_items("bbh", {"path": str(FIX / "bbh"), "subtasks": ["boolean_expressions", "date_understanding"]})
    assert df["item_id"].to_list() == ["boolean_expressions/0", "boolean_expressions/1", "boolean_expressions/2",
                                       "date_understanding/0", "date_understanding/1"]
    assert df["answer"][3] == "(B)" and df["subtask"][4] == "date_understanding"


def test_math_keeps_level_5_and_extracts_boxed_answer():
    df = load_items("math", {"path": str(FIX / "math"), "subtasks": ["algebra", "number_theory"]})
    # the leaderboard's MATH-hard is level 5 only; doc ids count the kept rows
    assert df["answer"].to_list() == ["\\sqrt{2}", "5", "3"]
    assert df["item_id"].to_list() == ["algebra_hard/0", "algebra_hard/1", "num_theory_hard/0"]  # the file names
    assert df["level"].to_list() == [5, 5, 5] and df["subject"].to_list() == ["Algebra", "Algebra", "Number Theory"]


def test_musr_domains_and_string_choices():
    df = load_items("musr", {"path": str(FIX / "musr"), "subtasks": ["murder_mysteries", "team_allocation"]})
    assert df["item_id"].to_list() == ["murder_mysteries/0", "team_allocation/0"]
    assert json.loads(df["choices"][1])[2].startswith("Cooking: Carol") and df["answer"].to_list() == ["0", "2"]


def test_every_adapter_has_a_fixture_and_a_prompt():
    assert set(ADAPTERS) == {"arc", "gsm8k", "mmlu_pro", "bbh", "math", "musr", "gpqa_extended", "ifeval",
                             "arc_hase", "mmlu_stem5", "strategyqa"}  # Hase et al.'s: tests/test_hase_data.py
    for a in ADAPTERS.values():
        assert a.prompt, a.name


def test_bad_rows_name_file_row_and_schema(tmp_path):
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(CrossdiffError, match=r"gsm8k\.jsonl: gsm8k row 0: ValueError answer has no '#### <number>' line"):
        load_items("gsm8k", {"path": str(bad)})
    wrong = tmp_path / "arc.jsonl"
    wrong.write_text(json.dumps({"question": "q", "answer": "x"}) + "\n")
    with pytest.raises(CrossdiffError, match=r"arc row 0: KeyError 'choices'; expected the arc schema"):
        load_items("arc", {"path": str(wrong)})
    with pytest.raises(CrossdiffError, match=r"unknown bbh subtask\(s\) \['nope'\]"):
        load_items("bbh", {"path": str(FIX / "bbh"), "subtasks": ["nope"]})
    with pytest.raises(CrossdiffError, match="missing.jsonl: items file not found"):
        load_items("arc", {"path": str(tmp_path / "missing.jsonl")})


def test_cli_writes_item_table(tmp_path):
    out = tmp_path / "items.parquet"
    settings = {"source": "hub", "adapter": "gsm8k", "path": str(FIX / "gsm8k.jsonl")}
    proc = crossdiff_cli("prepare-items", "--settings", json.dumps(settings), "--dataset", "g", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(out).height == 3
    synthetic = {"source": "synthetic", "n_items": 30, "seed": 1}
    proc = crossdiff_cli("prepare-items", "--settings", json.dumps(synthetic), "--dataset", "ar", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(out)["item_id"][0] == "ar-00"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_prompt_renders_training_and_evaluation(name, tmp_path):
    """Each adapter's default format (used unless the config overrides it) renders its fixture items."""
    from crossdiff.items.adapters import prompt_for
    from crossdiff.evaluate.run import make_task
    from crossdiff.prompts.format import PromptFormat
    from crossdiff.study.sft_data import make_sft_data

    path = {"bbh": FIX / "bbh", "math": FIX / "math", "musr": FIX / "musr",
            "gpqa_extended": FIX / "gpqa_extended_samples.jsonl", "arc_hase": FIX / "hase" / "arc",
            "mmlu_stem5": FIX / "hase" / "mmlu", "strategyqa": FIX / "hase" / "strategyqa"}.get(name, FIX / f"{name}.jsonl")
    settings = {"source": "hub", "adapter": name, "path": str(path)}
    if name == "arc_hase":
        settings["annotations"] = {"path": str(FIX / "hase" / "arc-challenge-easy-annotations.json")}
    if name == "gpqa_extended":  # a 3-doc fixture of the 546-doc benchmark
        settings["allow_partial"] = True
    if name == "ifeval":  # no reference response: the target comes from items.solutions
        settings["solutions"] = {"path": str(FIX / "ifeval_answers.csv"), "column": "answer", "key": "item_id"}
    from crossdiff.items.adapters import prepare_items

    items = prepare_items(settings, name)
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "bins.parquet")
    prompt = prompt_for(settings, {"instruction": "Be brief.\n"})
    assert prompt["instruction"] == "Be brief.\n"  # the dataset's own keys win over the adapter's
    fmt = PromptFormat.from_config(prompt)
    assert fmt.scoring == ("multiple_choice" if name in ("arc", "musr", "gpqa_extended", "arc_hase", "mmlu_stem5",
                                                         "strategyqa") else "generation")
    meta = make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "task", name, prompt)
    assert meta["n_items"] == items.height and meta["scoring"] == fmt.scoring
    n = make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "sft.jsonl", prompt)
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert n == len(rows) == items.height and all(r["completion"].strip() for r in rows)
    if name == "mmlu_pro":
        assert rows[0]["completion"] == "I" and "I) Unsafe practices, Distress, Fear, Serious" in rows[0]["prompt"]
    if name == "gsm8k":
        assert rows[0]["completion"].endswith("market. So the answer is 18")
    if name == "math":
        assert fmt.checker == "math"


def test_hub_loading_offline_names_the_dataset(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CrossdiffError, match=r"cannot load allenai/ai2_arc \(config 'ARC-Challenge', split 'test'\) from the hub: .*set items\.path to a local copy"):
        load_items("arc", {"source": "hub"})
