"""MATH training targets from another source: a table of per-item solutions keyed by item id or question."""

import json

import polars as pl
import pytest

from crossdiff.items.adapters import prepare_items, prompt_for
from crossdiff.errors import CrossdiffError
from crossdiff.prompts.format import PromptFormat

from conftest import REPO

MATH = str(REPO / "tests" / "fixtures" / "datasets" / "math")
IDS = ["algebra_hard/0", "algebra_hard/1", "num_theory_hard/0"]


def _settings(tmp_path, rows, **spec):
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"source": "hub", "adapter": "math", "path": MATH, "subtasks": ["algebra", "number_theory"],
            "solutions": {"path": str(path), **spec}}


def test_solutions_by_item_id_become_the_training_target(tmp_path):
    rows = [{"item_id": i, "model_solution": f"Model solution {n}: $\\boxed{{{n}}}$"} for n, i in enumerate(IDS)]
    settings = _settings(tmp_path, rows)
    items = prepare_items(settings, "math")
    assert items["model_solution"].to_list() == [r["model_solution"] for r in rows]
    fmt = PromptFormat.from_config(prompt_for(settings, {"target": " {model_solution}"}))
    rec = fmt.sft_record(items.to_dicts()[1])
    assert rec["assistant"] == "Model solution 1: $\\boxed{1}$" and rec["user"].startswith("Problem:\nFind the sum")


def test_solutions_by_question_text_ignore_whitespace(tmp_path):
    items = prepare_items({"source": "hub", "adapter": "math", "path": MATH, "subtasks": ["algebra", "number_theory"]}, "m")
    rows = [{"question": "  " + q.replace(" ", "  ") + "\n", "answer_text": f"S{n}"} for n, q in enumerate(items["question"])]
    got = prepare_items(_settings(tmp_path, rows, key="question", column="answer_text"), "math")
    assert got["model_solution"].to_list() == ["S0", "S1", "S2"]


def test_missing_duplicated_and_misnamed_solutions_are_errors(tmp_path):
    rows = [{"item_id": i, "model_solution": "x"} for i in IDS[:2]]
    with pytest.raises(CrossdiffError, match=r"datasets\.math\.items\.solutions: 1 of 3 item\(s\) have no solution in "
                                             r".*solutions\.jsonl \(matched on item_id = item_id\), e\.g\. item\(s\) \['num_theory_hard/0'\]"):
        prepare_items(_settings(tmp_path, rows), "math")
    with pytest.raises(CrossdiffError, match=r"1 duplicated key\(s\).*algebra_hard/0"):
        prepare_items(_settings(tmp_path, [*rows, rows[0], {"item_id": IDS[2], "model_solution": "y"}]), "math")
    with pytest.raises(CrossdiffError, match=r"has no column 'solution'; columns: \['item_id', 'model_solution'\]"):
        prepare_items(_settings(tmp_path, rows, column="solution"), "math")


def test_solutions_from_a_parquet_table(tmp_path):
    pl.DataFrame({"id": IDS, "sol": ["a", "b", "c"]}).write_parquet(tmp_path / "s.parquet")
    settings = {"source": "hub", "adapter": "math", "path": MATH, "subtasks": ["algebra", "number_theory"],
                "solutions": {"path": str(tmp_path / "s.parquet"), "column": "sol", "key_column": "id"}}
    assert prepare_items(settings, "math")["model_solution"].to_list() == ["a", "b", "c"]
