"""Verifiable rewards: an item's completion scored exactly as evaluation scores it (GRPO, pass rates).

:class:`Scorer` is the one scoring of a generated completion for every kind of dataset, used by GRPO's reward
(:mod:`crossdiff.finetune.grpo`) and by the pass-rate difficulty (:mod:`crossdiff.evaluate.pass_rate`):

* a crossdiff generation format (exact match, GSM8K's strict/flexible filters, MATH's math-verify with the
  authors' ``$..$`` retry, BBH's answer types, IFEval's instruction checkers): the completion is cut at the
  format's stop strings (what lm-eval's ``generate_until`` returns) and scored by
  :func:`crossdiff.prompts.scoring.score_record`, which runs lm-eval's own filters and ``exact_match`` metric of
  the task YAML evaluation runs; the reward is the primary filter's 0/1;
* a crossdiff multiple-choice format: evaluation picks the option of highest log-likelihood; a generated
  completion picks the option it names (:func:`chosen_option`: its label, e.g. ``B`` / ``(B)`` / ``B.``, or its
  text), and scores like evaluation's chosen option (1 when it is the gold one; nothing named = 0);
* an lm-eval task (``items.source: lm_eval_task``): the prompt is the request lm-eval sends for the doc
  (:func:`crossdiff.items.lm_eval_task.describe_evaluation`: its doc_to_text, description, few-shot draw, chat
  template), the completion is cut at the task's ``until`` strings (as lm-eval's hf model does), run through the
  task's own filter ensemble and ``process_results``; the value of the dataset's metric is the reward and
  ``value >= items.threshold`` (0/1 metrics: the value) its correctness. A multiple-choice task's completion picks
  the option it names, scored by ``process_results`` with that option's log-likelihood highest.

tests/test_grpo_reward.py checks, for every format, that the reward of a completion equals the per-sample
``correct`` that ``crossdiff evaluate`` (lm-eval) records for the same completion.
"""

from __future__ import annotations

import json
import re

from crossdiff.errors import CrossdiffError
from crossdiff.prompts.format import PromptFormat

_LABEL = re.compile(r"^\(?\s*([A-Za-z0-9]{1,3})\s*\)?(?:[.:)\]]|\s|$)")


def chosen_option(completion: str, labels: list[str], choices: list[str]) -> int | None:
    """The option a generated answer names: its first line (stripped) equal to an option's text or label, else a
    leading label (``B``, ``(B)``, ``B.``, ``B)``), else a leading option text (the longest); None when it names none."""
    text = completion.strip().split("\n", 1)[0].strip()
    if not text:
        return None
    stripped = [c.strip() for c in choices]
    for i, c in enumerate(stripped):
        if c and text == c:
            return i
    for i, lab in enumerate(labels):
        if text == lab:
            return i
    m = _LABEL.match(text)
    if m and m.group(1) in labels:
        return labels.index(m.group(1))
    best = None
    for i, c in enumerate(stripped):
        if c and text.startswith(c) and (len(text) == len(c) or not text[len(c)].isalnum()):
            if best is None or len(c) > len(stripped[best]):
                best = i
    return best


def cut_at(text: str, until) -> str:
    """What lm-eval's hf model returns for a generation: the text before the first of the ``until`` strings."""
    for term in until or []:
        if term:
            text = text.split(term)[0]
    return text


