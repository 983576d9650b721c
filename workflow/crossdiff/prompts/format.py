"""The ONE definition of how an item becomes a prompt and a completion.

Training (``sft_data`` / ``finetune``) and evaluation (``evaluate``: the lm-eval task YAML and JSONL)
both render items through :class:`PromptFormat`, so the text a model is trained on and the text it
is scored on cannot drift apart. The evaluation JSONL stores the rendered prompt per item and the
task YAML points at that column, so lm-eval never re-renders it with its own (Jinja) rules.

Config keys: the ``prompt`` section of a dataset (every key optional), documented in config/README.md
("datasets.<name>.prompt") with each benchmark adapter's defaults (the authors' format). In short:
rendering (``instruction``, ``template``, ``train_template``, ``target``, ``target_regex_sub``,
``option_template``, ``labels_field``, ``choices_field``, ``choice_template``, ``option_labels``,
``chat_template``), scoring in lm-eval's vocabulary (``scoring``, ``stop``, ``max_gen_toks``,
``answer_regex``/``checker`` or ``filters`` + ``primary_filter``, ``reference``, ``ignore_case``,
``ignore_punctuation``, ``regexes_to_ignore``, ``metrics``), training limits (``max_length``,
``on_no_completion``) and a generation item's answer options for the option-scoring methods (``candidates``:
:mod:`crossdiff.prompts.options`). Placeholders: any item column, plus ``{options}`` (the option lines) and
``{gold_label}`` (the gold option's label) when the item has choices.

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
from crossdiff.prompts import chat as _chat
from crossdiff.prompts import scoring as _scoring

SCORINGS = ("generation", "multiple_choice")
CHECKERS = ("exact", "math")
MC_METRICS = ("acc", "acc_norm")
NO_COMPLETION = ("error", "drop")

#: variables every chat template is rendered with (crossdiff.prompts.chat, which renders every chat template)
CHAT_TEMPLATE_KWARGS = _chat.CHAT_TEMPLATE_KWARGS


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
    train_template: str | None = None
    target_regex_sub: tuple[tuple[str, str], ...] = ()
    reference: str = "{answer}"
    option_template: str = "{label}. {choice}"
    labels_field: str | None = None
    filters: tuple[dict, ...] | None = None
    primary_filter: str | None = None
    ignore_case: bool = False
    ignore_punctuation: bool = False
    regexes_to_ignore: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    max_length: int | None = None
    on_no_completion: str = "error"
    lm_eval_task: dict | None = None  # items.source lm_eval_task: evaluation runs that task's own config
    candidates: dict | None = None  # generation: the options of probe / mdl / multiple_choice loss (prompts/options.py)

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
        for key in ("regexes_to_ignore", "metrics"):
            value = config.get(key)
            if value is None:
                continue
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise CrossdiffError(f"{where}.{key}: expected a list of strings, got {value!r}")
            config[key] = tuple(value)
        if config.get("target_regex_sub") is not None:
            subs = config["target_regex_sub"]
            if not isinstance(subs, (list, tuple)) or not all(
                    isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in subs):
                raise CrossdiffError(f"{where}.target_regex_sub: expected a list of [pattern, replacement] string pairs, "
                                     f"got {subs!r}")
            config["target_regex_sub"] = tuple(tuple(p) for p in subs)
        if config.get("filters") is not None:
            config["filters"] = tuple(_scoring.check_filters(config["filters"], f"{where}.filters"))
        fmt = cls(**config)
        fmt.validate(where)
        return fmt

    def to_config(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["target_regex_sub"] = [list(p) for p in self.target_regex_sub]
        d["regexes_to_ignore"] = list(self.regexes_to_ignore)
        d["filters"] = None if self.filters is None else [dict(f) for f in self.filters]
        d["metrics"] = None if self.metrics is None else list(self.metrics)
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
        for key in ("train_template", "labels_field", "primary_filter"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise CrossdiffError(f"{where}.{key}: expected a string or null, got {getattr(self, key)!r}")
        for key in ("reference", "option_template"):
            if not isinstance(getattr(self, key), str):
                raise CrossdiffError(f"{where}.{key}: expected a string, got {getattr(self, key)!r}")
        for key in ("ignore_case", "ignore_punctuation"):
            if not isinstance(getattr(self, key), bool):
                raise CrossdiffError(f"{where}.{key}: expected true or false, got {getattr(self, key)!r}")
        for pattern in [p for p, _ in self.target_regex_sub] + list(self.regexes_to_ignore):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CrossdiffError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
        if self.on_no_completion not in NO_COMPLETION:
            raise CrossdiffError(f"{where}.on_no_completion: expected one of {NO_COMPLETION}, got {self.on_no_completion!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise CrossdiffError(f"{where}.max_length: expected an integer >= 2 or null, got {self.max_length!r}")
        if self.candidates is not None:
            from crossdiff.prompts.options import check_candidates

            check_candidates(self.candidates, f"{where}.candidates")
        if self.metrics is not None:
            allowed = ("exact_match",) if self.scoring == "generation" else MC_METRICS
            bad = [m for m in self.metrics if m not in allowed]
            if bad or not self.metrics:
                raise CrossdiffError(f"{where}.metrics: {self.scoring} scoring supports {list(allowed)}, got {list(self.metrics)}")
        if self.scoring == "generation" and self.primary_filter is not None:
            names = [f["name"] for f in self.filter_list()]
            if self.primary_filter not in names:
                raise CrossdiffError(f"{where}.primary_filter: {self.primary_filter!r} is not one of the filters {names}")

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

    def labels(self, item: dict) -> list[str]:
        """Option labels of an item: its own (``labels_field``) or the first letters of ``option_labels``."""
        n = len(self.choices(item))
        if self.labels_field is None:
            if n > len(self.option_labels):
                raise CrossdiffError(f"item {item.get('item_id', '?')!r}: {n} choices but only "
                                     f"{len(self.option_labels)} option_labels")
            return list(self.option_labels[:n])
        value = item.get(self.labels_field)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise CrossdiffError(f"item {item.get('item_id', '?')!r}: column {self.labels_field!r} (labels_field) must "
                                 f"hold {n} labels, one per choice; got {item.get(self.labels_field)!r}")
        return [str(v) for v in value]

    def _has_choices(self, item: dict) -> bool:
        return self.scoring == "multiple_choice" or item.get(self.choices_field) is not None

    def _extra(self, item: dict) -> dict:
        if not self._has_choices(item):
            return {}
        choices, labels = self.choices(item), self.labels(item)
        options = "\n".join(
            self._fill(self.option_template, item, "option_template", label=labels[i], number=i + 1, choice=c)
            for i, c in enumerate(choices))
        return {"options": options, "gold_label": labels[self.gold_index(item)]}

    def user_text(self, item: dict) -> str:
        """The question rendered with ``template`` (the user turn in chat mode; evaluation)."""
        return self._fill(self.template, item, "template", **self._extra(item))

    def train_user_text(self, item: dict) -> str:
        """The question as the model is TRAINED on it: ``train_template`` when set, else ``template``."""
        if self.train_template is None:
            return self.user_text(item)
        return self._fill(self.train_template, item, "train_template", **self._extra(item))

    def prompt_text(self, item: dict) -> str:
        """The plain-text prompt: instruction + user text."""
        return self.instruction + self.user_text(item)

    def completion_text(self, item: dict) -> str:
        """The plain-text completion a model is trained to produce."""
        if self.scoring == "multiple_choice":
            return self.choice_texts(item)[self.gold_index(item)]
        text = self._fill(self.target, item, "target", **self._extra(item))
        for pattern, repl in self.target_regex_sub:
            text = re.sub(pattern, repl, text)
        return text

    def choice_texts(self, item: dict) -> list[str]:
        """Each choice's continuation: ``{choice}`` is its text, ``{label}`` its letter (A, B, ...)."""
        labels = self.labels(item)
        return [self._fill(self.choice_template, item, "choice_template", choice=c, label=labels[i], number=i + 1)
                for i, c in enumerate(self.choices(item))]

    def gold(self, item: dict) -> str | int:
        """What lm-eval compares against: the gold answer string (generation) or index (MC)."""
        if self.scoring == "multiple_choice":
            return self.gold_index(item)
        return self._fill(self.reference, item, "reference", **self._extra(item)).strip()

    # ------------------------------------------------------------------ SFT
    def sft_record(self, item: dict) -> dict:
        """One training row with both plain and chat renderings; ``finetune`` picks one by tokenizer."""
        completion = self.completion_text(item)
        system = self.instruction.strip()
        if self.lm_eval_task is not None and item.get("lm_eval_system"):
            system = str(item["lm_eval_system"])  # lm-eval's system turn (instruction + the task's description)
        return {
            "item_id": str(item["item_id"]),
            "prompt": self.instruction + self.train_user_text(item),
            "completion": completion,
            "system": system,
            "user": self.train_user_text(item),
            "assistant": completion.strip(),
        }

    def training_example(self, record: dict, chat: bool) -> dict:
        """TRL prompt/completion example (conversational when ``chat``) from an :meth:`sft_record` row."""
        if not chat:
            return {"prompt": record["prompt"], "completion": record["completion"]}
        prompt = [{"role": "user", "content": record["user"]}]
        if record.get("system"):
            prompt.insert(0, {"role": "system", "content": record["system"]})
        # TRL renders conversational examples itself, with these variables: those of crossdiff.prompts.chat
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": record["assistant"]}],
                "chat_template_kwargs": _chat.template_kwargs()}

    def render_prompt(self, item: dict, tokenizer=None) -> str:
        """The exact text fed to the model at evaluation (chat-rendered when the chat template applies)."""
        if not self.use_chat(tokenizer):
            return self.prompt_text(item)
        messages = [{"role": "user", "content": self.user_text(item)}]
        if self.instruction.strip():
            messages.insert(0, {"role": "system", "content": self.instruction.strip()})
        return _chat.render_chat(tokenizer, messages, add_generation_prompt=True)

    def render_training(self, item: dict, tokenizer=None) -> tuple[str, str]:
        """(prompt, completion) exactly as training sees them (chat-rendered when the chat template applies)."""
        record = self.sft_record(item)
        if not self.use_chat(tokenizer):
            return record["prompt"], record["completion"]
        ex = self.training_example(record, chat=True)
        prompt = _chat.render_chat(tokenizer, ex["prompt"], add_generation_prompt=True)
        full = _chat.render_chat(tokenizer, ex["prompt"] + ex["completion"])
        if not full.startswith(prompt):
            raise CrossdiffError("the chat template renders the prompt differently with and without the answer; "
                                 "cannot split training text into prompt and completion")
        return prompt, full[len(prompt):]

    # ------------------------------------------------------------------ evaluation
    def eval_record(self, item: dict) -> dict:
        """One row of an lm-eval task JSONL (columns the task YAML points at)."""
        row = {
            "item_id": str(item["item_id"]),
            "prompt": self.prompt_text(item),
            "user": self.user_text(item),
            "gold": self.gold(item),
            "question": str(item.get("question", "")),
            "subtask": str(item.get("subtask") or ""),
        }
        for col in ("instruction_id_list", "kwargs", "key"):  # IFEval: what lm-eval's checkers read
            if item.get(col) is not None:
                row[col] = str(item[col])
        if self.scoring == "multiple_choice":
            row["choices"] = self.choice_texts(item)
            # with the chat template lm-eval drops the target delimiter, and training strips the
            # assistant turn: the chat task scores the stripped continuations, as they were trained
            row["choices_chat"] = [c.strip() for c in row["choices"]]
        return row

    def filter_list(self) -> list[dict]:
        """lm-eval ``filter_list`` of a generation task (declared, or one ``extract`` filter)."""
        return [dict(f) for f in self.filters] if self.filters is not None else _scoring.default_filters(self)

    def extract_answer(self, generated: str, filter_name: str | None = None) -> str:
        """The prediction lm-eval's filter pipeline makes of ``generated`` (after the stop strings)."""
        return _scoring.apply_filter(self, generated, filter_name)

    def task_config(self, task_name: str, data_file: str, chat: bool = False) -> dict[str, Any]:
        """lm-eval task YAML content for one bin; ``data_file`` must be an absolute path.

        With ``chat`` the prompt column is the user text only: the evaluator passes the instruction
        as ``system_instruction`` and ``apply_chat_template=True``.
        """
        return _scoring.task_config(self, task_name, data_file, chat)

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.metrics is not None:
            return self.metrics
        return ("exact_match",) if self.scoring == "generation" else MC_METRICS

    @property
    def primary_metric(self) -> str:
        return self.metric_names[0]

    @property
    def filter_name(self) -> str:
        if self.scoring != "generation":
            return "none"
        return self.primary_filter or self.filter_list()[0]["name"]


def load_format(settings: dict | None, where: str = "prompt") -> PromptFormat:
    """PromptFormat from a settings dict that is either the prompt section or holds it under 'prompt'."""
    settings = settings or {}
    if "prompt" in settings and isinstance(settings["prompt"], dict):
        return PromptFormat.from_config(settings["prompt"], where=f"{where}.prompt")
    return PromptFormat.from_config(settings, where=where)
