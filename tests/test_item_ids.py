"""Item ids equal what the leaderboard's real files carry, for every subtask of every adapter."""

import polars as pl

from crossdiff.items.adapters import (ADAPTERS, LEADERBOARD_SUBTASK_FILES, LEADERBOARD_SUBTASK_SIZES, LEADERBOARD_TASKS,
                                     load_items, subtask_prefix)
from crossdiff.responses.details import select_files
from crossdiff.responses.lb_settings import parse_settings

from conftest import REPO

FIX = REPO / "tests" / "fixtures" / "datasets"

# The v2 details repos' sample file names (LEADERBOARD-FORMATS.md: lm-eval's tasks/leaderboard and the
# dataset cards of open-llm-leaderboard/*-details), written out here independently of the code's table.
REAL_FILES = {
    "math": ["leaderboard_math_algebra_hard", "leaderboard_math_counting_and_prob_hard", "leaderboard_math_geometry_hard",
             "leaderboard_math_intermediate_algebra_hard", "leaderboard_math_num_theory_hard",
             "leaderboard_math_prealgebra_hard", "leaderboard_math_precalculus_hard"],
    "musr": ["leaderboard_musr_murder_mysteries", "leaderboard_musr_object_placements", "leaderboard_musr_team_allocation"],
    "bbh": [f"leaderboard_bbh_{s}" for s in (
        "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "formal_fallacies",
        "geometric_shapes", "hyperbaton", "logical_deduction_five_objects", "logical_deduction_seven_objects",
        "logical_deduction_three_objects", "movie_recommendation", "navigate", "object_counting",
        "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names",
        "salient_translation_error_detection", "snarks", "sports_understanding", "temporal_sequences",
        "tracking_shuffled_objects_five_objects", "tracking_shuffled_objects_seven_objects",
        "tracking_shuffled_objects_three_objects", "web_of_lies")],
}


def test_subtask_file_table_covers_every_config_of_every_adapter():
    for name, adapter in ADAPTERS.items():
        if adapter.load is not None:  # its own loader names the ids (e.g. ARCCH_<id>); tests/test_hase_data.py
            continue
        if not adapter.subtask_in_id:
            assert adapter.configs == (None,) or len(adapter.configs) == 1, name
            continue
        table = LEADERBOARD_SUBTASK_FILES[name]
        assert set(table) == set(adapter.configs), name  # every HF config has its real file name
        assert sorted(table.values()) == sorted(REAL_FILES[name]), name
        assert all(f.startswith(LEADERBOARD_TASKS[name] + "_") for f in table.values())
    assert sum(LEADERBOARD_SUBTASK_SIZES["math"].values()) == 1324


def test_item_ids_are_what_the_collector_reads_from_the_real_file_names():
    for name, files in REAL_FILES.items():
        s = parse_settings({"version": "v2", "task": LEADERBOARD_TASKS[name], "subtasks": True, "metric": "acc_norm"})
        paths = [f"org__m/samples_{f}_2024-06-26T10-00-00.000001.jsonl" for f in files]
        labels = set(select_files(paths, s))  # the collector's item-id prefixes
        assert labels == {subtask_prefix(name, sub) for sub in ADAPTERS[name].configs}, name
    assert subtask_prefix("math", "counting_and_probability") == "counting_and_prob_hard"
    assert subtask_prefix("math", "number_theory") == "num_theory_hard"


def test_math_items_use_the_short_file_names(tmp_path):
    for sub in ("counting_and_probability", "number_theory"):
        (tmp_path / f"{sub}.jsonl").write_text(
            '{"problem": "p", "solution": "s \\\\boxed{1}", "level": "Level 5", "type": "x"}\n' * 2)
    df = load_items("math", {"path": str(tmp_path)})
    assert df["item_id"].to_list() == ["counting_and_prob_hard/0", "counting_and_prob_hard/1",
                                       "num_theory_hard/0", "num_theory_hard/1"]


def test_arc_item_table_keeps_the_native_id():
    df = load_items("arc", {"path": str(FIX / "arc.jsonl")})
    assert df["id"][0] == "Mercury_7175875" and df["item_id"][0] == "0"
    assert df.schema["id"] == pl.Utf8
