"""Prompt/completion JSONL for fine-tuning on one difficulty bin (``results/sft/{dataset}/bin{b}.jsonl``).

Each row holds both renderings produced by :meth:`crossdiff.prompts.format.PromptFormat.sft_record`
(plain ``prompt``/``completion`` and chat ``system``/``user``/``assistant``); ``finetune`` picks one
according to the model's tokenizer. Items are written in item_id order. Each row also holds the item's answer
options (``options``: continuation texts, ``gold_option``: the gold's index; :mod:`crossdiff.prompts.options`) for
``finetune.objective: multiple_choice``, or ``options: null`` and the reason (``options_error``) where an item has
none (a generation item whose answer is not an integer).
"""

from __future__ import annotations

import argparse
import os

import polars as pl

from crossdiff.bins.holdout import bin_items, training_part
from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_jsonl
from crossdiff.prompts.chat import render_chat
from crossdiff.prompts.format import PromptFormat


def make_sft_data(items_path, bins_path, b: int, output: str | os.PathLike, prompt: dict | None = None) -> int:
    fmt = PromptFormat.from_config(prompt)
    df = training_part(bin_items(items_path, bins_path, b))  # without bins.holdout_fraction's held-out items
    rows = [{**fmt.sft_record(item), "bin": int(item["bin"]), **option_fields(fmt, item)} for item in df.to_dicts()]
    write_jsonl(rows, output)
    return len(rows)


def option_fields(fmt: PromptFormat, item: dict) -> dict:
    """``options`` and ``gold_option`` of a training row (module doc)."""
    from crossdiff.prompts.options import options

    if fmt.lm_eval_task is not None:
        return {"options": None, "gold_option": None,
                "options_error": "an lm_eval_task dataset's options are the task's own (not rendered by crossdiff)"}
    try:
        texts, gold = options(fmt, item)
    except CrossdiffError as exc:
        return {"options": None, "gold_option": None, "options_error": str(exc)}
    return {"options": texts, "gold_option": gold}


def _token_lengths(tokenizer, example: dict, chat: bool) -> tuple[int, int]:
    """(prompt tokens, prompt+completion tokens) of one TRL example, tokenized the way SFTTrainer does."""
    if chat:  # the example's chat_template_kwargs are the fixed ones: crossdiff.prompts.chat renders both
        kw = example.get("chat_template_kwargs") or None
        prompt = render_chat(tokenizer, example["prompt"], add_generation_prompt=True, tokenize=True, extra=kw)
        full = render_chat(tokenizer, example["prompt"] + example["completion"], tokenize=True, extra=kw)
    else:
        completion = example["completion"]
        eos = getattr(tokenizer, "eos_token", None)
        if eos and not completion.endswith(eos):  # SFTTrainer appends EOS to plain completions
            completion += eos
        prompt = tokenizer(example["prompt"])["input_ids"]
        full = tokenizer(example["prompt"] + completion)["input_ids"]
    n = 0  # the completion starts where the two diverge (TRL's common prefix rule)
    while n < min(len(prompt), len(full)) and prompt[n] == full[n]:
        n += 1
    return n, len(full)


def check_lengths(trainer, rows: list[dict], fmt: PromptFormat, max_length: int | None) -> dict:
    """Count training examples cut by ``max_length``; an example left with no completion token is an error
    (``prompt.on_no_completion: error``) or dropped (``drop``; SFTTrainer then leaves it out), never a silent
    zero-loss row. Returns the counts recorded in ``train_metrics.json`` under ``lengths``."""
    tokenizer = trainer.processing_class
    chat = fmt.use_chat(tokenizer)
    n_truncated = n_cut = 0
    empty: list[str] = []
    longest = 0
    for row in rows:
        prompt_len, total = _token_lengths(tokenizer, fmt.training_example(row, chat), chat)
        longest = max(longest, total)
        if max_length is None or total <= max_length:
            continue
        n_truncated += 1
        if prompt_len >= max_length:
            empty.append(str(row.get("item_id", "?")))
        else:
            n_cut += 1
    report = {
        "max_length": max_length, "n_examples": len(rows), "n_truncated": n_truncated,
        "n_completion_cut": n_cut, "n_no_completion_left": len(empty), "no_completion_item_ids": empty[:50],
        "longest_example_tokens": longest, "on_no_completion": fmt.on_no_completion,
        "n_trained": len(trainer.train_dataset),
    }
    if empty and fmt.on_no_completion == "error":
        raise CrossdiffError(
            f"{len(empty)} of {len(rows)} training example(s) have no completion token left within max_length "
            f"{max_length} (their prompt alone is that long), e.g. item(s) {empty[:5]}; longest example "
            f"{longest} tokens. Raise max_length (datasets.<name>.finetune.max_length or models[].finetune.max_length, "
            f"which win over the dataset's prompt.max_length; `crossdiff resolve` shows the value used), shorten the "
            f"prompt, or set "
            f"prompt.on_no_completion: drop to leave them out")
    # SFTTrainer itself leaves out examples without completion tokens; a different count means this
    # tokenization differs from TRL's for some example: said loudly, and recorded, not fatal
    report["count_matches_trainer"] = len(rows) - len(empty) == report["n_trained"]
    if not report["count_matches_trainer"]:
        print(f"WARNING: length check expected {len(rows) - len(empty)} trainable examples but SFTTrainer kept "
              f"{report['n_trained']}: its tokenization differs from this check's for some example")
    if n_truncated:
        print(f"max_length {max_length}: {n_truncated} example(s) truncated, {n_cut} with their completion cut, "
              f"{len(empty)} dropped with no completion left (longest {longest} tokens)")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet: item_id, difficulty, bin)")
    p.add_argument("--bin", type=int, required=True, help="training bin (0 = easiest)")
    p.add_argument("--output", required=True, help="prompt/completion JSONL to write")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")


def run(args: argparse.Namespace) -> None:
    n = make_sft_data(args.items, args.bins, args.bin, args.output, args.prompt)
    print(f"wrote {n} training examples for bin {args.bin} to {args.output}")
