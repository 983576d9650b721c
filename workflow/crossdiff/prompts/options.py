"""An item's answer options, for the methods that score options (``study.methods: probe``, ``bins.by: mdl:...``,
``finetune.objective: multiple_choice``; Hase et al. 2024).

Hase et al. score every (question, option) sequence: the zero-shot prompt followed by the option's text
(allenai/easy-to-hard-generalization, utils/LM_utils.py:194-203, ``[BOS] + enc(prompt) + enc(option)``). Here:

* ``prompt.scoring: multiple_choice``: the item's choices, as the evaluation scores them
  (:meth:`PromptFormat.choice_texts`: ``choice_template`` applied; with the chat template the stripped texts, as
  ``choices_chat``), gold = :meth:`PromptFormat.gold_index`.
* ``prompt.scoring: generation`` (the embedded arithmetic, GSM8K): a documented candidate set,
  ``prompt.candidates`` (``{n: 4, max_offset: 5}``): the gold integer answer and ``n - 1`` distinct other
  integers ``gold + d``, ``d`` drawn without replacement from ``[-max_offset, max_offset] \\ {0}`` by a generator
  seeded with the item id (the same options in every job), sorted ascending (the gold's position varies). Each
  option's text is the format's ``target`` rendered with ``answer`` = that integer when the target names no other
  column, else ``" <integer>"``. An item whose answer is not an integer is refused, naming it.

The sequence of an option (:func:`option_sequences`): the evaluation's prompt (:meth:`PromptFormat.render_prompt`:
chat-rendered when the chat template applies) and the option's continuation, tokenised separately and concatenated
(as theirs: the prompt with the tokenizer's special tokens, i.e. BOS where the tokenizer adds one; the option
without).
"""

from __future__ import annotations

import hashlib
import re
import string

import numpy as np

from crossdiff.errors import CrossdiffError

CANDIDATE_DEFAULTS = {"n": 4, "max_offset": 5}


def check_candidates(value, where: str = "prompt.candidates") -> dict:
    """``prompt.candidates`` over its defaults, validated."""
    if value is None:
        return dict(CANDIDATE_DEFAULTS)
    if not isinstance(value, dict):
        raise CrossdiffError(f"{where}: expected an object {{n, max_offset}}, got {value!r}")
    bad = sorted(set(value) - set(CANDIDATE_DEFAULTS))
    if bad:
        raise CrossdiffError(f"{where}: unknown key(s) {bad}; known: {sorted(CANDIDATE_DEFAULTS)}")
    c = {**CANDIDATE_DEFAULTS, **value}
    for key in c:
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 1:
            raise CrossdiffError(f"{where}.{key}: expected an integer >= 1, got {c[key]!r}")
    if c["n"] < 2:
        raise CrossdiffError(f"{where}.n: expected at least 2 options, got {c['n']}")
    if 2 * c["max_offset"] < c["n"] - 1:
        raise CrossdiffError(f"{where}: {c['n'] - 1} distinct non-zero offsets do not fit in "
                             f"[-{c['max_offset']}, {c['max_offset']}]; raise max_offset or lower n")
    return c


def _item_seed(item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(str(item_id).encode()).digest()[:8], "little")


def candidate_values(item_id: str, gold: int, candidates: dict) -> list[int]:
    """The integer options of a generation item (module doc), ascending."""
    c = check_candidates(candidates)
    offsets = [d for d in range(-c["max_offset"], c["max_offset"] + 1) if d != 0]
    rng = np.random.default_rng(_item_seed(item_id))
    picked = rng.choice(len(offsets), size=c["n"] - 1, replace=False)
    return sorted([int(gold)] + [int(gold) + offsets[i] for i in picked])


def _integer(value) -> int | None:
    text = str(value).strip().replace(",", "")
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def options(fmt, item: dict) -> tuple[list[str], int]:
    """(continuation text of each option, index of the gold option) of an item under format ``fmt``."""
    if fmt.scoring == "multiple_choice":
        return fmt.choice_texts(item), fmt.gold_index(item)
    gold = _integer(item.get("answer"))
    if gold is None:
        raise CrossdiffError(
            f"item {item.get('item_id', '?')!r}: answer {item.get('answer')!r} is not an integer; a generation "
            "dataset's options for probe / mdl / finetune.objective multiple_choice are integers near the gold "
            "(prompt.candidates); give the dataset a multiple_choice format instead")
    values = candidate_values(str(item.get("item_id")), gold, fmt.candidates)
    names = {f[1] for f in string.Formatter().parse(fmt.target) if f[1] is not None}
    if names <= {"answer"}:
        texts = [fmt._fill(fmt.target, {**item, "answer": str(v)}, "target") for v in values]
    else:  # a target with other columns (e.g. a worked solution): the bare answer after a space
        texts = [f" {v}" for v in values]
    return texts, values.index(gold)


def option_sequences(fmt, item: dict, tokenizer=None) -> tuple[str, list[str], int, bool]:
    """(context, continuations, gold index, chat) as the option-scoring methods tokenise them (module doc)."""
    chat = fmt.use_chat(tokenizer)
    texts, gold = options(fmt, item)
    if chat:  # lm-eval's chat path drops the target delimiter; training strips the assistant turn
        texts = [t.strip() for t in texts]
    return fmt.render_prompt(item, tokenizer), texts, gold, chat


def token_ids(tokenizer, context: str, continuation: str, chat: bool = False) -> tuple[list[int], int]:
    """(token ids of context + continuation, number of context tokens): tokenised separately (module doc)."""
    ctx = list(tokenizer(context, add_special_tokens=not chat)["input_ids"])
    cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    if not cont:
        raise CrossdiffError(f"option {continuation!r}: no tokens")
    return ctx + cont, len(ctx)
