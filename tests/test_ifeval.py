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


# ------------------------------------------------------------------ issue 26: ids, order, unscorable items, punkt_tab
def _fixture_rows():
    return [json.loads(line) for line in (FIX / "ifeval.jsonl").read_text().splitlines()]


def _wis_k_layout(rows):
    """wis-k/instruction-following-eval's input_data.jsonl layout: kwargs dicts hold only the keys used."""
    return [{**r, "kwargs": [{k: v for k, v in kw.items() if v is not None} for kw in r["kwargs"]]} for r in rows]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_default_source_is_the_dataset_the_leaderboard_scored_and_both_layouts_read_alike(tmp_path):
    from crossdiff.items.adapters import ADAPTERS

    assert ADAPTERS["ifeval"].hub_id == "wis-k/instruction-following-eval"  # lm-eval's leaderboard_ifeval dataset_path
    google = load_items("ifeval", {"path": str(FIX / "ifeval.jsonl")})
    wis_k = load_items("ifeval", {"path": str(_write_jsonl(tmp_path / "input_data.jsonl", _wis_k_layout(_fixture_rows())))})
    assert google.to_dicts() == wis_k.to_dicts()


@pytest.mark.parametrize("change, pattern", [
    ({"key": None}, r"ifeval item 1: key is null"),                                           # was a TypeError
    ({"instruction_id_list": [], "kwargs": []}, r"ifeval item 1 \(key 1001\): instruction_id_list is \[\]: "
                                                r"an item without instructions would count any output"),
    ({"instruction_id_list": ["punctuation:no_comas"], "kwargs": [{}]},                        # was a KeyError at scoring
     r"ifeval item 1 \(key 1001\): instruction id\(s\) \['punctuation:no_comas'\] unknown to lm-eval's IFEval "
     r"checkers \(close: \['punctuation:no_comma'"),
])
def test_unscorable_items_are_refused_at_prepare_items_naming_the_item(tmp_path, change, pattern):
    rows = _fixture_rows()
    rows[1] = {**rows[1], **change}
    path = _write_jsonl(tmp_path / "ifeval.jsonl", rows)
    with pytest.raises(CrossdiffError, match=str(path).replace(".", r"\.") + ": " + pattern):
        prepare_items({"source": "hub", "adapter": "ifeval", "path": str(path)}, "ifeval")


def _samples_dir(tmp_path, docs):
    """An lm-eval --log_samples folder of one model whose samples carry the leaderboard's docs in doc-id order."""
    d = tmp_path / "samples" / "org__model"
    d.mkdir(parents=True)
    _write_jsonl(d / "samples_leaderboard_ifeval_2024-06-26T10-00-00.123.jsonl",
                 [{"doc_id": i, "doc": doc, "filter": "none", "prompt_level_strict_acc": i % 2 == 0}
                  for i, doc in enumerate(docs)])
    return d.parent


def test_responses_must_be_to_the_items_prompts(tmp_path):
    """Items from a copy in another order than the leaderboard's (google/IFEval vs wis-k): the samples' docs say
    so, and the import stops naming the file, the line and both keys; the same order imports."""
    from crossdiff.responses.build import build
    from crossdiff.responses.details import extract_v2
    from crossdiff.items.ifeval import doc_checker
    from crossdiff.responses.lb_settings import parse_settings

    leaderboard = _wis_k_layout(_fixture_rows())  # the docs as the leaderboard scored them
    samples = _samples_dir(tmp_path, leaderboard)
    settings = {"task": "leaderboard_ifeval", "metric": "prompt_level_strict_acc"}
    filters = {"min_responses_per_model": 1, "min_responses_per_item": 1, "drop_constant_items": False,
               "dedupe_models": False}
    same = prepare_items({"source": "hub", "adapter": "ifeval", "path": str(FIX / "ifeval.jsonl")}, "ifeval")
    same.write_parquet(tmp_path / "same.parquet")
    df, _, _ = build("lm_eval_samples", samples, settings, filters, tmp_path / "same.parquet")
    assert dict(zip(df["item_id"], df["correct"])) == {"0": 1, "1": 0, "2": 1}
    rows = _fixture_rows()
    other = _write_jsonl(tmp_path / "google_order.jsonl", [rows[1], rows[0], rows[2]])  # another row order
    prepare_items({"source": "hub", "adapter": "ifeval", "path": str(other)}, "ifeval").write_parquet(tmp_path / "o.parquet")
    with pytest.raises(CrossdiffError, match=r"samples_leaderboard_ifeval_.*\.jsonl: line 1: doc_id 0 is IFEval key 1000, "
                                             r"but item 0 of the item table is key 1001 .*wis-k/instruction-following-eval"):
        build("lm_eval_samples", samples, settings, filters, tmp_path / "o.parquet")
    # the collector's reading of a details file: the same check (the model is recorded failed with it)
    import polars as pl

    s = parse_settings({"version": "v2", "task": "leaderboard_ifeval", "metric": "prompt_level_strict_acc"})
    f = next((samples / "org__model").iterdir())
    check = doc_checker(pl.read_parquet(tmp_path / "o.parquet"))
    from crossdiff.responses.lb_settings import ModelFailed

    with pytest.raises(ModelFailed, match=r"line 1: doc_id 0 is IFEval key 1000, but item 0 .* key 1001"):
        extract_v2(f, "", s, check)
    assert sorted(extract_v2(f, "", s, doc_checker(same))) == [("0", 1), ("1", 0), ("2", 1)]
    # docs keyed by prompt text only (no key field) are checked by the text
    no_key = [{k: v for k, v in d.items() if k != "key"} for d in leaderboard]
    with pytest.raises(CrossdiffError, match=r"doc_id 0 is IFEval prompt 'Write a short note"):
        doc_checker(pl.read_parquet(tmp_path / "o.parquet"))(0, no_key[0], "x")
    doc_checker(same)(0, {**no_key[0], "prompt": "  " + no_key[0]["prompt"] + "\n"}, "x")  # whitespace aside: same


