"""Hase et al. 2024's ``answer_prob`` and ``question_prob``: a base model's summed NLL of the answer / question
text alone (``datasets.<name>.bins.by`` or ``bins.measures``: ``answer_prob:<model slug>``,
``question_prob:<model slug>``).

Their definition (allenai/easy-to-hard-generalization @ ad8358e, main.py:336-361 ``write_text_prob_scores``;
utils/LM_utils.py:266-289 ``score_seq_probs_from_strings``, :169-246 ``make_LM_batch``, :60-62
``compute_probs_from_batch``): each text is scored with an EMPTY prompt: the sequence is ``[BOS] +
tokenizer.encode(text, add_special_tokens=False)`` (no BOS when the tokenizer has none; no EOS), every token of
the text is a target (:227-233), its log-probabilities are SUMMED over tokens (``return_value='log_probs'``, not
normalised by length), and the column they store is the negative of that sum (main.py:351, 356). So the measure
is the summed negative log-likelihood in nats: higher = less likely = harder. Without a BOS token the first text
token has no context and is not scored (the shift at LM_utils.py:52-54), so in both cases the targets are the
sequence's tokens after the first. An empty text scores 0.

The texts, as theirs: ``question_prob`` scores the item's ``question`` column (their ``probing_data.question``);
``answer_prob`` scores ``answer_text`` (their column: the gold option's text, ``yes``/``no`` for StrategyQA,
GSM8K's final answer with commas; crossdiff.items.hase writes it) when the item table has it, else the gold
choice's text of a multiple-choice format, else ``answer``.

crossdiff scores every item of the dataset's IRT table in ONE model load, batched (``evaluate.batch_size``), with
right padding and an attention mask, so a batched value equals the item scored alone. Where crossdiff differs:
their batches are left-padded with the model's own position ids (equal for rotary models such as Llama, whose
attention sees only relative positions; not for absolute-position models), their attention mask hides every
token equal to the pad id (the EOS when the tokenizer has no pad: the BOS too where BOS = EOS, GPT-2 style;
crossdiff attends to every token of the sequence), their Llama runs load 8-bit weights
(crossdiff: ``evaluate.dtype``), and they also average the raw scores over four 7B models (``answer_prob_avg``;
crossdiff: one model per measure, several side by side with ``bins.measures``).

One job writes both tables (``item_id``, ``n_tokens`` = scored tokens, ``measure``).
"""

from __future__ import annotations

import argparse
import math
import time

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet
from crossdiff.prompts.format import PromptFormat

KINDS = ("answer_prob", "question_prob")


def answer_text(item: dict, fmt: PromptFormat) -> str:
    """Their ``answer_text`` of an item (see the module doc)."""
    if item.get("answer_text") is not None:
        return str(item["answer_text"])
    if fmt.scoring == "multiple_choice":
        return fmt.choices(item)[fmt.gold_index(item)]
    return str(item["answer"])


def question_text(item: dict) -> str:
    if item.get("question") is None:
        raise CrossdiffError(f"item {item.get('item_id')!r}: question_prob needs a 'question' column")
    return str(item["question"])


