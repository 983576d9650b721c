"""Each adapter's default format is the authors' (BatsResearch/cross-difficulty), for training and evaluation.

The expected strings are written out here from the authors' code (train/utils.py builds the training
text, eval/cross_difficulty/*.yaml + utils.py the evaluation prompt). Scoring is checked through
lm-eval's own machinery: the generated task YAML is run by ``lm_eval.simple_evaluate`` (via
``crossdiff.evaluate.run.evaluate_model``) on a stand-in model that returns constructed outputs, so the
regex filters, take_first, exact_match with its normalisation and acc/acc_norm are lm-eval's.
"""

import json
from pathlib import Path

import polars as pl
import pytest

from crossdiff.items.adapters import ADAPTERS, load_items, prompt_for
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.scoring import score_output

from conftest import REPO

FIX = REPO / "tests" / "fixtures" / "datasets"
PATHS = {"arc": FIX / "arc.jsonl", "gsm8k": FIX / "gsm8k.jsonl", "mmlu_pro": FIX / "mmlu_pro.jsonl",
         "bbh": FIX / "bbh", "math": FIX / "math", "musr": FIX / "musr",
         "gpqa_extended": FIX / "gpqa_extended_samples.jsonl", "ifeval": FIX / "ifeval.jsonl",
         "arc_hase": FIX / "hase" / "arc", "mmlu_stem5": FIX / "hase" / "mmlu", "strategyqa": FIX / "hase" / "strategyqa"}


def _load(name, **extra):
    settings = {"source": "hub", "adapter": name, "path": str(PATHS[name]), **extra}
    if name == "gpqa_extended":  # a 3-doc fixture of the 546-doc benchmark
        settings["allow_partial"] = True
    items = {r["item_id"]: r for r in load_items(name, settings).to_dicts()}
    return items, PromptFormat.from_config(prompt_for(settings, None))


# ------------------------------------------------------------------------------------ rendering
def test_arc_letters_and_native_labels():
    items, fmt = _load("arc")
    rec, ev = fmt.sft_record(items["0"]), fmt.eval_record(items["0"])
    prompt = ("Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the "
              "most likely effect of this increase in rotation?\nA) Planetary density will decrease.\nB) Planetary "
              "years will become longer.\nC) Planetary days will become shorter.\nD) Planetary gravity will become "
              "stronger.\nAnswer:\n")
    assert rec["user"] == prompt and ev["user"] == prompt and rec["assistant"] == "C"
    assert ev["choices"] == [" A", " B", " C", " D"] and ev["choices_chat"] == ["A", "B", "C", "D"] and ev["gold"] == 2
    # an item with numeric labels keeps them (the authors list choices.label as they are)
    num = fmt.eval_record(items["3"])
    assert num["user"] == "Question: Which characteristic is inherited?\n1) eye color\n2) scar\n3) hair length\n4) language\nAnswer:\n"
    assert num["choices_chat"] == ["1", "2", "3", "4"] and fmt.sft_record(items["3"])["assistant"] == "1"
    assert fmt.metric_names == ("acc", "acc_norm")


def test_gsm8k_target_drops_calculator_notes():
    items, fmt = _load("gsm8k")
    rec = fmt.sft_record(items["0"])
    assert rec["user"] == ("Q: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
                           "muffins for her friends every day with four. She sells the remainder at the farmers' market "
                           "daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' "
                           "market?\nA:\n")
    assert rec["assistant"] == ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the "
                                "farmer\u2019s market. So the answer is 18")
    assert fmt.eval_record(items["0"])["user"] == rec["user"]
    assert fmt.stop == ("Q:", "</s>", "<|im_end|>") and fmt.max_gen_toks == 256
    assert [f["name"] for f in fmt.filter_list()] == ["strict-match", "flexible-extract"]


