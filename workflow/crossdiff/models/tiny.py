"""The embedded default's tiny local base model.

A Llama-architecture causal LM (about 0.5M parameters with the default settings) with a byte-level BPE tokenizer trained
locally (digits split one per token), saved with ``save_pretrained`` so ``AutoModelForCausalLM`` and
``AutoTokenizer`` load the directory like a hub model. It then gets a short, seeded warm-up on
generated arithmetic problems that are DISJOINT from the benchmark items (their questions are
excluded) and mostly easy, rendered with the same :class:`~crossdiff.prompts.format.PromptFormat` used for
fine-tuning and evaluation, so its zero-shot accuracy is well above zero on easy items and falls
with difficulty. ``build_info.json`` beside the weights records sizes, seed, steps, loss, wall time
and the measured zero-shot accuracy by ``n_ops`` on (a sample of) the benchmark items.

Settings (``--settings`` JSON; all optional):

==================  =========  ==========================================================
key                 default    meaning
==================  =========  ==========================================================
seed                0          seeds data generation, init and batch order
hidden_size         128        model width
num_layers          3          transformer blocks
num_heads           4          attention heads
intermediate_size   256        MLP width
vocab_size          400        BPE vocabulary size (upper bound)
max_length          96         maximum tokens per example
warmup_problems     8000       generated warm-up problems
warmup_steps        1000       optimizer steps (0 = untrained model)
batch_size          64
learning_rate       0.003      AdamW, linear decay after 5% warm-up
max_ops             5          warm-up problems' largest number of operations
max_digits          2          warm-up problems' largest operand size
ops_weights         [.45, .3, .13, .08, .04]  share of 1..max_ops operations (cut or padded with
                               the last weight to max_ops entries)
operators           [+, -, *]  warm-up problems' operators
eval_items          300        benchmark items scored for build_info (0 = skip)
max_seconds         null       stop warm-up after this many seconds
==================  =========  ==========================================================
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.hub import offline_env
from crossdiff.io import atomic_path, read_table, require_columns, write_json
from crossdiff.prompts.format import PromptFormat

DEFAULTS = {
    "seed": 0,
    "hidden_size": 128,
    "num_layers": 3,
    "num_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 400,
    "max_length": 96,
    "warmup_problems": 8000,
    "warmup_steps": 1000,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "max_ops": 5,
    "max_digits": 2,
    "ops_weights": [0.45, 0.3, 0.13, 0.08, 0.04],
    "operators": ["+", "-", "*"],
    "eval_items": 300,
    "max_seconds": None,
}

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def _settings(settings: dict | None) -> dict:
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"base model settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **settings}


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with digits split individually, wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
        model_max_length=512,
    )
    fast.padding_side = "right"
    return fast


def build_model(tokenizer, s: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(s["seed"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_layers"],
        num_attention_heads=s["num_heads"],
        num_key_value_heads=s["num_heads"],
        max_position_embeddings=max(256, s["max_length"] * 2),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def warmup_problems(items_path: str | os.PathLike | None, s: dict) -> list[dict]:
    from crossdiff.items.synthetic import generate_problems

    exclude: set[str] = set()
    if items_path is not None:
        items = read_table(items_path, "item table")
        require_columns(items, ["question"], items_path, "item table")
        exclude = set(items["question"].to_list())
    weights = list(s["ops_weights"])[: s["max_ops"]]
    weights += weights[-1:] * (s["max_ops"] - len(weights))
    return generate_problems(
        s["warmup_problems"], seed=s["seed"] + 1, max_ops=s["max_ops"], max_digits=s["max_digits"],
        ops_weights=weights, exclude=exclude, operators=s["operators"],
    )


def _encode(tokenizer, fmt: PromptFormat, items: list[dict], max_length: int):
    """(input_ids, labels) lists: labels -100 on prompt tokens, completion tokens + eos trained."""
    out = []
    for item in items:
        p = tokenizer(fmt.prompt_text(item), add_special_tokens=False)["input_ids"]
        c = tokenizer(fmt.completion_text(item), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[:max_length]
        labels = ([-100] * len(p) + c)[:max_length]
        out.append((ids, labels))
    return out


def warm_up(model, tokenizer, fmt: PromptFormat, problems: list[dict], s: dict) -> dict:
    """Seeded completion-only training loop; returns loss summary."""
    import torch
    from tqdm import tqdm

    encoded = _encode(tokenizer, fmt, problems, s["max_length"])
    rng = random.Random(s["seed"])
    torch.manual_seed(s["seed"])
    steps = int(s["warmup_steps"])
    opt = torch.optim.AdamW(model.parameters(), lr=s["learning_rate"], weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, int(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, max(0.0, (steps - i) / max(1, steps - warm)))
    )
    model.train()
    losses: list[float] = []
    order: list[int] = []
    start = time.time()
    done = 0
    for step in tqdm(range(steps), desc="warm-up", mininterval=5, disable=steps == 0):
        if len(order) < s["batch_size"]:
            extra = list(range(len(encoded)))
            rng.shuffle(extra)
            order += extra
        batch = [encoded[i] for i in order[: s["batch_size"]]]
        del order[: s["batch_size"]]
        width = max(len(ids) for ids, _ in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        done = step + 1
        if s["max_seconds"] is not None and time.time() - start > s["max_seconds"]:
            break
    model.eval()
    tail = losses[-50:] if losses else [math.nan]
    return {
        "warmup_steps": done,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(tail) / len(tail) if losses else None,
        "loss_every_50": losses[::50],
        "warmup_seconds": time.time() - start,
    }


def greedy_answers(model, tokenizer, fmt: PromptFormat, items: list[dict], batch_size: int = 64) -> list[str]:
    """Greedy generations (cut at stop strings) for quick checks; lm-eval does the real scoring."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[str] = []
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            prompts = [fmt.render_prompt(it, tokenizer) for it in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=fmt.max_gen_toks, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out += texts
    finally:
        tokenizer.padding_side = side
    return out


def accuracy_by(model, tokenizer, fmt: PromptFormat, items: list[dict], key: str = "n_ops") -> dict:
    texts = greedy_answers(model, tokenizer, fmt, items)
    stats: dict[str, list[int]] = {}
    for item, text in zip(items, texts):
        ok = int(fmt.extract_answer(text) == str(item["answer"]).strip())
        stats.setdefault(str(item.get(key, "all")), []).append(ok)
        stats.setdefault("all", []).append(ok) if key != "all" else None
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(stats.items())}


