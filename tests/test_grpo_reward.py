"""GRPO's verifiable reward (crossdiff.prompts.reward.Scorer) equals the evaluation's per-sample score on the same
completions, for every kind of format: exact match, GSM8K strict/flexible, MATH with the $-retry, BBH, multiple
choice (the chosen option), IFEval, an lm-eval task (generation and multiple choice).

Evaluation is the real ``crossdiff evaluate`` path (lm-eval's simple_evaluate on the task folders) with a stand-in
model that returns the given completions, cut at the request's ``until`` strings as lm-eval's hf model cuts them;
the reward scores the uncut completions (GRPO's are cut by nothing but EOS)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import polars as pl
import pytest

from crossdiff.items.adapters import load_items, prompt_for
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.reward import Scorer, chosen_option
from test_paper_formats import PATHS, _run, _task


class CuttingLM:
    """lm-eval model stand-in: generations by request text, cut at the request's until strings (lm-eval's hf
    model does that cut); log-likelihoods per (context, continuation)."""

    def __init__(self, generations: dict, loglik: dict | None = None):
        from lm_eval.api.model import LM

        from crossdiff.prompts.reward import cut_at

        class _LM(LM):
            @property
            def tokenizer_name(self):
                return "canned"

            def generate_until(self, requests):
                return [cut_at(generations[r.args[0]], r.args[1].get("until")) for r in requests]

            def loglikelihood(self, requests):
                return [(loglik[(r.args[0], r.args[1])], False) for r in requests]

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        self.lm = _LM()


def _same_scores(tmp_path, name, settings, items, completions):
    """Evaluation's per-sample correct and the reward of the same completions, per item."""
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    task = _task(tmp_path, name, items, fmt, prompt)
    scorer = Scorer(prompt, name)
    records = {r["item_id"]: r for r in scorer.records(list(items.values()))}
    lm = CuttingLM({records[k]["prompt"]: v for k, v in completions.items()})
    _, samples = _run(tmp_path, task, lm)
    evaluated = {k: samples[k]["correct"] for k in completions}
    rewarded = {k: scorer.score(records[k], v)["reward"] for k, v in completions.items()}
    return evaluated, rewarded