def test_mmlu_pro_lettered_options_and_letter_target():
    items, fmt = _load("mmlu_pro")
    rec, ev = fmt.sft_record(items["2"]), fmt.eval_record(items["2"])
    row = json.loads((FIX / "mmlu_pro.jsonl").read_text().splitlines()[2])
    lines = "\n".join(f"{'ABCDEFGHIJ'[i]}) {o}" for i, o in enumerate(row["options"]))
    assert rec["user"] == ev["user"] == f"Question: {row['question']}\n{lines}\nAnswer:\n"
    assert rec["assistant"] == row["answer"] == ev["gold"]
    cfg = fmt.task_config("t", "/abs/data.jsonl")
    assert cfg["output_type"] == "generate_until" and cfg["generation_kwargs"]["max_gen_toks"] == 2048
    assert cfg["generation_kwargs"]["until"] == ["</s>", "Q:", "<|im_end|>"]
    assert cfg["metric_list"] == [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                   "ignore_case": True, "ignore_punctuation": True}]


def test_bbh_trains_on_question_answer_and_evaluates_on_q_a():
    items, fmt = _load("bbh", subtasks=["date_understanding"])
    item = items["date_understanding/0"]
    question = ("Today is Christmas Eve of 1937. What is the date tomorrow in MM/DD/YYYY?\nOptions:\n(A) 12/11/1937\n"
                "(B) 12/25/1937\n(C) 01/04/1938\n(D) 12/04/1937\n(E) 12/25/2006\n(F) 07/25/1937")
    rec = fmt.sft_record(item)
    assert rec["user"] == f"Question: {question}\nAnswer:\n" and rec["assistant"] == "(B)"
    assert fmt.eval_record(item)["user"] == f"Q: {question}\nA:"
    assert fmt.max_gen_toks == 256 and fmt.filter_name == "strict-match"


def test_bbh_defaults_to_the_authors_21_subtasks_and_items_subtasks_restores_24(tmp_path, capsys):
    from crossdiff.items.adapters import BBH_SCORED, BBH_SUBTASKS
    from crossdiff.errors import CrossdiffError
    from crossdiff.prompts.scoring import BBH_FAMILY_OF

    assert len(ADAPTERS["bbh"].configs) == 24 and len(BBH_SCORED) == 21
    assert {"causal_judgement", "penguins_in_a_table", "snarks"}.isdisjoint(BBH_SCORED)
    assert set(BBH_FAMILY_OF) == set(ADAPTERS["bbh"].configs)  # every subtask has its answer-type filter
    assert ADAPTERS["bbh"].default_subtasks == BBH_SCORED
    # a local copy of all 24 subtasks: the default loads the 21, items.subtasks = all 24 loads 24
    for sub in BBH_SUBTASKS:
        (tmp_path / f"{sub}.jsonl").write_text(json.dumps({"input": f"{sub} q", "target": "True"}) + "\n")
    default = load_items("bbh", {"path": str(tmp_path)})
    assert sorted(default["subtask"]) == sorted(BBH_SCORED) and default.height == 21
    assert not default["item_id"].str.starts_with("snarks").any()
    every = load_items("bbh", {"path": str(tmp_path), "subtasks": list(BBH_SUBTASKS)})
    assert every.height == 24 and "snarks/0" in every["item_id"].to_list()
    # the default set partly present: the missing ones are named on stderr, the rest load
    capsys.readouterr()
    items = load_items("bbh", {"path": str(PATHS["bbh"])})
    assert set(items["subtask"]) == {"boolean_expressions", "date_understanding"}  # the fixture's two
    err = capsys.readouterr().err
    assert "19 of the 21 default bbh subtask(s)" in err and "web_of_lies" in err and "snarks" not in err
    # named in items.subtasks but absent: a loud error naming it
    with pytest.raises(CrossdiffError, match=r"no rows for the bbh subtask\(s\) \['navigate'\] listed in items.subtasks"):
        load_items("bbh", {"path": str(PATHS["bbh"]), "subtasks": ["boolean_expressions", "navigate"]})


def test_math_problem_solution():
    items, fmt = _load("math")
    rec = fmt.sft_record(items["algebra_hard/1"])
    assert rec["user"] == "Problem:\nFind the sum of all values of $x$ such that $2^{x^2-3x-2} = 4^{x - 4}$.\n\nSolution:"
    assert rec["assistant"].endswith("whose roots sum to $\\boxed{5}$.")
    assert fmt.stop == () and fmt.max_gen_toks == 4096 and fmt.checker == "math"


