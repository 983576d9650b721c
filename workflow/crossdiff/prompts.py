"""The ONE definition of how an item becomes a prompt and a completion.

Training (``sft_data`` / ``finetune``) and evaluation (``evaluate``: the lm-eval task YAML and JSONL)
both render items through :class:`PromptFormat`, so the text a model is trained on and the text it
is scored on cannot drift apart. The evaluation JSONL stores the rendered prompt per item and the
task YAML points at that column, so lm-eval never re-renders it with its own (Jinja) rules.

Config keys (the ``prompt`` section of a dataset's config; every key is optional):

================  ==========================================  ===============================================
key               default                                     meaning
================  ==========================================  ===============================================
instruction       ``""``                                      text placed before the question; the system
                                                              message when a chat template is applied
template          ``"Question: {question}\\nAnswer:"``          the user text; ``{column}`` is any item-table
                                                              column; ``{options}`` the lettered choices (MC)
target            ``" {answer}"``                             completion text (generation scoring); stripped
                                                              of surrounding whitespace in chat mode
chat_template     ``"auto"``                                  ``"auto"``: use the tokenizer's chat template
                                                              when it has one; ``true``: require one (error
                                                              if missing); ``false``: never
scoring           ``"generation"``                            ``"generation"`` (greedy generation, regex,
                                                              exact match) or ``"multiple_choice"``
                                                              (log-likelihood of each choice; acc, acc_norm)
answer_regex      ``"(-?\\d+)"``                               generation: the first match in the generated
                                                              text (first non-empty group) is the prediction
stop              ``["\\n"]``                                  generation: stop strings (``until``)
max_gen_toks      ``16``                                      generation: maximum new tokens
choices_field     ``"choices"``                               MC: item column holding the choices (list of
                                                              strings or a JSON-encoded list)
choice_template   ``" {choice}"``                             MC: continuation scored for each choice
                                                              (``{choice}`` its text, ``{label}`` its letter);
                                                              also the SFT completion (with the gold choice)
option_labels     ``"ABCDEFGHIJKLMNOPQRSTUVWXYZ"``            MC: labels used by ``{options}``
checker           ``"exact"``                                 generation: ``"exact"`` (extracted answer ==
                                                              gold) or ``"math"`` (mathematical equivalence
                                                              with math-verify, for MATH)
================  ==========================================  ===============================================

For multiple choice the gold is ``answer``: either the text of one choice or, when it is not a
choice, an integer index (0-based) into the choices.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import asdict, dataclass, fields
from typing import Any

from crossdiff.errors import CrossdiffError

SCORINGS = ("generation", "multiple_choice")
CHECKERS = ("exact", "math")


@dataclass(frozen=True)
class PromptFormat:
    instruction: str = ""
    template: str = "Question: {question}\nAnswer:"
    target: str = " {answer}"
    chat_template: str | bool = "auto"
    scoring: str = "generation"
    answer_regex: str = r"(-?\d+)"
    stop: tuple[str, ...] = ("\n",)
    max_gen_toks: int = 16
    choices_field: str = "choices"
    choice_template: str = " {choice}"
    option_labels: str = string.ascii_uppercase
    checker: str = "exact"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: dict | None, where: str = "prompt") -> "PromptFormat":
        """Build from a config dict; unknown keys and bad values raise CrossdiffError naming ``where``."""
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise CrossdiffError(f"{where}: unknown prompt key(s) {unknown}; known keys: {sorted(known)}")
        if "stop" in config:
            stop = config["stop"]
            if isinstance(stop, str):
                stop = [stop]
            if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
                raise CrossdiffError(f"{where}.stop: expected a list of strings, got {stop!r}")
            config["stop"] = tuple(stop)
        fmt = cls(**config)
        fmt.validate(where)
        return fmt

    def to_config(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def validate(self, where: str = "prompt") -> None:
        if self.scoring not in SCORINGS:
            raise CrossdiffError(f"{where}.scoring: expected one of {SCORINGS}, got {self.scoring!r}")
        if self.checker not in CHECKERS:
            raise CrossdiffError(f"{where}.checker: expected one of {CHECKERS}, got {self.checker!r}")
        if self.chat_template not in ("auto", True, False):
            raise CrossdiffError(f"{where}.chat_template: expected 'auto', true or false, got {self.chat_template!r}")
        for key in ("instruction", "template", "target", "answer_regex", "choice_template"):
            if not isinstance(getattr(self, key), str):
                raise CrossdiffError(f"{where}.{key}: expected a string, got {getattr(self, key)!r}")
        try:
            re.compile(self.answer_regex)
        except re.error as exc:
            raise CrossdiffError(f"{where}.answer_regex: invalid regular expression {self.answer_regex!r}: {exc}")
        if not isinstance(self.max_gen_toks, int) or self.max_gen_toks < 1:
            raise CrossdiffError(f"{where}.max_gen_toks: expected a positive integer, got {self.max_gen_toks!r}")
        if not self.template:
            raise CrossdiffError(f"{where}.template: must not be empty")

    # ------------------------------------------------------------------ chat decision
    def use_chat(self, tokenizer) -> bool:
        """Whether the chat template applies for ``tokenizer`` (None = no tokenizer = plain text)."""
        has = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        if self.chat_template is True and not has:
            raise CrossdiffError("prompt.chat_template is true but the tokenizer has no chat template")
        return has and self.chat_template in ("auto", True)

    # ------------------------------------------------------------------ rendering
    def _fill(self, text: str, item: dict, key: str, **extra) -> str:
        values = {**item, **extra}
        try:
            return text.format_map(values)
        except KeyError as exc:
            raise CrossdiffError(
                f"prompt.{key}: placeholder {{{exc.args[0]}}} is not an item column "
                f"(item {item.get('item_id', '?')!r} has {sorted(item)})"
            ) from None
        except (ValueError, IndexError) as exc:
            raise CrossdiffError(f"prompt.{key}: cannot format {text!r}: {exc}") from None

    def choices(self, item: dict) -> list[str]:
        if self.choices_field not in item:
            raise CrossdiffError(
                f"item {item.get('item_id', '?')!r}: multiple_choice needs column {self.choices_field!r}"
            )
        value = item[self.choices_field]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise CrossdiffError(
                    f"item {item.get('item_id', '?')!r}: column {self.choices_field!r} is a string that is not a JSON list"
                ) from None
        value = list(value) if value is not None else []
        if len(value) < 2:
            raise CrossdiffError(f"item {item.get('item_id', '?')!r}: expected at least 2 choices, got {value!r}")
        return [str(v) for v in value]

    def gold_index(self, item: dict) -> int:
        choices = self.choices(item)
        answer = str(item["answer"])
        if answer in choices:
            return choices.index(answer)
        if answer.strip().lstrip("-").isdigit() and 0 <= int(answer) < len(choices):
            return int(answer)
        raise CrossdiffError(
            f"item {item.get('item_id', '?')!r}: answer {answer!r} is neither a choice nor an index into {choices!r}"
        )

    def _extra(self, item: dict) -> dict:
        if self.scoring != "multiple_choice":
            return {}
        choices = self.choices(item)
        labels = self.option_labels
        options = "\n".join(f"{labels[i]}. {c}" for i, c in enumerate(choices))
        return {"options": options}

    def user_text(self, item: dict) -> str:
        """The question rendered with ``template`` (the user turn in chat mode)."""
        return self._fill(self.template, item, "template", **self._extra(item))

    def prompt_text(self, item: dict) -> str:
        """The plain-text prompt: instruction + user text."""
        return self.instruction + self.user_text(item)

    def completion_text(self, item: dict) -> str:
        """The plain-text completion a model is trained to produce."""
        if self.scoring == "multiple_choice":
            return self.choice_texts(item)[self.gold_index(item)]
        return self._fill(self.target, item, "target")

    def choice_texts(self, item: dict) -> list[str]:
        """Each choice's continuation: ``{choice}`` is its text, ``{label}`` its letter (A, B, ...)."""
        return [self._fill(self.choice_template, item, "choice_template", choice=c, label=self.option_labels[i])
                for i, c in enumerate(self.choices(item))]

    def gold(self, item: dict) -> str | int:
        """What lm-eval compares against: the gold answer string (generation) or index (MC)."""
        if self.scoring == "multiple_choice":
            return self.gold_index(item)
        return str(item["answer"]).strip()

    # ------------------------------------------------------------------ SFT
    def sft_record(self, item: dict) -> dict:
        """One training row with both plain and chat renderings; ``finetune`` picks one by tokenizer."""
        completion = self.completion_text(item)
        return {
            "item_id": str(item["item_id"]),
            "prompt": self.prompt_text(item),
            "completion": completion,
            "system": self.instruction.strip(),
            "user": self.user_text(item),
            "assistant": completion.strip(),
        }

    def training_example(self, record: dict, chat: bool) -> dict:
        """TRL prompt/completion example (conversational when ``chat``) from an :meth:`sft_record` row."""
        if not chat:
            return {"prompt": record["prompt"], "completion": record["completion"]}
        prompt = [{"role": "user", "content": record["user"]}]
        if record.get("system"):
            prompt.insert(0, {"role": "system", "content": record["system"]})
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": record["assistant"]}]}

    def render_prompt(self, item: dict, tokenizer=None) -> str:
        """The exact text fed to the model at evaluation (chat-rendered when the chat template applies)."""
        if not self.use_chat(tokenizer):
            return self.prompt_text(item)
        messages = [{"role": "user", "content": self.user_text(item)}]
        if self.instruction.strip():
            messages.insert(0, {"role": "system", "content": self.instruction.strip()})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ evaluation
    def eval_record(self, item: dict) -> dict:
        """One row of an lm-eval task JSONL (columns the task YAML points at)."""
        row = {
            "item_id": str(item["item_id"]),
            "prompt": self.prompt_text(item),
            "user": self.user_text(item),
            "gold": self.gold(item),
        }
        if self.scoring == "multiple_choice":
            row["choices"] = self.choice_texts(item)
        return row

    def extract_answer(self, generated: str) -> str:
        """Mirror of the lm-eval pipeline for generation: cut at stop strings, take the regex match."""
        for s in self.stop:
            if s and s in generated:
                generated = generated.split(s, 1)[0]
        found = re.findall(self.answer_regex, generated)
        if not found:
            return "[invalid]"
        match = found[0]
        if isinstance(match, tuple):
            match = next((m for m in match if m), "[invalid]")
        return match.strip()

    def task_config(self, task_name: str, data_file: str, chat: bool = False) -> dict[str, Any]:
        """lm-eval task YAML content for one bin; ``data_file`` must be an absolute path.

        With ``chat`` the prompt column is the user text only: the evaluator passes the instruction
        as ``system_instruction`` and ``apply_chat_template=True``.
        """
        cfg: dict[str, Any] = {
            "task": task_name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": data_file}},
            "test_split": "test",
            "doc_to_text": "user" if chat else "prompt",
            "doc_to_target": "gold",
            "num_fewshot": 0,
            "metadata": {"version": 1, "chat": chat},
        }
        if self.scoring == "generation":
            cfg.update(
                {
                    "output_type": "generate_until",
                    "target_delimiter": "",
                    "generation_kwargs": {
                        "until": list(self.stop),
                        "do_sample": False,
                        "temperature": 0.0,
                        "max_gen_toks": self.max_gen_toks,
                    },
                    "filter_list": [
                        {
                            "name": "extract",
                            "filter": (
                                [{"function": "crossdiff_math"}, {"function": "take_first"}]
                                if self.checker == "math"
                                else [
                                    {"function": "regex", "regex_pattern": self.answer_regex, "group_select": 0},
                                    {"function": "take_first"},
                                ]
                            ),
                        }
                    ],
                    "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
                }
            )
        else:
            cfg.update(
                {
                    "output_type": "multiple_choice",
                    "doc_to_choice": "choices",
                    "target_delimiter": "",
                    "metric_list": [
                        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                    ],
                }
            )
        return cfg

    @property
    def primary_metric(self) -> str:
        return "exact_match" if self.scoring == "generation" else "acc"

    @property
    def filter_name(self) -> str:
        return "extract" if self.scoring == "generation" else "none"


def load_format(settings: dict | None, where: str = "prompt") -> PromptFormat:
    """PromptFormat from a settings dict that is either the prompt section or holds it under 'prompt'."""
    settings = settings or {}
    if "prompt" in settings and isinstance(settings["prompt"], dict):
        return PromptFormat.from_config(settings["prompt"], where=f"{where}.prompt")
    return PromptFormat.from_config(settings, where=where)
