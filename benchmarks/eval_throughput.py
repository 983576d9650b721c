"""Evaluation throughput of crossdiff's lm-eval path: items/s, generated tokens/s, model-load seconds.

A random-weight model of Qwen2.5-1.5B's shape (``Qwen2Config``: hidden 1536, 28 layers, 12 heads,
2 KV heads, MLP 8960, vocabulary 151,936; built from the config, nothing downloaded) with a
byte-level tokenizer trained on the fly, scored through ``crossdiff.evaluate.run`` (``make_task`` +
``evaluate_model``: the workflow's own code) on

* a generation task: 256 new tokens, no stop string (random weights rarely emit EOS, so every item
  generates close to the limit: the cost of a long-generation benchmark per token);
* a multiple-choice task: 4 choices per item (log-likelihood), like ARC.

for each backend (``hf`` always, ``vllm`` when importable and a GPU is present) and each batch size.
Each measurement runs in its own process (a vLLM engine keeps its GPU memory); model-load seconds
are timed around ``crossdiff.evaluate.run.load_lm`` after the libraries are imported.

    python benchmarks/eval_throughput.py                    # GPU: the 1.5B shape, batch sizes 8 32 128
    python benchmarks/eval_throughput.py --smoke            # CPU: a 2-layer toy shape, 8 items, 16 tokens

Writes a markdown table to stdout and (``--out``) a JSON of all rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

QWEN25_15B = {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
              "intermediate_size": 8960, "vocab_size": 151936, "max_position_embeddings": 32768,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
SMOKE = {**QWEN25_15B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 128}
WORDS = ("the of and a to in is was that for it with as his on be at by had are but from or have an they which one "
         "you were all we her she there would their will when who him been has more if no out so said what up its "
         "about than into them can only other new some could time these two may first then do any like my now over").split()


def build_model(out: Path, shape: dict, dtype: str) -> int:
    """Random-weight Qwen2 model + a byte-level BPE tokenizer saved to ``out``; returns the parameter count."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = Qwen2Config(**shape, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.pad_token_id)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def make_tasks(root: Path, n_items: int, gen_tokens: int) -> dict:
    import random

    import polars as pl

    from crossdiff.evaluate.run import make_task

    rng = random.Random(0)
    questions = [" ".join(rng.choice(WORDS) for _ in range(60)) + "?" for _ in range(n_items)]  # ~60-word prompts
    items = pl.DataFrame({
        "item_id": [f"q{i:05d}" for i in range(n_items)],
        "question": questions,
        "answer": ["0"] * n_items,
        "choices": [json.dumps([" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(4)])
                    for _ in range(n_items)],
    })
    items.write_parquet(root / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(root / "bins.parquet")
    gen = {"template": "Q: {question}\nA:", "stop": [], "max_gen_toks": gen_tokens, "answer_regex": "(.*)",
           "chat_template": False}
    mc = {"scoring": "multiple_choice", "template": "Question: {question}\n{options}\nAnswer:",
          "choice_template": " {label}", "chat_template": False}
    make_task(root / "items.parquet", root / "bins.parquet", 0, root / "gen", "gen", gen)
    make_task(root / "items.parquet", root / "bins.parquet", 0, root / "mc", "mc", mc)
    return {"generation": root / "gen", "multiple_choice": root / "mc"}


def run_one(model_dir: Path, task: Path, backend: str, batch_size: int, dtype: str, out: Path) -> dict:
    from transformers import AutoTokenizer

    from crossdiff.evaluate.run import evaluate_model, load_lm, resolve_settings, samples_path

    import lm_eval  # noqa: F401 - imports outside the timed load
    import torch  # noqa: F401
    from lm_eval.models.huggingface import HFLM  # noqa: F401

    s = resolve_settings({"backend": backend, "batch_size": batch_size, "dtype": dtype})
    t0 = time.time()
    lm = load_lm(model_dir, s)
    load_s = time.time() - t0
    t0 = time.time()
    record = evaluate_model(model_dir, [task], [out], s, lm=lm)[0]
    wall = time.time() - t0
    rows = [json.loads(line) for line in samples_path(out).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(model_dir)
    gen_tokens = sum(len(tok(r["raw"], add_special_tokens=False)["input_ids"]) for r in rows if r.get("raw"))
    del lm
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return {"backend": backend, "batch_size": batch_size, "n_items": record["n_items"], "load_s": round(load_s, 2),
            "eval_s": round(wall, 2), "items_per_s": round(record["n_items"] / wall, 3),
            "gen_tokens": gen_tokens, "gen_tokens_per_s": round(gen_tokens / wall, 1) if gen_tokens else None}


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPUs, {gpu}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.platform()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: toy shape, 8 items, 16 new tokens, batch 1 4")
    p.add_argument("--items", type=int, default=None, help="items per task (default 512; smoke 8)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per generation item (default 256; smoke 16)")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 8,32,128; smoke 1,4)")
    p.add_argument("--backends", default="hf,vllm", help="hf and/or vllm (vllm skipped when not importable)")
    p.add_argument("--out", help="JSON file for the rows")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, in its own process
    args = p.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(run_one(Path(job["model"]), Path(job["task"]), job["backend"], job["batch_size"],
                                 job["dtype"], Path(job["out"]))))
        return 0

    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    shape = SMOKE if args.smoke else QWEN25_15B
    n_items = args.items or (8 if args.smoke else 512)
    gen_tokens = args.gen_tokens or (16 if args.smoke else 256)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if args.smoke else "8,32,128")).split(",")]
    dtype = "bfloat16" if cuda else "float32"
    backends = []
    for b in args.backends.split(","):
        if b == "vllm" and (importlib.util.find_spec("vllm") is None or not cuda):
            print(f"vllm: skipped ({'not importable' if importlib.util.find_spec('vllm') is None else 'no GPU'})",
                  file=sys.stderr)
            continue
        backends.append(b)
    results = []
    with tempfile.TemporaryDirectory(prefix="crossdiff-evalbench-") as tmp:
        root = Path(tmp)
        n_params = build_model(root / "model", shape, dtype)
        tasks = make_tasks(root, n_items, gen_tokens)
        for backend in backends:
            for bs in batch_sizes:
                for kind, task in tasks.items():
                    # each measurement in a fresh process: a vLLM engine does not hand its GPU memory back
                    job = {"model": str(root / "model"), "task": str(task), "backend": backend, "batch_size": bs,
                           "dtype": dtype, "out": str(root / f"{backend}-{bs}-{kind}.json")}
                    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise SystemExit(f"{backend} batch {bs} {kind} failed:\n{proc.stderr[-3000:]}")
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    row.update({"task": kind, "params": n_params})
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
    print(f"machine: {machine()}; model: random {'toy' if args.smoke else 'Qwen2.5-1.5B'}-shape Qwen2, "
          f"{n_params / 1e6:.1f}M parameters, {dtype}; {n_items} items per task, {gen_tokens} new tokens\n")
    print("| backend | task | batch | items | load s | eval s | items/s | generated tokens | gen tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['task']} | {r['batch_size']} | {r['n_items']} | {r['load_s']} | {r['eval_s']} | "
              f"{r['items_per_s']} | {r['gen_tokens'] or ''} | {r['gen_tokens_per_s'] or ''} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