def test_musr_numbered_options():
    items, fmt = _load("musr")
    item = items["team_allocation/0"]
    story = ("In the heart of a bustling city, a restaurant manager must assign Alice, Bob and Carol to cooking and "
             "serving.\n\nGiven the story, how would you uniquely allocate each person to make sure both tasks are "
             "accomplished efficiently?\n\n1 - Cooking: Alice, Serving: Bob and Carol\n2 - Cooking: Bob, Serving: "
             "Alice and Carol\n3 - Cooking: Carol, Serving: Alice and Bob\n")
    assert fmt.eval_record(item)["user"] == story + "Answer:"
    # the authors' training text has one more blank line before "Answer:" (train/utils.py)
    assert fmt.sft_record(item)["user"] == story + "\nAnswer:"
    assert fmt.sft_record(item)["assistant"] == "Cooking: Carol, Serving: Alice and Bob"
    assert fmt.metric_names == ("acc_norm",)


def test_chat_rendering_with_qwen_template():
    """What the model sees: Qwen's default system prompt, the user text, the assistant turn."""
    items, fmt = _load("gsm8k")

    class Tok:
        chat_template = (REPO / "tests" / "fixtures" / "chat" / "qwen2.5.jinja").read_text()

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **template_vars):
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, _ = render_jinja_template(conversations=[messages], chat_template=self.chat_template,
                                                add_generation_prompt=add_generation_prompt, **template_vars)
            return rendered[0]

    system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    user = "<|im_start|>user\nQ: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?\nA:\n<|im_end|>\n"
    assert fmt.render_prompt(items["1"], Tok()) == system + user + "<|im_start|>assistant\n"
    prompt, completion = fmt.render_training(items["1"], Tok())
    assert prompt == system + user + "<|im_start|>assistant\n"
    assert completion == ("It takes 2/2=1 bolt of white fiber\nSo the total amount of fabric is 2+1=3 bolts of fabric "
                          "So the answer is 3<|im_end|>\n")


# ------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("output, strict, flexible", [
    ("She sells 9 eggs for $2 each. So the answer is 18.", 1, 1),
    ("9 * 2 = 18", 0, 1),  # a bare last number counts for flexible-extract only
    ("So the answer is 81.", 0, 0),
])
def test_gsm8k_verdicts(output, strict, flexible):
    items, fmt = _load("gsm8k")
    verdict = score_output(fmt, items["0"], output)
    assert verdict["filters"]["strict-match"]["correct"] == strict
    assert verdict["filters"]["flexible-extract"]["correct"] == flexible
    assert verdict["correct"] == flexible  # flexible-extract is the declared primary filter


def test_gsm8k_thousands_separator():
    items, fmt = _load("gsm8k")
    v = score_output(fmt, items["2"], "The profit is 200,000-130,000 dollars. So the answer is 70,000.\n\nQ: next")
    assert v["filters"]["strict-match"] == {"prediction": "70,000", "correct": 1}
    assert v["filters"]["flexible-extract"]["correct"] == 1


def test_bbh_verdicts():
    items, fmt = _load("bbh", subtasks=["boolean_expressions", "date_understanding"])
    assert score_output(fmt, items["boolean_expressions/0"], "False.")["correct"] == 1  # target "False"
    assert score_output(fmt, items["boolean_expressions/0"], "false")["correct"] == 1
    assert score_output(fmt, items["boolean_expressions/0"], "True.")["correct"] == 0
    assert score_output(fmt, items["date_understanding/0"], "(B)")["correct"] == 1
    v = score_output(fmt, items["date_understanding/0"], "Tomorrow is 12/25/1937, so the answer is (B).")
    assert v["filters"]["strict-match"]["correct"] == 0 and v["filters"]["flexible-extract"]["correct"] == 1
    # lm-eval's BBH multiple-choice filter maps an option's text to its letter
    assert score_output(fmt, items["date_understanding/0"], "12/25/1937")["filters"]["flexible-extract"]["correct"] == 1