def sequence(tokenizer, text: str) -> list[int]:
    """``[BOS] + encode(text)`` as their make_LM_batch builds it with an empty prompt (LM_utils.py:194-203)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + list(tokenizer.encode(text, add_special_tokens=False))


def summed_nll(model, tokenizer, seqs: list[list[int]], batch_size: int = 32, device: str = "cpu",
               desc: str = "scoring") -> list[float]:
    """Summed NLL of every token after the first of each sequence, batched with right padding (equal to
    scoring each alone)."""
    import torch
    from tqdm import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    values = [0.0] * len(seqs)
    todo = sorted((i for i in range(len(seqs)) if len(seqs[i]) > 1), key=lambda i: len(seqs[i]))
    with torch.no_grad(), tqdm(total=len(todo), desc=desc, unit="item") as bar:
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, :len(seqs[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            nll = nll * mask[:, 1:].to(device)
            for row, i in enumerate(idx):
                values[i] = float(nll[row].sum())
            bar.update(len(idx))
    return values


def text_prob_tables(items_path, irt_path, model, outputs: dict, prompt: dict | None = None,
                     settings: dict | None = None, model_name: str | None = None) -> dict[str, pl.DataFrame]:
    """Score every IRT item's question and answer text with one model load; ``outputs``: {kind: path}."""
    from crossdiff.bins.holdout import bin_items
    from crossdiff.compute import require_device
    from crossdiff.evaluate.loss_measure import load_model

    unknown = sorted(set(outputs) - set(KINDS))
    if unknown or not outputs:
        raise CrossdiffError(f"text-prob measures: unknown {unknown}; expected some of {list(KINDS)}")
    s = settings or {}
    require_device(s.get("device"), "evaluate.device")  # at job start, before any model loads
    if s.get("limit"):
        raise CrossdiffError(f"evaluate.limit = {s['limit']} would score only part of the items; answer_prob and "
                             "question_prob need every item scored: unset evaluate.limit")
    batch = s.get("batch_size", 32)
    batch = 32 if not isinstance(batch, int) else batch  # "auto" is lm-eval's; a fixed batch here
    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    fmt = PromptFormat.from_config(prompt)
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="crossdiff-textprob-") as tmp:
        path = Path(tmp) / "all.parquet"
        write_parquet(pl.DataFrame({"item_id": ids, "bin": [0] * len(ids)}), path)
        rows = bin_items(items_path, path, None).to_dicts()  # every IRT item must be in the item table
    texts = {"answer_prob": [answer_text(r, fmt) for r in rows] if "answer_prob" in outputs else None,
             "question_prob": [question_text(r) for r in rows] if "question_prob" in outputs else None}
    net, tokenizer, device = load_model(model, s)
    limit = getattr(net.config, "max_position_embeddings", None)
    tables = {}
    for kind, path in outputs.items():
        seqs = [sequence(tokenizer, t) for t in texts[kind]]
        long = [(r["item_id"], len(q)) for r, q in zip(rows, seqs) if limit and len(q) > limit]
        if long:
            raise CrossdiffError(f"{kind}: {len(long)} item(s) have more tokens than {model_name or model}'s "
                                 f"max_position_embeddings {limit}, e.g. {long[:3]}")
        t0 = time.time()
        values = summed_nll(net, tokenizer, seqs, batch, device, desc=kind)
        bad = [r["item_id"] for r, v in zip(rows, values) if not math.isfinite(v)]
        if bad:
            raise CrossdiffError(f"{kind} of {model_name or model} is not finite for {len(bad)} item(s), e.g. {bad[:3]}")
        table = pl.DataFrame({"item_id": [str(r["item_id"]) for r in rows],
                              "n_tokens": [max(len(q) - 1, 0) for q in seqs], "measure": values},
                             schema={"item_id": pl.Utf8, "n_tokens": pl.Int64, "measure": pl.Float64})
        write_parquet(table, path)
        tables[kind] = table
        print(f"{model_name or model}: {kind} (summed NLL, empty prompt, BOS {tokenizer.bos_token_id is not None}) "
              f"of {table.height} items in {time.time() - t0:.1f} s (batch {batch}): mean {table['measure'].mean():.3f}, "
              f"min {table['measure'].min():.3f}, max {table['measure'].max():.3f}")
    return tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet): the items' text")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items to score (all of them)")
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the log")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format (the gold "
                   "choice of multiple-choice items without an answer_text column)")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings (batch_size, device, dtype)")
    p.add_argument("--answer-output", help="answer_prob table (parquet: item_id, n_tokens, measure)")
    p.add_argument("--question-output", help="question_prob table (parquet: item_id, n_tokens, measure)")


def run(args: argparse.Namespace) -> None:
    outputs = {k: v for k, v in (("answer_prob", args.answer_output), ("question_prob", args.question_output)) if v}
    if not outputs:
        raise CrossdiffError("give --answer-output and/or --question-output")
    text_prob_tables(args.items, args.irt, args.model, outputs, args.prompt, args.settings, args.model_name)
