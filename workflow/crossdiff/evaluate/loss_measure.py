"""Difficulty as the base model's loss on the answer (``datasets.<name>.bins.by: loss:<model slug>``).

The measure of an item is the base model's mean per-token negative log-likelihood (nats) of the item's
TRAINING target (the completion that fine-tuning learns, :meth:`PromptFormat.sft_record`) given its
training prompt, tokenized as TRL's SFTTrainer tokenizes it: with the chat template when the format and
the tokenizer use one (system + user turns, the assistant turn is the target; rendered by
:func:`crossdiff.prompts.chat.render_chat` with training's fixed ``date_string``), else the plain prompt and
completion with the tokenizer's EOS appended to the completion (SFTTrainer appends it, and it is trained
on). The completion tokens are those after the common prefix of the prompt's and the full example's
token ids (TRL's rule). Every item of the dataset's IRT table is scored in ONE model load, in batches
(``evaluate.batch_size``; right padding with an attention mask, so a batched value equals the unbatched
one). Higher loss = harder.

The table has one row per item: ``item_id``, ``n_target_tokens``, ``measure`` (mean NLL).
``crossdiff make-bins --by loss:<slug> --measure-table`` bins by it with ties broken as for the
zero-shot measure (IRT difficulty, then item_id).
"""

from __future__ import annotations

import argparse
import math
import time

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet
from crossdiff.prompts.chat import render_chat
from crossdiff.prompts.format import PromptFormat

PREFIX = "loss:"

#: model loads done by :func:`load_model` in this process (tests assert one per measure)
MODEL_LOADS = 0


def model_of(by: str) -> str | None:
    """The model slug of a ``loss:<slug>`` bins.by value, else None."""
    return by[len(PREFIX):] if by.startswith(PREFIX) else None


def check_by(dataset: str, by: str, models) -> None:
    """Config-time check: ``loss:<slug>`` must name one of the configured models (crossdiff.bins.measures)."""
    from crossdiff.bins.measures import check_by as check

    if model_of(by) is not None:
        check(dataset, by, models)


def _ids(x) -> list[int]:
    return list(x["input_ids"] if hasattr(x, "keys") else x)


def tokenize_example(tokenizer, record: dict, fmt: PromptFormat) -> tuple[list[int], int]:
    """(token ids of prompt + target, number of prompt tokens) of one :meth:`sft_record` row, as TRL trains it."""
    chat = fmt.use_chat(tokenizer)
    ex = fmt.training_example(record, chat)
    if chat:  # rendered as training renders it: the fixed date_string (crossdiff.prompts.chat)
        prompt = render_chat(tokenizer, ex["prompt"], add_generation_prompt=True, tokenize=True)
        full = render_chat(tokenizer, ex["prompt"] + ex["completion"], tokenize=True)
    else:
        completion = ex["completion"]
        eos = getattr(tokenizer, "eos_token", None)
        if eos and not completion.endswith(eos):
            completion += eos
        prompt = _ids(tokenizer(ex["prompt"]))
        full = _ids(tokenizer(ex["prompt"] + completion))
    n = 0
    while n < min(len(prompt), len(full)) and prompt[n] == full[n]:
        n += 1
    if n >= len(full):
        raise CrossdiffError(f"item {record.get('item_id')!r}: the training target has no token of its own")
    return full, n


def load_model(model_path, settings: dict | None = None):
    """(model, tokenizer, device) from a local directory or hub id; counted in MODEL_LOADS."""
    global MODEL_LOADS
    from crossdiff.hub import offline_env

    offline_env(model_path)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crossdiff.compute import deterministic_torch, device_for

    s = settings or {}
    device = device_for(s.get("device", "auto"), "evaluate.device")
    deterministic_torch(device)
    dtype = s.get("dtype", "auto")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    t0 = time.time()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, dtype))
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossdiffError(f"{model_path}: cannot load model/tokenizer: {first}") from None
    model.to(device).eval()
    MODEL_LOADS += 1
    print(f"loaded model {model_path} ({device}, {dtype}) in {time.time() - t0:.1f} s")
    return model, tokenizer, device


def target_losses(model, tokenizer, examples: list[tuple[list[int], int]], batch_size: int = 32,
                  device: str = "cpu") -> list[tuple[float, int]]:
    """(mean NLL of the target tokens, number of target tokens) per (ids, n_prompt) example, batched."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))  # similar lengths batch together
    values: dict[int, tuple[float, int]] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(examples[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            target = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, n_prompt = examples[i]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
                target[row, n_prompt:len(seq)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)  # token k+1 given 0..k
            tmask = target[:, 1:].to(device)
            for row, i in enumerate(idx):
                n = int(tmask[row].sum())
                values[i] = (float(nll[row][tmask[row]].sum()) / n, n)
    return [values[i] for i in range(len(examples))]


def loss_table(items_path, irt_path, model, output, prompt: dict | None = None, settings: dict | None = None,
               model_name: str | None = None) -> pl.DataFrame:
    """Score every IRT item's training target with one model load; write and return the measure table."""
    from crossdiff.bins.holdout import bin_items
    from crossdiff.compute import require_device

    require_device((settings or {}).get("device"), "evaluate.device")  # at job start, before any model loads
    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    s = settings or {}
    if s.get("limit"):
        raise CrossdiffError(f"evaluate.limit = {s['limit']} would score only part of the items; "
                             "bins.by loss needs every item scored: unset evaluate.limit")
    batch = s.get("batch_size", 32)
    batch = 32 if not isinstance(batch, int) else batch  # "auto" is lm-eval's; a fixed batch here
    fmt = PromptFormat.from_config(prompt)
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    all_bins = pl.DataFrame({"item_id": ids, "bin": [0] * len(ids)})
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="crossdiff-loss-") as tmp:
        path = Path(tmp) / "all.parquet"
        write_parquet(all_bins, path)
        rows = bin_items(items_path, path, None).to_dicts()  # every IRT item must be in the item table
    net, tokenizer, device = load_model(model, s)
    examples = [tokenize_example(tokenizer, fmt.sft_record(r), fmt) for r in rows]
    t0 = time.time()
    values = target_losses(net, tokenizer, examples, batch, device)
    bad = [r["item_id"] for r, (v, _) in zip(rows, values) if not math.isfinite(v)]
    if bad:
        raise CrossdiffError(f"loss of {model_name or model} is not finite for {len(bad)} item(s), e.g. {bad[:3]}")
    table = pl.DataFrame({"item_id": [str(r["item_id"]) for r in rows],
                          "n_target_tokens": [n for _, n in values],
                          "measure": [v for v, _ in values]},
                         schema={"item_id": pl.Utf8, "n_target_tokens": pl.Int64, "measure": pl.Float64})
    write_parquet(table, output)
    print(f"{model_name or model}: mean target NLL of {table.height} items in {time.time() - t0:.1f} s "
          f"(batch {batch}, chat template {fmt.use_chat(tokenizer)}): mean {table['measure'].mean():.3f}, "
          f"min {table['measure'].min():.3f}, max {table['measure'].max():.3f}")
    return table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet): the items' text")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items to score (all of them)")
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the log")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings (batch_size, device, dtype)")
    p.add_argument("--output", required=True, help="per-item table (parquet: item_id, n_target_tokens, measure)")


def run(args: argparse.Namespace) -> None:
    loss_table(args.items, args.irt, args.model, args.output, args.prompt, args.settings, args.model_name)