def test_mmlu_pro_verdicts():
    items, fmt = _load("mmlu_pro")
    gold = fmt.eval_record(items["2"])["gold"]
    assert score_output(fmt, items["2"], f"The answer is ({gold})")["correct"] == 1
    wrong = "A" if gold != "A" else "B"
    assert score_output(fmt, items["2"], f"({wrong}) is right")["correct"] == 0
    # the authors' filter takes the first capital A-J anywhere; the stricter one of config/README.md does not
    item = items["0"]  # gold I
    assert score_output(fmt, item, "Based on the options, the answer is (I).")["filters"]["custom-extract"] == \
        {"prediction": "B", "correct": 0}
    strict = PromptFormat.from_config({**prompt_for({"source": "hub", "adapter": "mmlu_pro"}, None), "filters": [
        {"name": "custom-extract", "filter": [{"function": "regex", "regex_pattern": r"answer is \(?([A-J])\)?"},
                                              {"function": "take_first"}]}]})
    assert score_output(strict, item, "Based on the options, the answer is (I).")["correct"] == 1


def test_math_equivalent_boxed_answer():
    items, fmt = _load("math")
    assert items["algebra_hard/0"]["answer"] == "\\sqrt{2}"
    assert score_output(fmt, items["algebra_hard/0"], "Hence the maximum is $\\boxed{\\frac{2}{\\sqrt{2}}}$.")["correct"] == 1
    assert score_output(fmt, items["algebra_hard/1"], "The roots sum to $\\boxed{\\frac{10}{2}}$.")["correct"] == 1
    assert score_output(fmt, items["algebra_hard/1"], "The roots sum to $\\boxed{6}$.")["correct"] == 0


# ------------------------------------------------------------------------------------ lm-eval end to end
class CannedLM:
    """Stand-in lm-eval model: generations and log-likelihoods from tables keyed by the request text."""

    def __init__(self, generations: dict, loglik: dict, tokenizer=None):
        from lm_eval.api.model import LM

        class _LM(LM):
            @property
            def tokenizer_name(self):
                return "canned"

            def chat_template(self, *_):
                return tokenizer.chat_template

            def apply_chat_template(self, history, add_generation_prompt=True):
                return tokenizer.apply_chat_template(history, add_generation_prompt=add_generation_prompt)

            def generate_until(self, requests):
                return [generations[r.args[0]] for r in requests]

            def loglikelihood(self, requests):
                return [(loglik[(r.args[0], r.args[1])], False) for r in requests]

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        self.lm = _LM()
        if tokenizer is not None:
            self.lm.tokenizer = tokenizer


def _task(tmp_path, name, items, fmt, prompt):
    from crossdiff.evaluate.run import make_task

    df = pl.DataFrame(list(items.values()), infer_schema_length=None)
    df.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": df["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "bins.parquet")
    make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "task", name, prompt)
    return tmp_path / "task"


def _run(tmp_path, task, lm):
    from crossdiff.evaluate.run import evaluate_model, samples_path

    out = tmp_path / "bin0.json"
    record = evaluate_model("canned", [task], [out], {}, lm=lm.lm)[0]
    return record, {r["item_id"]: r for r in map(json.loads, samples_path(out).read_text().splitlines())}


