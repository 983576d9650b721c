"""MATH scored as the authors score it (eval/cross_difficulty/utils.py: process_math_results): the gold
parsed `$`-wrapped with LaTeX extraction, the output parsed as written, then `$`-wrapped."""

import pytest

from crossdiff.items.adapters import load_items, prompt_for
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.scoring import score_output

from test_paper_formats import PATHS, CannedLM, _run, _task

SETTINGS = {"source": "hub", "adapter": "math", "path": str(PATHS["math"])}
# bare answers that math-verify finds only when the output is read as LaTeX ($-wrapped retry)
BARE = [("\\frac12", "\\frac{1}{2}"), ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}")]


def _items(golds):
    items = list(load_items("math", SETTINGS).to_dicts())[: len(golds)]
    return {it["item_id"]: {**it, "answer": g} for it, g in zip(items, golds)}


@pytest.mark.parametrize("output,gold", BARE)
def test_bare_latex_answers_count_through_the_dollar_retry(output, gold):
    fmt = PromptFormat.from_config(prompt_for(SETTINGS, None))
    (item,) = _items([gold]).values()
    v = score_output(fmt, item, output)
    assert v["correct"] == 1
    assert v["math_verify"] == {"as_generated": 0, "dollar_wrapped": 1}  # only the retry finds it


def test_wrong_answers_still_score_zero():
    fmt = PromptFormat.from_config(prompt_for(SETTINGS, None))
    (item,) = _items(["\\frac{1}{2}"]).values()
    for wrong in ("\\frac13", "\\dfrac{1}{3}", "The answer is $\\boxed{2}$.", ""):
        v = score_output(fmt, item, wrong)
        assert v["correct"] == 0 and v["math_verify"] == {"as_generated": 0, "dollar_wrapped": 0}, wrong
    assert score_output(fmt, item, "So it is $\\boxed{0.5}$.")["math_verify"]["as_generated"] == 1


def test_per_sample_log_holds_both_verdicts(tmp_path):
    prompt = prompt_for(SETTINGS, None)
    fmt = PromptFormat.from_config(prompt)
    cases = [BARE[0], BARE[2], ("\\frac13", "\\frac{1}{2}")]  # the fixture holds three MATH items
    items = _items([g for _, g in cases])
    outputs = dict(zip(items, [o for o, _ in cases]))
    task = _task(tmp_path, "math", items, fmt, prompt)
    record, samples = _run(tmp_path, task, CannedLM({fmt.prompt_text(items[k]): v for k, v in outputs.items()}, {}))
    assert [samples[k]["correct"] for k in outputs] == [1, 1, 0] and record["value"] == pytest.approx(2 / 3)
    assert [samples[k]["math_verify"] for k in outputs] == [{"as_generated": 0, "dollar_wrapped": 1}] * 2 + [
        {"as_generated": 0, "dollar_wrapped": 0}]