def build_base_model(
    output: str | os.PathLike,
    items_path: str | os.PathLike | None = None,
    settings: dict | None = None,
    prompt: dict | None = None,
) -> dict:
    """Build, warm up and save the tiny model into ``output`` (atomically); returns build_info."""
    offline_env()
    import torch

    from crossdiff.compute import deterministic_torch

    deterministic_torch("cpu")  # fixed threads, deterministic kernels: the same seed gives the same bytes
    s = _settings(settings)
    fmt = PromptFormat.from_config(prompt)
    t0 = time.time()
    torch.manual_seed(s["seed"])
    problems = warmup_problems(items_path, s)
    corpus = [fmt.prompt_text(p) + fmt.completion_text(p) for p in problems]
    corpus += [fmt.instruction, fmt.template, fmt.target, "0123456789 +-*=?."]
    tokenizer = build_tokenizer(corpus, s["vocab_size"])
    model = build_model(tokenizer, s)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny base model: {n_params:,} parameters, vocabulary {len(tokenizer)}, {len(problems)} warm-up problems")
    summary = warm_up(model, tokenizer, fmt, problems, s)
    info = {
        "architecture": "LlamaForCausalLM",
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "settings": s,
        "prompt": fmt.to_config(),
        "items": str(items_path) if items_path else None,
        **summary,
    }
    if items_path is not None and s["eval_items"]:
        items = read_table(items_path, "item table")
        if items.height > s["eval_items"]:
            items = items.sample(s["eval_items"], seed=s["seed"])
        te = time.time()
        info["zero_shot_by_n_ops"] = accuracy_by(model, tokenizer, fmt, items.to_dicts(), "n_ops" if "n_ops" in items.columns else "all")
        info["zero_shot_eval_seconds"] = time.time() - te
        print("zero-shot accuracy by n_ops:", {k: round(v["accuracy"], 3) for k, v in info["zero_shot_by_n_ops"].items()})
    info["wall_seconds"] = time.time() - t0
    with atomic_path(output, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(info, Path(tmp) / "build_info.json")
    print(f"saved tiny base model to {output} in {info['wall_seconds']:.1f} s (final loss {info['final_loss']})")
    return info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="model directory to create")
    p.add_argument("--items", help="benchmark item table (parquet); its questions are excluded from warm-up")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object of build settings (see module doc)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")


def run(args: argparse.Namespace) -> None:
    build_base_model(args.output, args.items, args.settings, args.prompt)
