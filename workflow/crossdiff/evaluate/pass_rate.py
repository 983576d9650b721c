"""Difficulty relative to a model: its pass rate over k samples (``datasets.<name>.bins.by: pass_rate:<model slug>``).

Pikus et al. ("Hard Examples Are All You Need", arXiv 2508.14094; Pikus16/grpo_difficulty, gsm8k/gsm8k_utils.py:81-112
``sample_pass_at_k``) rank items by the base model's accuracy over k samples at temperature 1.0. Here every item
of the dataset's IRT table gets ``k`` completions from the base model, sampled at ``temperature`` / ``top_p`` from
the item's EVALUATION prompt (chat-rendered when the format uses the chat template; an lm-eval task's own
request), and each completion is scored by :class:`crossdiff.prompts.reward.Scorer`, the scoring evaluation and
GRPO's reward use. ``pass_rate = correct / k`` and ``measure = 1 - pass_rate`` (higher = harder); make-bins breaks
the many ties (k + 1 levels) by IRT difficulty, then item_id, as for the zero-shot measure.

Sampling is seeded per item: item i draws with the seed ``item_seed(seed, item_id)``, so an item's samples do not
depend on which other items are scored or in which batch (a direct ``torch.manual_seed(item_seed(...))`` then
``generate(..., num_return_sequences=k)`` gives the same completions on the same hardware). The model is loaded
ONCE. transformers (``backend: hf``, CPU or GPU): one ``generate`` per item with its k samples batched; vLLM
(``backend: vllm``, GPU): one ``LLM.generate`` over every item, each request with ``n = k`` and its item's seed.
``auto``: vLLM on a CUDA device when it is installed, else transformers. Decoding takes only these settings, never
the model's generation_config.json (no repetition penalty, top_k 0).

Differences from Pikus et al.: they sample unseeded, with a fixed ``\\boxed{}`` prompt and max_new_tokens 250; here
the seed is set and the prompt, scoring and token budget are the dataset's evaluation ones (``max_new_tokens:
null`` = the prompt's max_gen_toks). Their "hardest/easiest 10%" bins are ``bins.scheme: quantiles`` with ``edges:
[0.1, 0.9]`` (bin 0 the easiest 10%, bin 2 the hardest 10%).

Settings (``bins.pass_rate`` < ``datasets.<d>.bins.pass_rate``; device and dtype from the evaluation settings):

==============  =======  ====================================================================
key             default  meaning
==============  =======  ====================================================================
k               8        samples per item (Pikus et al.'s default for GSM8K)
temperature     1.0      sampling temperature
top_p           1.0      nucleus sampling
seed            0        base seed of the per-item seeds
max_new_tokens  null     tokens per sample (null: the prompt's max_gen_toks)
backend         auto     auto, hf or vllm
==============  =======  ====================================================================
"""

from __future__ import annotations

import argparse
import time
import zlib

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_jsonl, write_parquet

PREFIX = "pass_rate:"
DEFAULTS = {"k": 8, "temperature": 1.0, "top_p": 1.0, "seed": 0, "max_new_tokens": None, "backend": "auto"}

#: model loads in this process (tests assert one per measure job)
MODEL_LOADS = 0


def validate_settings(s: dict) -> dict:
    s = dict(s)
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    missing = sorted(set(DEFAULTS) - set(s))
    if missing:
        raise CrossdiffError(f"key(s) {missing} missing (resolved at parse time: crossdiff.plan.settings.Plan.pass_rate)")
    for key, low in (("k", 1), ("max_new_tokens", 1)):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CrossdiffError(f"{key}: expected an integer >= {low}, got {v!r}")
    if isinstance(s["seed"], bool) or not isinstance(s["seed"], int):
        raise CrossdiffError(f"seed: expected an integer, got {s['seed']!r}")
    for key in ("temperature", "top_p"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (key == "top_p" and v > 1):
            raise CrossdiffError(f"{key}: expected a number > 0{' and <= 1' if key == 'top_p' else ''}, got {v!r}")
    if s["backend"] not in ("auto", "hf", "vllm"):
        raise CrossdiffError(f"backend: expected auto, hf or vllm, got {s['backend']!r}")
    return s


def item_seed(seed: int, item_id: str) -> int:
    """The sampling seed of one item: a 31-bit mix of the base seed and the item id (crc32)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(str(item_id).encode())]).generate_state(1)[0]
               & 0x7FFFFFFF)


def load_model(model_path, settings: dict | None = None):
    """(model, tokenizer, device) of the base model (transformers; the loss measure's loader), counted in
    MODEL_LOADS."""
    global MODEL_LOADS
    from crossdiff.evaluate import loss_measure

    out = loss_measure.load_model(model_path, settings)
    MODEL_LOADS += 1
    print(f"loaded model {MODEL_LOADS} time(s) in this process", flush=True)
    return out


def generation_config(tokenizer, s: dict):
    """The sampling, and nothing from the model's own generation_config.json."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return GenerationConfig(do_sample=True, temperature=float(s["temperature"]), top_p=float(s["top_p"]), top_k=0,
                            max_new_tokens=int(s["max_new_tokens"]), num_return_sequences=int(s["k"]),
                            repetition_penalty=1.0, eos_token_id=eos, pad_token_id=pad)


def sample_item(model, tokenizer, prompt: str, seed: int, s: dict, device: str = "cpu") -> list[str]:
    """k completions of one prompt (transformers), seeded with ``seed``; decoded without special tokens."""
    import torch

    from crossdiff.prompts.reward import encode_prompt

    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation_config(tokenizer, s))
    return tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def _sample_vllm(model_path, prompts: list[str], seeds: list[int], s: dict, ev: dict) -> list[list[str]]:
    global MODEL_LOADS
    from vllm import LLM, SamplingParams

    from crossdiff.evaluate.backends import visible_gpus

    llm = LLM(model=str(model_path), dtype="bfloat16" if ev.get("dtype", "auto") == "auto" else ev["dtype"],
              seed=int(s["seed"]), gpu_memory_utilization=float(ev.get("gpu_memory_util", 0.9)),
              tensor_parallel_size=max(1, len(visible_gpus()) or 1), generation_config="vllm")
    MODEL_LOADS += 1
    tok = llm.get_tokenizer()
    from crossdiff.prompts.reward import encode_prompt

    # top_k 0: off (as TRL 1.16 passes it to vLLM); one request per item with its own seed
    params = [SamplingParams(n=int(s["k"]), temperature=float(s["temperature"]), top_p=float(s["top_p"]), top_k=0,
                             max_tokens=int(s["max_new_tokens"]), seed=seed, repetition_penalty=1.0) for seed in seeds]
    outs = llm.generate([{"prompt_token_ids": encode_prompt(tok, p)} for p in prompts], params, use_tqdm=True)
    return [[c.text for c in o.outputs] for o in outs]