def encode_prompt(tokenizer, text: str) -> list[int]:
    """A prompt's token ids as lm-eval's hf model encodes a request (HFLM.tok_encode): the tokenizer's own special
    tokens, except that a text already starting with the BOS token (a chat template that writes it) gets none."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


class Scorer:
    """Prompts and verifiable rewards of a dataset's items, as evaluation renders and scores them.

    ``records(items, tokenizer)``: one JSON-able record per item (``item_id``, ``prompt``: the exact evaluation
    prompt text, chat-rendered when the format uses the tokenizer's chat template, and what scoring needs);
    ``score(record, completion)``: ``{"reward", "correct", "prediction"}``.
    """

    def __init__(self, prompt: dict | None, dataset: str = "items"):
        self.fmt = PromptFormat.from_config(prompt)
        self.dataset = dataset
        self._tasks = None

    # ------------------------------------------------------------------------------------ prompts
    @property
    def lm_eval(self) -> dict | None:
        return self.fmt.lm_eval_task

    def tasks(self) -> dict:
        if self._tasks is None:
            from crossdiff.items.lm_eval_task import load_tasks

            self._tasks = load_tasks(self.lm_eval, dataset=self.dataset)
        return self._tasks

    def records(self, items: list[dict], tokenizer=None) -> list[dict]:
        if self.lm_eval is not None:
            return [self._lm_eval_record(item, tokenizer) for item in items]
        out = []
        for item in items:
            rec = self.fmt.eval_record(item)
            rec["prompt"] = self.fmt.render_prompt(item, tokenizer)
            if self.fmt.scoring == "multiple_choice":
                rec["labels"] = self.fmt.labels(item)
            out.append(rec)
        return out

    def _lm_eval_record(self, item: dict, tokenizer) -> dict:
        from crossdiff.items.lm_eval_task import chat_settings, describe_evaluation
        from crossdiff.prompts.chat import lm_eval_renderer

        chat, _, _ = chat_settings(self.lm_eval)
        render = lm_eval_renderer(tokenizer) if chat else None
        info = describe_evaluation(self.lm_eval, item, tokenizer, render, tasks=self.tasks())
        ctx = info["request"]
        if isinstance(ctx, list):
            raise CrossdiffError(f"item {item['item_id']!r}: lm-eval task {info['task']!r} scores one context per "
                                 "choice (multiple input): it has no single prompt to generate from")
        rec = {"item_id": str(item["item_id"]), "prompt": ctx, "subtask": info["task"], "doc_id": info["doc_id"],
               "output_type": info["output_type"]}
        if info["output_type"] == "multiple_choice":
            rec["choices"] = [c.strip() for c in info["continuations"]]
        else:
            rec["until"] = list((info.get("generation_kwargs") or {}).get("until") or [])
        return rec

    # ------------------------------------------------------------------------------------ scoring
    def score(self, record: dict, completion: str) -> dict:
        if self.lm_eval is not None:
            return self._score_lm_eval(record, completion)
        if self.fmt.scoring == "multiple_choice":
            idx = chosen_option(completion, list(record["labels"]), list(record["choices"]))
            correct = int(idx is not None and idx == int(record["gold"]))
            return {"reward": float(correct), "correct": correct, "prediction": idx}
        from crossdiff.prompts.scoring import score_record

        out = score_record(self.fmt, record, completion)
        primary = out["filters"][out["primary_filter"]]
        return {"reward": float(out["correct"]), "correct": int(out["correct"]), "prediction": primary["prediction"]}

    def _score_lm_eval(self, record: dict, completion: str) -> dict:
        from lm_eval.api.instance import Instance

        from crossdiff.items.lm_eval_task import metric_settings

        task = self.tasks()[record["subtask"]]
        doc = dict(task.eval_docs[int(record["doc_id"])])
        metric, flt, threshold = metric_settings(self.lm_eval, task, f"datasets.{self.dataset}.items", self.dataset)
        where = f"lm-eval task {record['subtask']!r}, doc {record['doc_id']}"
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = list(record["choices"])
            labels = [chr(ord("A") + i) for i in range(len(choices))]
            idx = chosen_option(completion, labels, choices)
            if idx is None:
                return {"reward": 0.0, "correct": 0, "prediction": None}
            # the chosen option's log-likelihood highest, the others far below: lm-eval's own metric decides
            results = [(0.0 if i == idx else -1e9, i == idx) for i in range(len(choices))]
            value, correct = metric_value(task.process_results(doc, results), metric, threshold, where)
            return {"reward": float(value), "correct": correct, "prediction": idx}
        text = cut_at(completion, record.get("until"))
        inst = Instance(request_type="generate_until", doc=doc, arguments=(record["prompt"], {}), idx=0,
                        metadata=(record["subtask"], int(record["doc_id"]), 1))
        inst.resps = [text]
        for ensemble in getattr(task, "_filters", []):
            ensemble.apply([inst])
        if flt not in inst.filtered_resps:
            raise CrossdiffError(f"{where}: the task has no filter {flt!r} (it has {sorted(inst.filtered_resps)})")
        value, correct = metric_value(task.process_results(doc, [inst.filtered_resps[flt]]), metric, threshold, where)
        return {"reward": float(value), "correct": correct, "prediction": inst.filtered_resps[flt]}


def metric_value(result: dict, metric: str, threshold, where: str) -> tuple[float, int]:
    """(value, correct) of an lm-eval per-sample result, by evaluation's rule (crossdiff.evaluate.lm_eval_task:
    ``value >= threshold`` when a threshold is set, else the metric's own 0/1)."""
    if metric not in result:
        raise CrossdiffError(f"{where}: lm-eval's process_results gives no {metric!r} (it gives {sorted(result)})")
    value = result[metric]
    if isinstance(value, (list, tuple)):
        raise CrossdiffError(f"{where}: metric {metric!r} is not per sample; choose a per-sample metric with items.metric")
    value = float(value)
    if threshold is not None:
        return value, int(value >= threshold)
    if value not in (0.0, 1.0):
        raise CrossdiffError(f"{where}: metric {metric!r} has the per-sample value {value}, not 0/1; set items.threshold")
    return value, int(value)


def load_items(items_path, item_ids: list[str]) -> list[dict]:
    """The item table's rows of ``item_ids``, in that order (a missing one is an error naming the file)."""
    import polars as pl

    from crossdiff.io import read_table, require_columns

    table = read_table(items_path, "item table")
    require_columns(table, ["item_id"], items_path, "item table")
    table = table.with_columns(pl.col("item_id").cast(pl.Utf8))
    wanted = set(item_ids)
    rows = {r["item_id"]: r for r in table.filter(pl.col("item_id").is_in(list(wanted))).to_dicts()}
    missing = [i for i in item_ids if i not in rows]
    if missing:
        raise CrossdiffError(f"{items_path}: {len(missing)} item(s) are not in the item table, e.g. {missing[:3]}")
    return [rows[i] for i in item_ids]


def record_json(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
