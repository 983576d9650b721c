"""IFEval adapter on a local copy in google/IFEval's schema; scoring by lm-eval's own instruction checkers."""

import json

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.items.adapters import load_items, prepare_items, prompt_for
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.scoring import score_output

from conftest import REPO
from test_paper_formats import CannedLM, _run, _task

FIX = REPO / "tests" / "fixtures" / "datasets"
SETTINGS = {"source": "hub", "adapter": "ifeval", "path": str(FIX / "ifeval.jsonl"),
            "solutions": {"path": str(FIX / "ifeval_answers.csv"), "column": "answer", "key": "item_id"}}


def _items():
    prompt = prompt_for(SETTINGS, None)
    items = {r["item_id"]: r for r in prepare_items(SETTINGS, "ifeval").to_dicts()}
    return items, PromptFormat.from_config(prompt), prompt


def test_items_keep_the_checkers_inputs_and_features():
    items, fmt, _ = _items()
    assert list(items) == ["0", "1", "2"] and items["1"]["key"] == 1001
    assert json.loads(items["1"]["instruction_id_list"]) == ["length_constraints:number_words",
                                                             "change_case:english_lowercase"]
    assert json.loads(items["1"]["kwargs"]) == [{"relation": "less than", "num_words": 20}, {}]  # Nones dropped
    assert items["1"]["n_instructions"] == 2 and items["1"]["instruction_types"] == "change_case,length_constraints"
    assert items["1"]["n_instruction_types"] == 2 and items["0"]["n_instruction_types"] == 1


def test_prompt_is_the_authors_and_target_comes_from_solutions():
    items, fmt, _ = _items()
    rec = fmt.sft_record(items["0"])
    # the authors' process_ifeval_example: user_prompt = example['prompt'], answer = example['answer']
    assert rec["user"] == "Write a short note about cats. Do not use any commas in your response."
    assert rec["assistant"] == "Cats nap in the sun and purr softly."
    cfg = fmt.task_config("t", "/abs/data.jsonl")
    assert cfg["generation_kwargs"] == {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 1280,
                                        "repetition_penalty": 1.0}  # crossdiff sets the whole decoding (issue 19)
    assert fmt.filter_name == "prompt_level_strict"
    bare = {k: v for k, v in SETTINGS.items() if k != "solutions"}
    item = load_items("ifeval", bare).to_dicts()[0]
    with pytest.raises(CrossdiffError, match="model_solution"):
        fmt.sft_record(item)  # no solutions source: a loud stop, not an empty target


def test_lm_eval_checkers_score_a_following_and_a_breaking_response(tmp_path):
    items, fmt, prompt = _items()
    task = _task(tmp_path, "ifeval", items, fmt, prompt)
    outputs = {"0": "Cats nap in the sun and purr softly.",                 # no comma: follows
               "1": "The Sky Glows Orange, Then Fades To Quiet Violet.",    # not lowercase: breaks one of two
               "2": "Sure:\n\"Soft rain on the roof\""}                      # quoted only after the first line
    lm = CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {})
    record, samples = _run(tmp_path, task, lm)
    assert {k: s["correct"] for k, s in samples.items()} == {"0": 1, "1": 0, "2": 0}
    assert samples["2"]["correct_by_filter"] == {"prompt_level_loose": 1}  # loose drops the first line
    assert record["filter"] == "prompt_level_strict" and record["value"] == pytest.approx(1 / 3)
    assert record["other_metrics"]["exact_match,prompt_level_loose"] == pytest.approx(2 / 3)
    # the same verdicts outside lm-eval's loop (show-prompt's path)
    assert score_output(fmt, items["1"], outputs["1"])["correct"] == 0
    assert score_output(fmt, items["1"], outputs["1"].lower())["correct"] == 1


def test_details_records_give_the_docs_in_doc_id_order(tmp_path):
    rows = [json.loads(line) for line in (FIX / "ifeval.jsonl").read_text().splitlines()]
    path = tmp_path / "samples_leaderboard_ifeval_x.jsonl"
    path.write_text("".join(json.dumps({"doc_id": i, "doc": rows[i], "prompt_level_strict_acc": True}) + "\n"
                            for i in (2, 0, 1)))
    items = load_items("ifeval", {"path": str(path)})
    assert items["key"].to_list() == [1000, 1001, 1005] and items["item_id"].to_list() == ["0", "1", "2"]


def test_instruction_level_correctness_is_the_fraction_followed():
    from crossdiff.responses.importers import correctness

    assert correctness([True, False], "inst_level_strict_acc", 0.5, "x") == 1
    assert correctness([True, False], "inst_level_strict_acc", 1.0, "x") == 0
    assert correctness(False, "prompt_level_strict_acc", 0.5, "x") == 0


def test_collector_reads_prompt_level_correctness_from_leaderboard_samples(tmp_path):
    from crossdiff.responses.details import extract_v2, select_files
    from crossdiff.responses.lb_settings import parse_settings

    s = parse_settings({"version": "v2", "task": "leaderboard_ifeval", "metric": "prompt_level_strict_acc"})
    name = "samples_leaderboard_ifeval_2024-06-26T10-00-00.123.jsonl"
    assert {k: v[1] for k, v in select_files([f"org__m/{name}"], s).items()} == {"": f"org__m/{name}"}
    path = tmp_path / name
    path.write_text("".join(json.dumps({"doc_id": i, "doc": {}, "prompt_level_strict_acc": v,
                                        "inst_level_strict_acc": [v, True]}) + "\n"
                            for i, v in ((1, False), (0, True))))
    assert sorted(extract_v2(path, "", s)) == [("0", 1), ("1", 0)]
    inst = parse_settings({"version": "v2", "task": "leaderboard_ifeval", "metric": "inst_level_strict_acc",
                           "threshold": 0.5})
    assert sorted(extract_v2(path, "", inst)) == [("0", 1), ("1", 1)]  # half its instructions followed


def test_show_prompt_renders_and_scores_an_ifeval_item(tmp_path):
    from conftest import crossdiff_cli

    prepare_items(SETTINGS, "ifeval").write_parquet(tmp_path / "i.parquet")
    proc = crossdiff_cli("show-prompt", "--items", str(tmp_path / "i.parquet"), "--adapter", "ifeval", "--item", "0",
                         "--output", "Cats purr, then nap.", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"]["completion"] == " Cats nap in the sun and purr softly."
    assert info["verdict"]["filters"]["prompt_level_strict"] == {"prediction": "0", "correct": 0}  # a comma