def choose_backend(s: dict, ev: dict) -> str:
    from importlib.util import find_spec

    from crossdiff.compute import device_for

    if s["backend"] != "auto":
        if s["backend"] == "vllm" and find_spec("vllm") is None:
            raise CrossdiffError("bins.pass_rate.backend is 'vllm' but vllm is not installed (pip install -r "
                                 "envs/requirements-gpu.txt)")
        return s["backend"]
    on_gpu = device_for(ev.get("device", "auto"), "evaluate.device").startswith("cuda")
    return "vllm" if on_gpu and find_spec("vllm") is not None else "hf"


def pass_rates(items_path, irt_path, model, output, prompt: dict | None = None, settings: dict | None = None,
               eval_settings: dict | None = None, model_name: str | None = None, dataset: str = "items") -> pl.DataFrame:
    """Sample and score every IRT item k times with one model load; write and return the measure table."""
    from tqdm import tqdm

    from crossdiff.bins.holdout import bin_items
    from crossdiff.compute import require_device
    from crossdiff.prompts.reward import Scorer

    s = validate_settings(settings or {})
    ev = eval_settings or {}
    require_device(ev.get("device"), "evaluate.device")  # at job start, before any model loads
    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="crossdiff-pass-rate-") as tmp:
        path = Path(tmp) / "all.parquet"
        write_parquet(pl.DataFrame({"item_id": ids, "bin": [0] * len(ids)}), path)
        rows = bin_items(items_path, path, None).to_dicts()  # every IRT item must be in the item table
    scorer = Scorer(prompt, dataset)
    backend = choose_backend(s, ev)
    seeds = [item_seed(s["seed"], str(r["item_id"])) for r in rows]
    t0 = time.time()
    if backend == "vllm":
        from transformers import AutoTokenizer

        records = scorer.records(rows, AutoTokenizer.from_pretrained(str(model)))
        completions = _sample_vllm(model, [r["prompt"] for r in records], seeds, s, ev)
    else:
        net, tokenizer, device = load_model(model, ev)
        records = scorer.records(rows, tokenizer)
        completions = [sample_item(net, tokenizer, rec["prompt"], seed, s, device)
                       for rec, seed in tqdm(list(zip(records, seeds)), desc="pass rate", mininterval=5)]
    samples, table = [], []
    for rec, seed, outs in zip(records, seeds, completions):
        scored = [scorer.score(rec, c) for c in outs]
        n_correct = sum(x["correct"] for x in scored)
        table.append({"item_id": rec["item_id"], "k": len(outs), "n_correct": n_correct,
                      "pass_rate": n_correct / len(outs), "measure": 1.0 - n_correct / len(outs), "seed": seed})
        samples += [{"item_id": rec["item_id"], "sample": j, "completion": c, "correct": x["correct"],
                     "reward": x["reward"], "prediction": x["prediction"]} for j, (c, x) in enumerate(zip(outs, scored))]
    df = pl.DataFrame(table, schema={"item_id": pl.Utf8, "k": pl.Int64, "n_correct": pl.Int64, "pass_rate": pl.Float64,
                                     "measure": pl.Float64, "seed": pl.Int64})
    out = Path(output)
    write_jsonl(samples, out.with_name(out.name.removesuffix(".parquet") + ".samples.jsonl"))
    write_parquet(df, out)
    print(f"{model_name or model}: pass rate over k={s['k']} samples (temperature {s['temperature']}, {backend}) of "
          f"{df.height} items in {time.time() - t0:.1f} s: mean {df['pass_rate'].mean():.3f}; "
          f"{df.filter(pl.col('n_correct') == 0).height} never solved, "
          f"{df.filter(pl.col('n_correct') == pl.col('k')).height} always solved")
    return df


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet): the items' text")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items to score (all of them)")
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the log")
    p.add_argument("--dataset", default="items", help="dataset name (messages, lm-eval tasks)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: the resolved bins.pass_rate settings")
    p.add_argument("--eval-settings", type=json_arg, default={}, help="JSON object: evaluation settings (device, dtype)")
    p.add_argument("--output", required=True, help="per-item table (parquet: item_id, k, n_correct, pass_rate, measure)")


def run(args: argparse.Namespace) -> None:
    settings = {**DEFAULTS, **args.settings}
    if settings["max_new_tokens"] is None:
        from crossdiff.prompts.format import PromptFormat

        settings["max_new_tokens"] = PromptFormat.from_config(args.prompt).max_gen_toks
    pass_rates(args.items, args.irt, args.model, args.output, args.prompt, settings, args.eval_settings,
               args.model_name, args.dataset)