def test_lm_eval_scores_gsm8k_with_both_filters(tmp_path):
    settings = {"source": "hub", "adapter": "gsm8k", "path": str(PATHS["gsm8k"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("gsm8k", settings).to_dicts()}
    task = _task(tmp_path, "gsm8k", items, fmt, prompt)
    outputs = {"0": "9 eggs at $2. So the answer is 18.", "1": "It takes 2+1 = 3", "2": "So the answer is 7,000."}
    lm = CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {})
    record, samples = _run(tmp_path, task, lm)
    assert record["filter"] == "flexible-extract" and record["metric"] == "exact_match"
    assert record["value"] == pytest.approx(2 / 3)
    assert record["other_metrics"]["exact_match,strict-match"] == pytest.approx(1 / 3)
    assert samples["0"]["correct"] == 1 and samples["1"]["correct"] == 1 and samples["2"]["correct"] == 0
    assert samples["1"]["correct_by_filter"] == {"strict-match": 0} and samples["1"]["prediction"] == "3"


def test_lm_eval_scores_bbh_strict_match(tmp_path):
    settings = {"source": "hub", "adapter": "bbh", "path": str(PATHS["bbh"]),
                "subtasks": ["boolean_expressions", "date_understanding"]}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("bbh", settings).to_dicts()}
    task = _task(tmp_path, "bbh", items, fmt, prompt)
    outputs = {k: "wrong" for k in items}
    outputs["boolean_expressions/0"] = "False."
    outputs["date_understanding/0"] = "The answer is (B)."
    lm = CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {})
    record, samples = _run(tmp_path, task, lm)
    assert samples["boolean_expressions/0"]["correct"] == 1
    assert samples["date_understanding/0"]["correct"] == 0  # strict: the whole output is compared
    assert samples["date_understanding/0"]["correct_by_filter"] == {"flexible-extract": 1}
    assert record["value"] == pytest.approx(1 / len(items))


