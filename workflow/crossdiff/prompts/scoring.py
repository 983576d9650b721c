"""How a :class:`~crossdiff.prompts.format.PromptFormat` is scored: the lm-eval task YAML, its filters and metrics.

Everything is said in lm-eval's own vocabulary (``filter_list``, ``regex`` / ``take_first`` filters,
``exact_match`` with ``ignore_case`` / ``ignore_punctuation`` / ``regexes_to_ignore``, ``acc`` /
``acc_norm``), so the generated YAML is what an lm-eval user would write, and :func:`score_output`
runs lm-eval's own filter and metric functions (not a re-implementation) on a given output.

Two filters are registered in lm-eval's registry by :func:`register_filters` (task YAMLs stay free
of ``!function`` tags):

* ``crossdiff_math`` (crossdiff.prompts.math_check): math-verify equivalence with the gold answer;
* ``crossdiff_bbh_answer_type``: BBH's answer-type extraction per subtask family (the authors' five
  BBH tasks, one per family, in one filter that dispatches on the item's ``subtask``), built from
  lm-eval's BBH zero-shot filter classes.
"""

from __future__ import annotations

import re
from typing import Any

from crossdiff.errors import CrossdiffError


#: BBH subtask families and their flexible extraction (the authors' bbh_*.yaml task files)
BBH_FAMILIES: dict[str, tuple[str, ...]] = {
    "boolean": ("boolean_expressions",),
    "multichoice": (
        "date_understanding", "disambiguation_qa", "geometric_shapes", "hyperbaton",
        "logical_deduction_five_objects", "logical_deduction_seven_objects", "logical_deduction_three_objects",
        "movie_recommendation", "reasoning_about_colored_objects", "ruin_names",
        "salient_translation_error_detection", "temporal_sequences", "tracking_shuffled_objects_five_objects",
        "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    ),
    "yesno": ("navigate", "sports_understanding", "web_of_lies"),
    "numeric": ("object_counting",),
    "valid_invalid": ("formal_fallacies",),
}
#: the three subtasks the authors leave out, in the family lm-eval's own BBH zero-shot tasks give them
BBH_UNSCORED_FAMILIES = {"causal_judgement": "yesno", "penguins_in_a_table": "multichoice", "snarks": "multichoice"}
BBH_FAMILY_OF = {**{sub: fam for fam, subs in BBH_FAMILIES.items() for sub in subs}, **BBH_UNSCORED_FAMILIES}


def check_filters(value, where: str) -> list[dict]:
    """A filter_list in lm-eval's vocabulary: [{name, filter: [{function, ...}, ...]}, ...]."""
    if not isinstance(value, (list, tuple)) or not value:
        raise CrossdiffError(f"{where}: expected a non-empty list of {{name, filter}} objects, got {value!r}")
    names = []
    for i, f in enumerate(value):
        if not isinstance(f, dict) or set(f) != {"name", "filter"} or not isinstance(f["name"], str):
            raise CrossdiffError(f"{where}[{i}]: expected {{name: str, filter: [...]}}, got {f!r}")
        steps = f["filter"]
        if not isinstance(steps, (list, tuple)) or not steps or not all(
                isinstance(st, dict) and isinstance(st.get("function"), str) for st in steps):
            raise CrossdiffError(f"{where}[{i}].filter: expected a list of {{function: name, ...}} steps, got {steps!r}")
        for st in steps:
            if "regex_pattern" in st:
                try:
                    re.compile(st["regex_pattern"])
                except re.error as exc:
                    raise CrossdiffError(f"{where}[{i}]: invalid regex_pattern {st['regex_pattern']!r}: {exc}") from None
        names.append(f["name"])
    if len(set(names)) != len(names):
        raise CrossdiffError(f"{where}: filter names must be unique, got {names}")
    return [{"name": f["name"], "filter": [dict(st) for st in f["filter"]]} for f in value]


def default_filters(fmt: "PromptFormat") -> list[dict]:
    """The one-filter pipeline of a format that declares no ``filters``: regex (or math) then take_first."""
    if fmt.checker == "math":
        steps = [{"function": "crossdiff_math"}, {"function": "take_first"}]
    else:
        steps = [{"function": "regex", "regex_pattern": fmt.answer_regex, "group_select": 0},
                 {"function": "take_first"}]
    return [{"name": "extract", "filter": steps}]


def metric_entry(fmt: "PromptFormat", metric: str) -> dict:
    entry: dict[str, Any] = {"metric": metric, "aggregation": "mean", "higher_is_better": True}
    if metric == "exact_match":
        if fmt.ignore_case:
            entry["ignore_case"] = True
        if fmt.ignore_punctuation:
            entry["ignore_punctuation"] = True
        if fmt.regexes_to_ignore:
            entry["regexes_to_ignore"] = list(fmt.regexes_to_ignore)
    return entry


def task_config(fmt: "PromptFormat", task_name: str, data_file: str, chat: bool = False) -> dict[str, Any]:
    from crossdiff.prompts.decoding import generation_kwargs

    cfg: dict[str, Any] = {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "doc_to_text": "user" if chat else "prompt",
        "doc_to_target": "gold",
        "num_fewshot": 0,
        "metadata": {"version": 2, "chat": chat},
    }
    if fmt.scoring == "generation":
        cfg.update({
            "output_type": "generate_until",
            "target_delimiter": "",
            "generation_kwargs": generation_kwargs(fmt),  # the whole decoding (crossdiff.prompts.decoding)
            "filter_list": fmt.filter_list(),
            "metric_list": [metric_entry(fmt, m) for m in fmt.metric_names],
        })
    else:
        cfg.update({
            "output_type": "multiple_choice",
            "doc_to_choice": "choices_chat" if chat else "choices",
            "target_delimiter": "",
            "metric_list": [metric_entry(fmt, m) for m in fmt.metric_names],
        })
    return cfg


# ---------------------------------------------------------------------------------- lm-eval filters
def register_filters() -> None:
    """Register crossdiff's lm-eval filters (idempotent)."""
    from lm_eval.api.filter import Filter
    from lm_eval.api.registry import filter_registry, register_filter

    from crossdiff.prompts.ifeval_check import register_lm_eval_filter as register_ifeval
    from crossdiff.prompts.math_check import register_lm_eval_filter

    register_lm_eval_filter()
    register_ifeval()
    if "crossdiff_bbh_answer_type" in filter_registry:
        return

    @register_filter("crossdiff_bbh_answer_type")
    class BBHAnswerTypeFilter(Filter):
        """Each response -> the answer extracted the way its subtask family's answers look.

        boolean: ``True``/``False``; multichoice: ``(A)``-style (lm-eval's MultiChoiceRegexFilter,
        which also maps an option's text to its letter); yesno: yes/no phrases; numeric: a number;
        valid_invalid: ``valid``/``invalid``. Unknown subtasks keep the response unchanged.
        """

        def __init__(self, **_kwargs) -> None:
            from lm_eval.filters.extraction import RegexFilter
            from lm_eval.tasks.bbh.zeroshot.utils import MapRegexFilter, MultiChoiceRegexFilter, NumberParseRegexFilter

            self.by_family = {
                "boolean": RegexFilter(regex_pattern=r"\b(True|False)\b", group_select=0),
                "multichoice": MultiChoiceRegexFilter(regex_pattern=r"(\([A-Z]\))", group_select=0,
                                                      ignore_case=True, ignore_punctuation=True),
                "yesno": MapRegexFilter(
                    regex_pattern_to_value={
                        r"\b(no|not plausible|does not tell the truth|is not telling the truth)\b": "no",
                        r"\b(yes|plausible|tells the truth|is telling the truth)\b": "yes",
                    },
                    group_select=0, ignore_case=True),
                "numeric": NumberParseRegexFilter(regex_pattern=r"([-0-9]+)", group_select=0),
                "valid_invalid": RegexFilter(regex_pattern=r"\b(valid|invalid)\b", group_select=0),
            }

        def apply(self, resps, docs):
            out = []
            for responses, doc in zip(resps, docs):
                family = BBH_FAMILY_OF.get(str(doc.get("subtask") or "").removesuffix("_hard"))
                if family is None:
                    out.append(list(responses))
                    continue
                bbh_doc = {**doc, "input": doc.get("question", "")}
                out.append(list(self.by_family[family].apply([responses], [bbh_doc]))[0])
            return out


def _run_filter(steps: list[dict], response: str, doc: dict) -> str:
    import lm_eval.filters  # noqa: F401 - registers lm-eval's built-in filters (regex, take_first, ...)
    from lm_eval.api.registry import get_filter

    register_filters()
    resps: Any = [[response]]
    for step in steps:
        kwargs = {k: v for k, v in step.items() if k != "function"}
        try:
            flt = get_filter(step["function"])(**kwargs)
        except KeyError:
            raise CrossdiffError(f"filter function {step['function']!r} is not in lm-eval's registry") from None
        resps = list(flt.apply(resps, [doc]))
    value = resps[0]
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value if isinstance(value, str) else str(value)


def cut_at_stop(fmt: "PromptFormat", generated: str) -> str:
    """What the backend returns for ``generated``: the text before the first stop string."""
    for s in fmt.stop:
        if s and s in generated:
            generated = generated.split(s, 1)[0]
    return generated


def apply_filter(fmt: "PromptFormat", generated: str, filter_name: str | None = None, doc: dict | None = None) -> str:
    """The prediction one of the format's filters makes of a generation (lm-eval's filter objects)."""
    filters = {f["name"]: f["filter"] for f in fmt.filter_list()}
    name = filter_name or fmt.filter_name
    if name not in filters:
        raise CrossdiffError(f"no filter {name!r}; the format has {list(filters)}")
    return _run_filter(filters[name], cut_at_stop(fmt, generated), doc or {})


def score_output(fmt: "PromptFormat", item: dict, output: str) -> dict:
    """Parse and score one generated ``output`` for ``item`` exactly as the task YAML would.

    Returns ``{"primary_filter", "filters": {name: {"prediction", "correct"}}, "correct"}`` (generation)
    or, for multiple choice, the index of the choice ``output`` names (its text or label) and whether it
    is the gold one.
    """
    if fmt.scoring == "multiple_choice":
        choices, labels = fmt.choices(item), fmt.labels(item)
        text = output.strip()
        idx = next((i for i, c in enumerate(choices) if c.strip() == text), None)
        if idx is None:
            idx = next((i for i, lab in enumerate(labels) if lab == text), None)
        return {"prediction": idx, "gold": fmt.gold_index(item), "correct": int(idx == fmt.gold_index(item)),
                "note": "multiple choice is scored by log-likelihood of each choice; this maps a choice "
                        "text or label to its index"}
    return score_record(fmt, fmt.eval_record(item), output)


def score_record(fmt: "PromptFormat", record: dict, output: str) -> dict:
    """:func:`score_output` of a generation format on an item's evaluation record (:meth:`PromptFormat.eval_record`:
    what the task JSONL holds): the one scoring of a generated output, used by show-prompt and by GRPO's reward
    (:mod:`crossdiff.prompts.reward`)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    gold = str(record["gold"])
    out = {}
    for f in fmt.filter_list():
        pred = _run_filter(f["filter"], cut_at_stop(fmt, output), record)
        em = exact_match_hf_evaluate([pred], [gold], regexes_to_ignore=list(fmt.regexes_to_ignore) or None,
                                     ignore_case=fmt.ignore_case, ignore_punctuation=fmt.ignore_punctuation)
        out[f["name"]] = {"prediction": pred, "correct": int(em["exact_match"])}
    result = {"primary_filter": fmt.filter_name, "gold": gold, "filters": out, "correct": out[fmt.filter_name]["correct"]}
    from crossdiff.prompts.math_check import uses_math, verdicts

    if uses_math(fmt):  # the authors' two attempts (as generated, then $-wrapped), as in the per-sample log
        result["math_verify"] = verdicts(cut_at_stop(fmt, output), gold)
    return result