def test_exact_match_reward_is_evaluations_score(tmp_path):
    from crossdiff.items.synthetic import generate_items

    df = generate_items(6, seed=3, max_ops=3, max_digits=1)
    items = {r["item_id"]: r for r in df.to_dicts()}
    ids = list(items)
    completions = {ids[0]: f" {items[ids[0]]['answer']}", ids[1]: f" {items[ids[1]]['answer']}\nQuestion: 1+1",
                   ids[2]: " 99999", ids[3]: "", ids[4]: f"{items[ids[4]]['answer']}0", ids[5]: f" {items[ids[5]]['answer']} ok"}
    df.write_parquet(tmp_path / "i.parquet")
    pl.DataFrame({"item_id": df["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "b.parquet")
    from crossdiff.evaluate.run import make_task

    make_task(tmp_path / "i.parquet", tmp_path / "b.parquet", 0, tmp_path / "task", "arith", {})
    scorer = Scorer({}, "arith")
    records = {r["item_id"]: r for r in scorer.records(list(items.values()))}
    _, samples = _run(tmp_path, tmp_path / "task", CuttingLM({records[k]["prompt"]: v for k, v in completions.items()}))
    evaluated = {k: samples[k]["correct"] for k in completions}
    rewarded = {k: scorer.score(records[k], v)["reward"] for k, v in completions.items()}
    assert evaluated == rewarded and sorted(set(evaluated.values())) == [0, 1]
    assert rewarded[ids[1]] == 1.0  # text after the stop string is cut before scoring, as lm-eval's model cuts it


def test_gsm8k_reward_is_the_primary_filters_score(tmp_path):
    settings = {"source": "hub", "adapter": "gsm8k", "path": str(PATHS["gsm8k"])}
    items = {r["item_id"]: r for r in load_items("gsm8k", settings).to_dicts()}
    completions = {"0": "9 eggs at $2. So the answer is 18.", "1": "It takes 2+1 = 3", "2": "So the answer is 7,000."}
    evaluated, rewarded = _same_scores(tmp_path, "gsm8k", settings, items, completions)
    assert evaluated == rewarded == {"0": 1, "1": 1, "2": 0}  # flexible-extract is primary; strict fails "1"


def test_math_reward_takes_the_dollar_retry(tmp_path):
    from test_math_scoring import BARE, SETTINGS, _items

    cases = [BARE[0], BARE[2], ("\\frac13", "\\frac{1}{2}")]
    items = _items([g for _, g in cases])
    completions = dict(zip(items, [o for o, _ in cases]))
    evaluated, rewarded = _same_scores(tmp_path, "math", SETTINGS, items, completions)
    assert evaluated == rewarded and list(rewarded.values()) == [1, 1, 0]  # the bare answers count only by the retry


def test_bbh_reward_is_strict_match(tmp_path):
    settings = {"source": "hub", "adapter": "bbh", "path": str(PATHS["bbh"]),
                "subtasks": ["boolean_expressions", "date_understanding"]}
    items = {r["item_id"]: r for r in load_items("bbh", settings).to_dicts()}
    completions = {k: "wrong" for k in items}
    completions["boolean_expressions/0"] = "False."
    completions["date_understanding/0"] = "The answer is (B)."
    evaluated, rewarded = _same_scores(tmp_path, "bbh", settings, items, completions)
    assert evaluated == rewarded and rewarded["boolean_expressions/0"] == 1


def test_ifeval_reward_is_lm_evals_checkers(tmp_path):
    from test_ifeval import SETTINGS

    from crossdiff.items.adapters import prepare_items

    items = {r["item_id"]: r for r in prepare_items(SETTINGS, "ifeval").to_dicts()}
    completions = {"0": "Cats nap in the sun and purr softly.", "1": "The Sky Glows Orange, Then Fades.",
                   "2": "Sure:\n\"Soft rain on the roof\""}
    evaluated, rewarded = _same_scores(tmp_path, "ifeval", SETTINGS, items, completions)
    assert evaluated == rewarded == {"0": 1, "1": 0, "2": 0}


def test_multiple_choice_reward_is_the_chosen_options_score(tmp_path):
    settings = {"source": "hub", "adapter": "arc", "path": str(PATHS["arc"])}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("arc", settings).to_dicts()}
    task = _task(tmp_path, "arc", items, fmt, prompt)
    scorer = Scorer(prompt, "arc")
    records = {r["item_id"]: r for r in scorer.records(list(items.values()))}
    # each item's completion names an option (label, "(label)", "label. text", or the option's text); the stand-in's
    # log-likelihoods make evaluation choose that same option
    said, chosen = {}, {}
    for n, (k, item) in enumerate(items.items()):
        labels, texts = fmt.labels(item), fmt.choices(item)
        j = (fmt.gold_index(item) + n % 2) % len(labels)  # gold for even items, another option for odd ones
        said[k] = [labels[j], f"({labels[j]})", f"{labels[j]}. {texts[j]}", f" {labels[j]}\nbecause"][n % 4]
        chosen[k] = j
    loglik = {(fmt.prompt_text(item), c): (0.0 if i == chosen[k] else -5.0)
              for k, item in items.items() for i, c in enumerate(fmt.choice_texts(item))}
    _, samples = _run(tmp_path, task, CuttingLM({}, loglik))
    evaluated = {k: samples[k]["correct"] for k in items}
    rewarded = {k: scorer.score(records[k], said[k])["reward"] for k in items}
    assert evaluated == rewarded and sorted(set(rewarded.values())) == [0, 1]
    assert all(scorer.score(records[k], said[k])["prediction"] == chosen[k] for k in items)
    assert scorer.score(records["0"], "I do not know")["reward"] == 0.0


def test_chosen_option_parsing():
    labels, texts = ["A", "B", "C"], [" Paris", " Rome", " Rome Italy"]
    assert chosen_option("B", labels, texts) == 1 and chosen_option("(C)", labels, texts) == 2
    assert chosen_option("C) x", labels, texts) == 2 and chosen_option("Rome Italy, surely", labels, texts) == 2
    assert chosen_option("Romeo", labels, texts) is None and chosen_option("", labels, texts) is None
    assert chosen_option("Paris\nB", labels, texts) == 0  # the first line decides


@pytest.mark.parametrize("task", ["sums_gen", "sums_mc"])
def test_lm_eval_task_reward_is_the_tasks_per_sample_metric(tmp_path, task):
    from test_lm_eval_task import settings_for, sums_rows

    from crossdiff.evaluate.run import evaluate_model, make_task
    from crossdiff.items.adapters import prepare_items

    data = tmp_path / "sums.jsonl"
    rows = sums_rows(12)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = settings_for(task, data)
    items = prepare_items(settings, "sums")
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "bins.parquet")
    prompt = prompt_for(settings, None)
    make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "task", "sums", prompt)
    scorer = Scorer(prompt, "sums")
    records = {r["item_id"]: r for r in scorer.records(items.to_dicts())}
    if task == "sums_gen":
        completions = {k: (f" {rows[int(k)]['answer']}\nQuestion" if int(k) % 3 else " 1000") for k in records}
        lm = CuttingLM({records[k]["prompt"]: v for k, v in completions.items()})
    else:
        completions, loglik = {}, {}
        for k, rec in records.items():
            j = (rows[int(k)]["label"] + int(k) % 2) % len(rec["choices"])
            completions[k] = rec["choices"][j] if int(k) % 3 else "ABCD"[j]
            for i, c in enumerate(rows[int(k)]["options"]):
                loglik[(rec["prompt"], " " + c)] = 0.0 if i == j else -5.0
        lm = CuttingLM({}, loglik)
    evaluate_model("canned", [tmp_path / "task"], [tmp_path / "bin0.json"], {}, lm=lm.lm)
    samples = {r["item_id"]: r for r in map(json.loads, (tmp_path / "bin0.samples.jsonl").read_text().splitlines())}
    evaluated = {k: samples[k]["correct"] for k in records}
    rewarded = {k: scorer.score(records[k], v)["reward"] for k, v in completions.items()}
    assert evaluated == rewarded and sorted(set(rewarded.values())) == [0, 1]