def test_lm_eval_scores_musr_by_acc_norm(tmp_path):
    settings = {"source": "hub", "adapter": "musr", "path": str(PATHS["musr"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("musr", settings).to_dicts()}
    task = _task(tmp_path, "musr", items, fmt, prompt)
    loglik = {}
    for item in items.values():
        ctx, choices, gold = fmt.prompt_text(item), fmt.choice_texts(item), fmt.gold_index(item)
        for i, c in enumerate(choices):
            # the gold choice has the best log-likelihood per character (acc_norm), not always in total (acc)
            loglik[(ctx, c)] = -1.0 * len(c) if i == gold else -1.5 * len(c)
    record, samples = _run(tmp_path, task, CannedLM({}, loglik))
    assert record["metric"] == "acc_norm" and record["value"] == 1.0
    # " Mackenzie" (gold, -10) loses to " Ana" (-6) in total but wins per character
    assert samples["murder_mysteries/0"]["correct_by_metric"] == {"acc_norm": 1}
    assert record["other_metrics"] == {}


def test_lm_eval_arc_continuations_are_the_labels(tmp_path):
    settings = {"source": "hub", "adapter": "arc", "path": str(PATHS["arc"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("arc", settings).to_dicts()}
    task = _task(tmp_path, "arc", items, fmt, prompt)
    loglik = {}
    for item in items.values():
        labels = fmt.labels(item)
        for i, lab in enumerate(labels):
            loglik[(fmt.prompt_text(item), f" {lab}")] = -1.0 if i == fmt.gold_index(item) else -2.0
    record, samples = _run(tmp_path, task, CannedLM({}, loglik))  # a KeyError would mean other continuations
    assert record["metric"] == "acc" and record["value"] == 1.0 and record["other_metrics"]["acc_norm"] == 1.0


def test_bad_scoring_settings_name_the_key():
    from crossdiff.errors import CrossdiffError

    bad = [
        ({"filters": [{"name": "a", "filter": []}]}, r"prompt\.filters\[0\]\.filter: expected a list of \{function"),
        ({"filters": [{"name": "a", "filter": [{"function": "regex", "regex_pattern": "("}]}]}, "invalid regex_pattern"),
        ({"filters": [{"name": "a", "filter": [{"function": "take_first"}]}] * 2}, "filter names must be unique"),
        ({"primary_filter": "strict"}, r"primary_filter: 'strict' is not one of the filters \['extract'\]"),
        ({"metrics": ["acc"]}, r"metrics: generation scoring supports \['exact_match'\]"),
        ({"scoring": "multiple_choice", "metrics": ["f1"]}, r"supports \['acc', 'acc_norm'\]"),
        ({"target_regex_sub": [["a"]]}, r"target_regex_sub: expected a list of \[pattern, replacement\]"),
        ({"regexes_to_ignore": ["("]}, "invalid regular expression"),
        ({"on_no_completion": "skip"}, r"on_no_completion: expected one of \('error', 'drop'\)"),
    ]
    for config, message in bad:
        with pytest.raises(CrossdiffError, match=message):
            PromptFormat.from_config(config)
    fmt = PromptFormat.from_config({"labels_field": "labels", "scoring": "multiple_choice"})
    with pytest.raises(CrossdiffError, match=r"column 'labels' \(labels_field\) must hold 2 labels"):
        fmt.labels({"item_id": "x", "choices": '["a", "b"]', "labels": '["A"]', "answer": "0"})


def test_lm_eval_chat_requests_match_render_prompt(tmp_path):
    """Under the chat template lm-eval's requests are exactly render_prompt's text, and the scored
    continuations are the stripped labels, as training's assistant turn is."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = (REPO / "tests" / "fixtures" / "chat" / "qwen2.5.jinja").read_text()

    class Tok:
        chat_template = template

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **template_vars):
            rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                                add_generation_prompt=add_generation_prompt, **template_vars)
            return rendered[0]

    settings = {"source": "hub", "adapter": "arc", "path": str(PATHS["arc"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("arc", settings).to_dicts()}
    task = _task(tmp_path, "arc", items, fmt, prompt)
    loglik = {}
    for item in items.values():
        for i, lab in enumerate(fmt.labels(item)):
            loglik[(fmt.render_prompt(item, Tok()), lab)] = -1.0 if i == fmt.gold_index(item) else -2.0
    record, samples = _run(tmp_path, task, CannedLM({}, loglik, tokenizer=Tok()))  # a KeyError would mean another context or continuation
    assert record["chat_template"] is True and record["value"] == 1.0


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_defaults_are_valid_config(name):
    """Every default is also writable in a config: the schema knows every PromptFormat key."""
    from dataclasses import fields

    from crossdiff.config import load_schema, validate

    props = load_schema()["definitions"]["prompt"]["properties"]
    assert set(props) == {f.name for f in fields(PromptFormat)}
    config = {"datasets": {name: {"items": {"source": "hub", "adapter": name, "path": str(PATHS[name])},
                                  "responses": {"source": "simulated"}, "prompt": ADAPTERS[name].prompt}}}
    assert validate(config)["datasets"][name]["prompt"] == ADAPTERS[name].prompt


def test_lm_eval_scores_math_by_equivalence(tmp_path):
    settings = {"source": "hub", "adapter": "math", "path": str(PATHS["math"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("math", settings).to_dicts()}
    task = _task(tmp_path, "math", items, fmt, prompt)
    outputs = {"algebra_hard/0": "So the maximum is $\\boxed{\\frac{2}{\\sqrt{2}}}$.",  # = \sqrt{2}
               "algebra_hard/1": "The sum is $\\boxed{\\frac{10}{2}}$.",  # = 5
               "num_theory_hard/0": "It is $\\boxed{4}$."}  # gold 3
    lm = CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {})
    record, samples = _run(tmp_path, task, lm)
    assert [samples[k]["correct"] for k in outputs] == [1, 1, 0] and record["value"] == pytest.approx(2 / 3)


def test_lm_eval_scores_mmlu_pro_letters(tmp_path):
    settings = {"source": "hub", "adapter": "mmlu_pro", "path": str(PATHS["mmlu_pro"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("mmlu_pro", settings).to_dicts()}
    task = _task(tmp_path, "mmlu_pro", items, fmt, prompt)
    gold = {k: fmt.gold(v) for k, v in items.items()}
    outputs = {"0": f"The answer is ({gold['0']})", "1": f"{gold['1']}", "2": "I am not sure."}  # "I" is a letter too
    lm = CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {})
    record, samples = _run(tmp_path, task, lm)
    assert record["filter"] == "custom-extract"
    assert samples["0"]["correct"] == samples["1"]["correct"] == 1
    assert samples["2"]["prediction"] == "I" and samples["2"]["correct"] == int(gold["2"] == "I")