def test_missing_punkt_tab_stops_evaluation_before_the_model_loads(tmp_path, monkeypatch):
    """IFEval without nltk's punkt_tab (issue 26): a clear stop before any model loads, not a raw LookupError after
    the whole generation pass; and the parse-time problem for a study that will evaluate an ifeval dataset."""
    import nltk

    import crossdiff.evaluate.run as run
    from crossdiff.evaluate.run import evaluate_model
    from crossdiff.items.ifeval import PUNKT, punkt_missing, study_problems

    real_find = nltk.data.find

    def find(resource, *a, **k):
        if resource.startswith("tokenizers/punkt_tab"):
            raise LookupError(resource)
        return real_find(resource, *a, **k)

    monkeypatch.setattr(nltk.data, "find", find)
    assert "python -m nltk.downloader punkt_tab" in punkt_missing()
    items, fmt, prompt = _items()
    loads = []
    monkeypatch.setattr(run, "load_lm", lambda *a, **k: loads.append(a) or pytest.fail("the model loaded"))
    # items whose checkers need no punkt_tab go on (the model would load)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(pytest.fail.Exception):
        evaluate_model("no/such-model", [_task(tmp_path / "a", "ifeval", items, fmt, prompt)], [tmp_path / "a.json"], {})
    # a sentence-count item: stopped before the model loads
    items["2"] = {**items["2"], "instruction_id_list": json.dumps(["length_constraints:number_sentences"]),
                  "kwargs": json.dumps([{"relation": "less than", "num_sentences": 3}])}
    loads.clear()
    task = _task(tmp_path / "b", "ifeval", items, fmt, prompt)
    with pytest.raises(CrossdiffError, match=r"IFEval scoring: nltk's punkt_tab data is not installed"):
        evaluate_model("no/such-model", [task], [tmp_path / "out.json"], {})
    assert loads == []
    config = {"models": [{"id": "m"}], "study": {"datasets": None},
              "datasets": {"ifeval": {"items": {"source": "hub", "adapter": "ifeval"}},
                           "arc": {"items": {"source": "hub", "adapter": "arc"}}}}
    [problem] = study_problems(config)
    assert problem.startswith("datasets.ifeval: the ifeval adapter is scored by lm-eval's checkers, and nltk's punkt_tab")
    assert study_problems({**config, "models": []}) == []  # difficulty only: nothing is scored here
    assert study_problems({**config, "study": {"datasets": ["arc"]}}) == []
    monkeypatch.setattr(nltk.data, "find", lambda resource, *a, **k: resource)
    assert punkt_missing() is None and study_problems(config) == [] and PUNKT == "tokenizers/punkt_tab/english/"


def test_punkt_instructions_are_exactly_the_checkers_that_need_the_data(monkeypatch):
    """Every checker of lm-eval's registry run on a text with nltk's punkt_tab hidden: the ones that fail are
    PUNKT_INSTRUCTIONS (which the evaluation checks for before loading a model)."""
    import random

    import nltk

    from crossdiff.items.ifeval import PUNKT_INSTRUCTIONS, known_instructions
    from lm_eval.tasks.ifeval import instructions_registry, instructions_util

    real_find = nltk.data.find

    def find(resource, *a, **k):
        if "punkt" in resource:
            raise LookupError(resource)
        return real_find(resource, *a, **k)

    monkeypatch.setattr(nltk.data, "find", find)
    instructions_util._get_sentence_tokenizer.cache_clear()
    random.seed(0)
    need = set()
    for iid in sorted(known_instructions()):
        checker = instructions_registry.INSTRUCTION_DICT[iid](iid)
        args = {"prompt_to_repeat": "Say hi."} if "prompt_to_repeat" in (checker.get_instruction_args_keys() or []) else {}
        checker.build_description(**args)
        try:
            checker.check_following("Hello World. This is A TEST of SOME words! Fine? Yes, * a bullet.\n\nEnd.")
        except LookupError:
            need.add(iid)
    instructions_util._get_sentence_tokenizer.cache_clear()
    assert need == set(PUNKT_INSTRUCTIONS)
