"""``crossdiff estimate``: what the study will cost before it runs (GPU-hours and disk), from the resolved plan.

Every number uses the settings the jobs will get (:class:`crossdiff.plan.settings.Plan`: each run's resolved
``finetune`` settings, each dataset's prompt format, ``resources.*`` per model). One row per model x dataset x
method (``zero-shot`` for the base model's own evaluation), then the totals.

Training tokens (column ``tokens from``, the best source that exists, per row):

=================  ==========================================================================================
``sft/tokenizer``  the run's real training JSONL (``results/sft/...``), every example tokenized by the model's
                   own tokenizer as the trainer does (``crossdiff.study.sft_data._token_lengths``: plain text +
                   EOS, or the chat template), cut at ``max_length``; examples left without a completion token
                   are not trained (TRL drops them). Exact: what ``train_metrics.json`` reports as
                   ``train_tokens_per_epoch``. Counted once per file and tokenizer and cached in
                   ``.snakemake/crossdiff/estimate_tokens.json``
``sft/chars``      the real JSONL, tokens = characters / ``chars_per_token`` (+ ``chat_overhead_tokens`` for a
                   hub or local model, which has a chat template), when the tokenizer is not at hand (a dry
                   run never loads one: it reads the cache, else counts characters)
``items/...``      before the JSONL exists: the item table (``results/items/<d>.parquet``, the model's own
                   solutions table, ``items.path``, or a generated benchmark made in memory) rendered with the
                   same prompt format (a deterministic sample of at most 500 items), times the number of
                   examples the design gives the run (the bins table's training part when it exists, else
                   items / n_bins x (1 - bins.holdout_fraction), capped by the run's size)
``benchmark``      nothing local: :data:`BENCHMARKS` (the evaluated split's size and characters per example,
                   rough: within ~50%; sources in the table). Run ``snakemake results/items/<d>.parquet``
                   first for the item-table figures
=================  ==========================================================================================

Training tokens = tokens per epoch x ``num_train_epochs`` (``max_steps`` > 0: steps x global batch x mean
example). GPU-hours of training = ``6 x params x tokens / (mfu x peak_tflops)`` (LoRA/QLoRA: 4, no weight
gradients of the frozen base): the usual dense-transformer count (Kaplan et al. 2020; attention's own FLOPs left
out, small at these lengths). ``params`` comes from each model's ``config.json`` (:func:`model_params`: a local
or built model's directory, ``resources.model_config_cache``, ``--model-configs``, or one bounded hub look-up
as the memory plan does); a model whose config.json cannot be had is listed, not guessed.

Evaluation GPU-hours: every evaluation job scores its model on every test item once (zero-shot: one job per
model x dataset; a trained run: one per checkpoint; ICL: one per k x train bin, its prompt longer by k
demonstrations). Per item, generation formats cost ``prompt tokens`` forward (prefill) and ``max_gen_toks``
decoded tokens (``generation: target``: the training target's length + EOS, what a fine-tuned model that stops
after its trained answer generates); multiple choice one forward pass per option (prompt + option). FLOPs =
2 x params x tokens; prefill at ``eval_mfu`` (default: ``mfu``), decoding at ``decode_mfu`` (default:
``decode_batch x hbm_tbps / peak_tflops``, the roofline of decoding, which reads every weight once per step of
``decode_batch`` sequences: 16 x 3.35 TB/s / 989 TFLOP/s = 5.4% on an H100 SXM).

Defaults (``resources.estimate``, config/README.md): ``mfu`` 0.33, the lower end of torchtitan's 33-39% for
Llama-3.1-8B with FSDP on 8 H100s (pytorch/torchtitan benchmarks/llama3_h100_202412_torchtitan.md, 8192-token
sequences; fine-tuning on short examples at per-device batch 1 runs well below it: measure); ``peak_tflops``
989, the H100/H200 SXM dense bf16 peak. ``benchmarks/gpu_check.py``'s output (``gpu_check.json`` or
``gpu_check.md``) goes straight in (``resources.estimate.measured`` or ``--measured``): its full fine-tuning
rows' MFU (the median of the non-tiny, non-LoRA rows; gpu_check divides by 989 TFLOP/s, so the measured
FLOP/s per GPU is kept whatever ``peak_tflops`` says) replaces ``mfu``, and its hf (vLLM with ``backend:
vllm``) generation row's items/s, converted to the FLOP/s of its ~0.5B model decoding 256 tokens per item,
replaces ``decode_mfu``.

Disk: a saved model is 2 bytes/parameter (bf16; 4 when saved in fp32, e.g. CPU training: ``save_dtype``;
QLoRA: the bf16 base + fp32 adapter); a checkpoint while training 12 bytes/parameter (fp32 weights + AdamW
moments; 8-bit optimizers 6; LoRA: 12 per adapter parameter), written every ``save_steps`` optimizer steps,
at most ``save_total_limit`` + 1 at once (the older one is deleted after the new one is written); removed when
the job succeeds unless ``keep_checkpoints``. Kept at the end: every fine-tuned model unless
``storage.delete_finetuned_models`` (then each goes once its evaluation is written).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import statistics
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.plan.settings import ESTIMATE_DEFAULTS as DEFAULTS
from crossdiff.plan.settings import Plan

GENERATION = ("max_gen_toks", "target")
SAMPLE = 500  # items rendered for a mean (item table or generated benchmark)
TOKEN_CACHE = Path(".snakemake") / "crossdiff" / "estimate_tokens.json"
GB = 1e9

#: benchmarks/gpu_check.py's figures (tests/test_estimate.py checks them against that file): its MFU divides by
#: this peak; its generation rows decode 256 tokens after a 7-token prompt; the models it builds
GPU_CHECK_PEAK_TFLOPS = 989.0
GPU_CHECK_EVAL_TOKENS = 7 + 256
GPU_CHECK_SIZES = {  # name -> (model_type, hidden, layers, heads, kv_heads, intermediate, vocab), untied
    "tiny-qwen2": ("qwen2", 64, 2, 4, 2, 128, 512),
    "tiny-llama": ("llama", 64, 2, 4, 2, 128, 512),
    "qwen2-0.5b": ("qwen2", 896, 24, 14, 2, 4864, 151936),
    "llama-1.5b": ("llama", 2048, 16, 32, 8, 8192, 128256),
}

#: Per benchmark adapter, when nothing is local: the evaluated split's size (the adapter's own default subtasks;
#: the response filters later drop some items, so an upper bound), and characters of the rendered prompt (the
#: adapter's template), of the training target, and the options of multiple choice. Rough (~50%).
BENCHMARKS = {
    "arc": {"n_items": 1172, "prompt_chars": 282, "target_chars": 2, "options": 4, "option_chars": 2,
            "source": "ARC-Challenge test; evalscope v1.6.0 benchmarks/arc: mean 0-shot prompt 453.91 chars less its "
                      "189-char instruction, + this template's 17"},
    "gsm8k": {"n_items": 1319, "prompt_chars": 250, "target_chars": 300, "options": 0, "option_chars": 0,
              "source": "GSM8K test; its dataset card: 713,732 bytes / 1,319 rows = 541 chars of question + solution"},
    "mmlu_pro": {"n_items": 12032, "prompt_chars": 700, "target_chars": 2, "options": 0, "option_chars": 0,
                 "source": "MMLU-Pro test (12,032 items); ~250-char question + 10 options of ~40 chars (estimate)"},
    "bbh": {"n_items": 5250, "prompt_chars": 450, "target_chars": 10, "options": 0, "option_chars": 0,
            "source": "the authors' 21 BBH subtasks x 250 items; prompt length an estimate"},
    "math": {"n_items": 1324, "prompt_chars": 250, "target_chars": 1000, "options": 0, "option_chars": 0,
             "source": "MATH-hard (level 5) test, the leaderboard's 1,324 items; a written solution ~1000 chars "
                       "(estimate)"},
    "musr": {"n_items": 756, "prompt_chars": 4683, "target_chars": 20, "options": 3, "option_chars": 20,
             "source": "MuSR's 756 items; evalscope v1.6.0 benchmarks/musr: mean 0-shot prompt 4891.57 chars less "
                       "its 217-char instruction, + this template's 8"},
    "gpqa_extended": {"n_items": 546, "prompt_chars": 700, "target_chars": 4, "options": 4, "option_chars": 4,
                      "source": "GPQA-Extended's 546 items; prompt length an estimate"},
    "ifeval": {"n_items": 541, "prompt_chars": 250, "target_chars": 1500, "options": 0, "option_chars": 0,
               "source": "IFEval's 541 prompts; answer length an estimate"},
}


# ------------------------------------------------------------------------------------------ settings
def resolve_settings(settings: dict | None) -> dict:
    """``resources.estimate`` over :data:`DEFAULTS`, checked (each problem names its key)."""
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"resources.estimate: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    for key in ("mfu", "peak_tflops", "decode_batch", "hbm_tbps", "chars_per_token", "io_gbps"):
        if not isinstance(s[key], (int, float)) or isinstance(s[key], bool) or s[key] <= 0:
            raise CrossdiffError(f"resources.estimate.{key} = {s[key]!r}: expected a positive number")
    for key in ("mfu", "eval_mfu", "decode_mfu"):
        if s[key] is not None and not (isinstance(s[key], (int, float)) and 0 < s[key] <= 1):
            raise CrossdiffError(f"resources.estimate.{key} = {s[key]!r}: expected a fraction in (0, 1] (or null)")
    if not isinstance(s["startup_s"], (int, float)) or isinstance(s["startup_s"], bool) or s["startup_s"] < 0:
        raise CrossdiffError(f"resources.estimate.startup_s = {s['startup_s']!r}: expected a number of seconds >= 0")
    if s["generation"] not in GENERATION:
        raise CrossdiffError(f"resources.estimate.generation = {s['generation']!r}: expected one of {list(GENERATION)}")
    return s


def read_measured(path, backend: str = "hf") -> dict:
    """What ``benchmarks/gpu_check.py`` measured (its ``gpu_check.json``, or the ``gpu_check.md`` table):
    ``{"flops": achieved training FLOP/s per GPU or None, "decode_flops": ... or None, "device", "notes"}``."""
    from crossdiff.finetune.memory_plan import param_count

    p = Path(path)
    if not p.is_file():
        raise CrossdiffError(f"{p}: gpu_check output not found (resources.estimate.measured / --measured)")
    text = p.read_text()
    device = None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
            rows, device = data["rows"], data.get("device")
        except (ValueError, KeyError, TypeError):
            raise CrossdiffError(f"{p}: not gpu_check.json (expected {{'device', 'rows': [...]}})") from None
    else:
        rows = _markdown_rows(p, text)
        m = re.search(r"^# gpu_check on (.+?), \d+ s$", text, re.M)
        device = m.group(1) if m else None
    train = sorted(float(r["mfu"]) for r in rows if r.get("ok") is True and r.get("mfu") not in (None, "")
                   and "lora" not in str(r["check"]) and not str(r["check"]).startswith("tiny-"))
    out = {"device": device, "flops": None, "decode_flops": None, "notes": []}
    if train:
        out["flops"] = statistics.median(train) * GPU_CHECK_PEAK_TFLOPS * 1e12
        out["notes"].append(f"training MFU {statistics.median(train):.3f} (median of {len(train)} gpu_check row(s))")
    prefix = "vllm eval " if backend == "vllm" else "hf eval "
    for r in rows:
        name = str(r.get("check", ""))
        if r.get("ok") is True and name.startswith(prefix) and r.get("items_per_s") not in (None, ""):
            model = name[len(prefix):]
            if model not in GPU_CHECK_SIZES:
                continue
            kind, h, layers, heads, kv, inter, vocab = GPU_CHECK_SIZES[model]
            params = param_count({"model_type": kind, "hidden_size": h, "num_hidden_layers": layers,
                                  "num_attention_heads": heads, "num_key_value_heads": kv,
                                  "intermediate_size": inter, "vocab_size": vocab, "tie_word_embeddings": False})
            out["decode_flops"] = 2 * params * GPU_CHECK_EVAL_TOKENS * float(r["items_per_s"])
            out["notes"].append(f"{name}: {float(r['items_per_s']):g} items/s of {GPU_CHECK_EVAL_TOKENS} tokens")
            break
    if out["flops"] is None and out["decode_flops"] is None:
        raise CrossdiffError(f"{p}: no usable gpu_check row (an ok full fine-tuning row with an mfu, or an ok "
                             f"'{prefix.strip()}' row with items_per_s); was it run on a GPU (not --smoke)?")
    return out


def _markdown_rows(path: Path, text: str) -> list[dict]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2 or "check" not in lines[0]:
        raise CrossdiffError(f"{path}: no gpu_check table (a markdown table with a 'check' column)")
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        row = dict(zip(cols, cells))
        row["ok"] = {"True": True, "False": False}.get(row.get("ok", ""))
        rows.append(row)
    return rows


def effective(s: dict, measured: dict | None) -> dict:
    """Achieved FLOP/s per GPU of training, prefill and decoding, and where each figure comes from."""
    peak = float(s["peak_tflops"]) * 1e12
    out = {"train": s["mfu"] * peak, "train_from": f"MFU {s['mfu']:g} x {s['peak_tflops']:g} TFLOP/s"}
    eval_mfu = s["eval_mfu"] if s["eval_mfu"] is not None else s["mfu"]
    out["prefill"], out["prefill_from"] = eval_mfu * peak, f"MFU {eval_mfu:g}"
    if s["decode_mfu"] is not None:
        out["decode"], out["decode_from"] = s["decode_mfu"] * peak, f"MFU {s['decode_mfu']:g}"
    else:
        mfu = min(1.0, s["decode_batch"] * s["hbm_tbps"] / s["peak_tflops"])
        out["decode"] = mfu * peak
        out["decode_from"] = f"MFU {mfu:.3f} = {s['decode_batch']:g} x {s['hbm_tbps']:g} TB/s / {s['peak_tflops']:g} TFLOP/s"
    if measured:
        where = f"gpu_check on {measured.get('device') or '?'}"
        if measured["flops"]:
            out["train"] = measured["flops"]
            out["train_from"] = f"measured {measured['flops'] / 1e12:.0f} TFLOP/s per GPU ({where})"
            if s["eval_mfu"] is None:
                out["prefill"], out["prefill_from"] = measured["flops"], "as training (measured)"
        if measured["decode_flops"]:
            out["decode"] = measured["decode_flops"]
            out["decode_from"] = f"measured {measured['decode_flops'] / 1e12:.1f} TFLOP/s per GPU ({where})"
    return out


# ------------------------------------------------------------------------------------------ inputs
def load_model_configs(path) -> dict:
    """``--model-configs``: a JSON mapping {model id: config.json dict} (e.g. tests/fixtures/paper_models.json),
    or a folder in ``resources.model_config_cache``'s layout (``<org>--<name>.json``)."""
    p = Path(path)
    if p.is_dir():
        return {f.stem.replace("--", "/", 1): json.loads(f.read_text()) for f in sorted(p.glob("*.json"))}
    if not p.is_file():
        raise CrossdiffError(f"{p}: --model-configs not found (a JSON file {{model id: config.json}} or a folder)")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise CrossdiffError(f"{p}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CrossdiffError(f"{p}: expected a JSON object {{model id: config.json}}")
    return {k: v for k, v in data.items() if isinstance(v, dict)}


class Context:
    """What the estimate reads, each once: model configs and tokenizers, item tables, bins, the token cache."""

    def __init__(self, plan, *, tokenize: bool, lookup: bool, model_configs: dict | None = None,
                 cache_path: Path | None = TOKEN_CACHE):
        self.plan = plan
        self.s = resolve_settings(plan.estimate())
        self.tokenize, self.lookup = tokenize, lookup
        self.model_configs = model_configs or {}
        self.cache_path = cache_path
        self.cache = {}
        if cache_path and Path(cache_path).is_file():
            try:
                self.cache = json.loads(Path(cache_path).read_text())
            except ValueError:
                self.cache = {}
        self.cache_dirty = False
        self._tok, self._items, self._bins, self._cfg = {}, {}, {}, None

    # -------------------------------------------------------------------------------------- models
    def configs(self) -> dict:
        """{slug: (config.json dict, where from) or (None, why not)}."""
        if self._cfg is not None:
            return self._cfg
        from crossdiff.finetune.memory_plan import config_problem
        from crossdiff.plan.checks import local_model_config

        out, pending = {}, []
        for slug, m in self.plan.models.items():
            if m["id"] in self.model_configs:
                cfg = self.model_configs[m["id"]]
                bad = config_problem(m["id"], cfg, "--model-configs")
                out[slug] = (None, bad) if bad else (cfg, "--model-configs")
                continue
            if m["build"]:
                path = Path(self.plan.base_model_ref(slug)) / "config.json"
                out[slug] = (json.loads(path.read_text()), str(path)) if path.is_file() else (
                    None, f"not built yet ({path.parent}: snakemake {path.parent})")
                continue
            cfg, bad = local_model_config(self.plan, slug)
            if cfg is not None:
                problem = config_problem(m["id"], cfg, "its local config.json")
                out[slug] = (None, problem) if problem else (cfg, "local config.json")
            elif bad:
                out[slug] = (None, bad)
            else:
                pending.append(slug)
        if pending and self.lookup:
            from crossdiff.finetune.plan_check import model_configs

            ids = {slug: self.plan.models[slug]["id"] for slug in pending}
            try:
                found = model_configs(list(ids.values()), self.plan.config["resources"]["model_config_cache"])
            except CrossdiffError as exc:
                found = {i: (None, str(exc)) for i in ids.values()}
            for slug, mid in ids.items():
                cfg, why = found[mid]
                out[slug] = (cfg, "hub config.json (cached)") if cfg is not None else (None, why)
        for slug in pending:
            out.setdefault(slug, (None, "no config.json in a local directory or resources.model_config_cache; "
                                        "`crossdiff estimate` looks it up once, or give --model-configs"))
        self._cfg = out
        return out

    def tokenizer(self, slug: str):
        """The model's tokenizer when it is on disk (built/local directory or the HF cache) and tokenizing is
        allowed; else None (characters are counted)."""
        if not self.tokenize:
            return None
        if slug not in self._tok:
            self._tok[slug] = None
            ref = self.plan.base_model_ref(slug)
            if not Path(ref).is_dir() and (self.plan.models[slug]["build"] or not _in_hf_cache(ref)):
                return None  # not built yet / not downloaded: transformers is not even imported
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(ref, local_files_only=True)
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                self._tok[slug] = tok
            except Exception:  # not on disk (not built yet, not cached): count characters instead
                self._tok[slug] = None
        return self._tok[slug]

    def tokenizer_key(self, slug: str) -> str:
        ref = self.plan.base_model_ref(slug)
        parts = [ref]
        for name in ("tokenizer.json", "tokenizer_config.json"):
            f = Path(ref) / name
            if f.is_file():
                st = f.stat()
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def overhead(self, slug: str) -> int:
        """Chat template tokens (system prompt, role markers) added to a character count: hub and local models
        are chat models in this project; the built tiny model has no template."""
        return 0 if self.plan.models[slug]["build"] else int(self.s["chat_overhead_tokens"])

    # -------------------------------------------------------------------------------------- data
    def items(self, name: str, slug: str | None = None):
        """(item table or a sample of it, where from, number of items) of a dataset (a model's own solutions
        table first), or (None, None, 0)."""
        key = (name, slug)
        if key not in self._items:
            from crossdiff.io import read_table

            found = (None, None, 0)
            paths = [self.plan.model_items_table(name, slug)] if slug else []
            paths.append(self.plan.items_table(name))
            for path in paths:
                if path and Path(path).is_file():
                    df = read_table(path, "item table")
                    found = (df, str(path), df.height)
                    break
            items = self.plan.dataset(name)["items"]
            if found[0] is None and items["source"] == "synthetic":
                from crossdiff.items.adapters import prepare_items

                # generated in order with one seeded stream: the first SAMPLE items are those of the full table
                n = int(items["n_items"])
                found = (prepare_items({**items, "n_items": min(n, SAMPLE)}, name),
                         f"generated in memory (the first {min(n, SAMPLE)} of {n})", n)
            self._items[key] = found
        return self._items[key]

    def bins(self, name: str):
        if name not in self._bins:
            import polars as pl

            path = Path(f"results/bins/{name}/bins.parquet")
            self._bins[name] = pl.read_parquet(path) if path.is_file() else None
        return self._bins[name]

    def save_cache(self) -> None:
        if self.cache_dirty and self.cache_path:
            from crossdiff.io import write_json

            try:
                write_json(self.cache, self.cache_path)
            except OSError:
                pass


def _in_hf_cache(model_id: str) -> bool:
    """Whether the HF cache holds the model's tokenizer files (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(model_id, f), str) for f in ("tokenizer.json", "tokenizer_config.json"))
    except Exception:
        return False


def _sample(df, n: int = SAMPLE) -> list[dict]:
    """A deterministic sample (every k-th row in item_id order) of at most ``n`` rows."""
    if df.height == 0:
        return []
    df = df.sort("item_id") if "item_id" in df.columns else df
    step = max(1, math.ceil(df.height / n))
    return df[::step].to_dicts()


def _chars_tokens(text: str, ctx: Context, slug: str) -> float:
    return len(text) / float(ctx.s["chars_per_token"])


def example_tokens(ctx: Context, slug: str, fmt, record: dict, max_length: int | None) -> int:
    """Trained tokens of one SFT row (``sft_record`` layout): exact with the tokenizer, else characters."""
    tok = ctx.tokenizer(slug)
    if tok is not None:
        from crossdiff.study.sft_data import _token_lengths

        chat = fmt.use_chat(tok)
        prompt_len, total = _token_lengths(tok, fmt.training_example(record, chat), chat)
        if max_length is not None and total > max_length:
            return 0 if prompt_len >= max_length else max_length  # no completion left: not trained
        return total
    n = math.ceil(_chars_tokens(record["prompt"] + record["completion"], ctx, slug)) + ctx.overhead(slug) + 1
    return min(n, max_length) if max_length else n


# ------------------------------------------------------------------------------------------ training
def sft_path(plan, name: str, slug: str, run: str) -> str:
    """The run's training JSONL (as the finetune rule's input: common.smk sft_data_path)."""
    from crossdiff.study import designs, methods

    label = designs.sft_label(methods.split_run(run)[1])
    if plan.own_solutions(slug, name):
        return f"results/sft/{name}/solutions-{slug}/{label}.jsonl"
    return f"results/sft/{name}/{label}.jsonl"


def _file_tokens(ctx: Context, slug: str, fmt, path: Path, max_length) -> tuple[int, int, str]:
    """(examples, tokens per epoch, how counted) of a real training JSONL."""
    from crossdiff.io import iter_jsonl

    st = path.stat()
    key = hashlib.sha256(json.dumps([str(path), st.st_size, st.st_mtime_ns, ctx.tokenizer_key(slug),
                                     fmt.to_config(), max_length], sort_keys=True, default=str).encode()).hexdigest()
    if key in ctx.cache:
        hit = ctx.cache[key]
        return hit["examples"], hit["tokens"], "sft/tokenizer"
    rows = [row for _, row in iter_jsonl(path)]
    tokens = sum(example_tokens(ctx, slug, fmt, r, max_length) for r in rows)
    if ctx.tokenizer(slug) is not None:
        ctx.cache[key] = {"examples": len(rows), "tokens": tokens, "file": str(path)}
        ctx.cache_dirty = True
        return len(rows), tokens, "sft/tokenizer"
    return len(rows), tokens, "sft/chars"


def _bin_counts(ctx: Context, name: str, n_items: int) -> tuple[dict, dict]:
    """({bin: training items}, {bin: test items}) from the bins table, else from the item count."""
    plan = ctx.plan
    bins = ctx.bins(name)
    held = float(plan.config["bins"].get("holdout_fraction") or 0)
    if bins is not None:
        import polars as pl

        has = "heldout" in bins.columns
        train = {b: int(bins.filter((pl.col("bin") == b) & (~pl.col("heldout") if has else pl.lit(True))).height)
                 for b in range(plan.n_bins)}
        test = {b: int(bins.filter((pl.col("bin") == b) & (pl.col("heldout") if has else pl.lit(True))).height)
                for b in range(plan.n_bins)}
        return train, test
    per_bin = n_items / plan.n_bins
    test = {b: per_bin * held if held else per_bin for b in range(plan.n_bins)}
    return {b: per_bin - (test[b] if held else 0) for b in range(plan.n_bins)}, test


def run_examples(ctx: Context, name: str, run: str, train_counts: dict) -> float:
    from crossdiff.study import designs, methods

    spec = designs.training_spec(ctx.plan.study, designs.sft_label(methods.split_run(run)[1]), ctx.plan.n_bins)
    total = sum(train_counts.get(b, 0) for b in spec["bins"])
    return min(spec["size"], total) if spec["size"] is not None else total


def dataset_profile(ctx: Context, name: str, slug: str) -> dict:
    """Per-example figures of a (dataset, model) from the item table or the benchmark table: mean training
    tokens, test items, per-item evaluation tokens (prefill, decoded up to max_gen_toks, decoded to the target's
    length); ``source`` names where they come from, ``why`` what is missing."""
    from crossdiff.prompts.format import PromptFormat

    plan = ctx.plan
    fmt = PromptFormat.from_config(plan.prompt(name))
    max_length = plan.finetune(name, slug)["max_length"] if plan.trained_methods() else None
    items, where, n_items = ctx.items(name, slug)
    tok = ctx.tokenizer(slug)
    if items is not None:
        sample = _sample(items)
        if not sample:
            return {"why": f"{where}: no items"}
        train, prefill, target, options = [], [], [], []
        for item in sample:
            rec = fmt.sft_record(item)
            train.append(example_tokens(ctx, slug, fmt, rec, max_length))
            if tok is not None:
                prompt = len(tok(fmt.render_prompt(item, tok), add_special_tokens=False)["input_ids"])
                comp = len(tok(fmt.completion_text(item), add_special_tokens=False)["input_ids"])
                opts = ([len(tok(c, add_special_tokens=False)["input_ids"]) for c in fmt.choice_texts(item)]
                        if fmt.scoring == "multiple_choice" else [])
            else:
                prompt = _chars_tokens(fmt.prompt_text(item), ctx, slug) + ctx.overhead(slug)
                comp = _chars_tokens(fmt.completion_text(item), ctx, slug)
                opts = ([_chars_tokens(c, ctx, slug) for c in fmt.choice_texts(item)]
                        if fmt.scoring == "multiple_choice" else [])
            prefill.append(sum(prompt + o for o in opts) if opts else prompt)
            target.append(comp + 1)
            options.append(len(opts))
        source = ("items/tokenizer" if tok is not None else "items/chars")
        mean = statistics.fmean
        out = {"train_tokens": mean(train), "prefill": mean(prefill), "target": mean(target),
               "source": source, "where": where}
    else:
        spec = plan.dataset(name)["items"]
        bench = BENCHMARKS.get(spec.get("adapter")) if spec["source"] == "hub" else None
        if bench is None:
            return {"why": f"datasets.{name}: no item table yet and no per-benchmark figures for items.source "
                           f"{spec['source']!r} (snakemake {plan.items_table(name) or 'results/items/' + name + '.parquet'})"}
        cpt, over = float(ctx.s["chars_per_token"]), ctx.overhead(slug)
        prompt = bench["prompt_chars"] / cpt + over
        tokens = (bench["prompt_chars"] + bench["target_chars"]) / cpt + over + 1
        n_items = bench["n_items"]
        out = {"train_tokens": min(tokens, max_length) if max_length else tokens,
               "prefill": bench["options"] * (prompt + bench["option_chars"] / cpt) if bench["options"] else prompt,
               "target": bench["target_chars"] / cpt + 1, "source": "benchmark", "where": bench["source"]}
    train_counts, test_counts = _bin_counts(ctx, name, n_items)
    out.update(n_items=n_items, train_counts=train_counts, n_test=sum(test_counts.values()),
               decode=0 if fmt.scoring == "multiple_choice" else fmt.max_gen_toks,
               multiple_choice=fmt.scoring == "multiple_choice", fmt=fmt, max_length=max_length)
    if fmt.scoring == "multiple_choice":
        out["target"] = 0
    return out


# ------------------------------------------------------------------------------------------ the estimate
def _disk(cfg: dict, s: dict, on_gpu: bool, examples: float, gpus: int) -> dict:
    """Bytes of the saved model, of one checkpoint, how many are written, kept at the peak and after success
    (module docstring)."""
    from crossdiff.finetune.memory_plan import lora_param_count, param_count

    p = param_count(cfg)
    lora = s.get("lora")
    r = int((lora or {}).get("r", 16))
    save = s.get("save_dtype", "auto")
    bf16 = save == "bf16" or (save == "auto" and ((s.get("bf16") in ("auto", True) and on_gpu)
                                                    or s.get("master_weights") == "bf16"))
    if s.get("quantization"):
        model = 2 * p + 4 * lora_param_count(cfg, r)
        ckpt = 12 * lora_param_count(cfg, r)
    else:
        model = (2 if bf16 else 4) * p
        if lora:
            ckpt = 12 * lora_param_count(cfg, r)
        else:
            per = (2 if s.get("master_weights") == "bf16" else 4) + (2 if "8bit" in str(s.get("optim")) else 8)
            ckpt = per * p
    batch = s.get("global_batch_size") or s["per_device_train_batch_size"] * max(1, gpus) * s["gradient_accumulation_steps"]
    steps = s["max_steps"] if s.get("max_steps", -1) > 0 else math.ceil(examples / batch) * s["num_train_epochs"]
    saves = int(steps // s["save_steps"]) if s["save_steps"] else 0
    at_once = min(saves, int(s["save_total_limit"] or saves) + 1) if saves else 0
    kept = min(saves, int(s["save_total_limit"] or saves)) if s.get("keep_checkpoints") else 0
    return {"model": model, "ckpt": ckpt, "saves": saves, "ckpt_peak": at_once * ckpt, "ckpt_kept": kept * ckpt,
            "steps": steps, "batch": batch}


def _weight_bytes(cfg: dict) -> float:
    """Bytes of a model's weights as stored (what a job reads): its config's dtype, bf16 unless fp32."""
    from crossdiff.finetune.memory_plan import param_count

    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    return param_count(cfg) * (4 if "32" in dtype else 2)


def estimate(plan, *, tokenize: bool = False, lookup: bool = False, model_configs: dict | None = None,
             measured=None, overrides: dict | None = None, cache_path: Path | None = TOKEN_CACHE) -> dict:
    """The study's cost: {"rows", "totals", "assumptions", "missing", "storage"} (module docstring)."""
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.study import methods

    ctx = Context(plan, tokenize=tokenize, lookup=lookup, model_configs=model_configs, cache_path=cache_path)
    if overrides:
        ctx.s = resolve_settings({**ctx.s, **{k: v for k, v in overrides.items() if v is not None}})
    s = ctx.s
    names = plan.study_datasets()
    backend = plan.evaluate(names[0], next(iter(plan.models)))["backend"] if names else "hf"
    measured_path = measured or s["measured"]
    got = read_measured(measured_path, backend) if measured_path else None
    speed = effective(s, got)
    io = float(s["io_gbps"]) * GB
    configs = ctx.configs() if names else {}
    rows, missing = [], []
    for slug, (cfg, why) in configs.items():
        if cfg is None:
            missing.append(f"params of {plan.models[slug]['id']}: {why}")
    eval_gpus = max(1, int(plan.resources("evaluate")["gpu"]))
    storage = plan.config["storage"]
    from crossdiff.plan.corpora import test_only_datasets  # datasets.<d>.test_on (issue 28)

    test_only = test_only_datasets(plan)
    for name in names + test_only:
        for slug, m in plan.models.items():
            cfg = configs[slug][0]
            params = param_count(cfg) if cfg is not None else None
            try:
                prof = dataset_profile(ctx, name, slug)
            except Exception as exc:  # an item the prompt format cannot render: named, the other rows go on
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                prof = {"why": f"cannot render its items with the dataset's prompt format ({first[:200]})"}
            if "why" in prof:
                missing.append(f"{name} x {m['id']}: {prof['why']}")
                continue
            res = plan.resources("finetune", slug)
            gpus = max(1, int(res["gpu"])) * int(res.get("nodes", 1) or 1)  # nodes: multi-node fine-tunes
            load_s = _weight_bytes(cfg) / io if cfg is not None else 0.0

            def evaluation(row: dict, prefill: float, passes: int, jobs: int, prof: dict = prof) -> dict:
                """Evaluation passes over every test item: tokens, GPU-hours (both generation lengths)."""
                decode = {"max_gen_toks": 0 if prof["multiple_choice"] else prof["decode"],
                          "target": 0 if prof["multiple_choice"] else prof["target"]}
                gen = decode[s["generation"]]
                row["eval_passes"] = passes
                row["eval_tokens"] = round(passes * prof["n_test"] * (prefill + gen))
                if params is None:
                    row["eval_gpu_h"] = row["eval_gpu_h_other"] = None
                else:
                    sec = {k: passes * prof["n_test"] * 2 * params * (prefill / speed["prefill"] + g / speed["decode"])
                           for k, g in decode.items()}
                    row["eval_gpu_h"] = sec[s["generation"]] / 3600
                    row["eval_gpu_h_other"] = sec[GENERATION[1 - GENERATION.index(s["generation"])]] / 3600
                    row["overhead_gpu_h"] += jobs * eval_gpus * (float(s["startup_s"]) + load_s) / 3600
                return row

            rows.append(evaluation(_row(m["id"], name, "zero-shot", gpus, eval_gpus), prof["prefill"], 1, 1))
            if name in test_only:  # scored only as another dataset's test_on: its zero-shot cells
                continue
            for method in plan.methods():
                for label in methods.labels(method.name, plan.icl(name)):
                    row = _row(m["id"], name, label, gpus, eval_gpus)
                    if not method.trains:  # in-context learning: the base model, one pass per (k, train bin), one job
                        k = int(re.search(r"\d+", label).group()) if re.search(r"\d+", label) else 0
                        rows.append(evaluation(row, prof["prefill"] + k * prof["train_tokens"], len(plan.train_bins()), 1))
                        continue
                    if method.name == "grpo":  # issue 29: generation + policy updates (crossdiff.plan.grpo_estimate)
                        from crossdiff.plan.grpo_estimate import grpo_row

                        def n_prompts(full):
                            path = Path(sft_path(plan, name, slug, full))
                            if path.is_file():
                                st = plan.finetune(name, slug, full)
                                return _file_tokens(ctx, slug, prof["fmt"], path, st["max_length"])[0]
                            return run_examples(ctx, name, full, prof["train_counts"])

                        runs = [methods.run_label(method.name, run) for run in plan.runs]
                        grpo_row(plan, name, slug, row, runs=runs, n_prompts=n_prompts, prompt_tokens=prof["prefill"],
                                 params=params, cfg=cfg, speed=speed, disk=_disk, on_gpu=int(res["gpu"]) > 0,
                                 job_s=float(s["startup_s"]) + load_s, io=io,
                                 delete_models=bool(storage["delete_finetuned_models"]))
                        rows.append(evaluation(row, prof["prefill"], len(runs), len(runs)))
                        continue
                    examples = tokens = flops = overhead = 0.0
                    sources, model_b, peak_b, kept_b, micro = set(), 0.0, 0.0, 0.0, []
                    for run in plan.runs:
                        full = methods.run_label(method.name, run)
                        st = plan.finetune(name, slug, full)
                        path = Path(sft_path(plan, name, slug, full))
                        if path.is_file():
                            n, per_epoch, src = _file_tokens(ctx, slug, prof["fmt"], path, st["max_length"])
                        else:
                            n = run_examples(ctx, name, full, prof["train_counts"])
                            per_epoch, src = n * prof["train_tokens"], prof["source"]
                        if st.get("max_steps", -1) > 0 and n:
                            batch = st.get("global_batch_size") or st["per_device_train_batch_size"] * gpus
                            run_tokens = st["max_steps"] * batch * per_epoch / n
                        else:
                            run_tokens = per_epoch * float(st["num_train_epochs"])
                        examples += n
                        tokens += run_tokens
                        sources.add(src)
                        if n:
                            micro.append(st["per_device_train_batch_size"] * per_epoch / n)
                        if params is not None:
                            flops += (4 if (st.get("lora") or st.get("quantization")) else 6) * params * run_tokens
                            d = _disk(cfg, st, on_gpu=int(res["gpu"]) > 0, examples=n, gpus=gpus)
                            model_b = max(model_b, d["model"])
                            peak_b = max(peak_b, d["ckpt_peak"] + d["model"])
                            kept_b += d["ckpt_kept"] + (0 if storage["delete_finetuned_models"] else d["model"])
                            overhead += float(s["startup_s"]) + load_s + (d["saves"] * d["ckpt"] + d["model"]) / io
                    row.update(fine_tunes=len(plan.runs), train_examples=round(examples), train_tokens=round(tokens),
                               tokens_from="+".join(sorted(sources)),
                               tokens_per_microbatch=round(statistics.fmean(micro)) if micro else None)
                    if params is not None:
                        row.update(train_gpu_h=flops / speed["train"] / 3600, model_gb=model_b / GB,
                                   peak_gb_per_job=peak_b / GB, kept_gb=kept_b / GB,
                                   overhead_gpu_h=overhead * gpus / 3600)
                        row["wall_h_per_job"] = (row["train_gpu_h"] / gpus + overhead / 3600) / len(plan.runs)
                    rows.append(evaluation(row, prof["prefill"], len(plan.runs), len(plan.runs)))
                    for test in plan.test_on(name):  # every run also scored on the other dataset's test items
                        tprof = dataset_profile(ctx, test, slug)
                        if "why" in tprof:
                            missing.append(f"{test} x {m['id']}: {tprof['why']}")
                            continue
                        rows.append(evaluation(_row(m["id"], f"{name} on {test}", label, gpus, eval_gpus),
                                               tprof["prefill"], len(plan.runs), len(plan.runs), tprof))
    ctx.save_cache()
    totals = _totals(rows, storage)
    assumptions = {"training": speed["train_from"], "prefill": speed["prefill_from"], "decoding": speed["decode_from"],
                   "generation": s["generation"], "chars_per_token": s["chars_per_token"],
                   "overhead": f"{s['startup_s']:g} s per job + reading the model and writing checkpoints and the "
                               f"saved model at {s['io_gbps']:g} GB/s",
                   "measured": (got or {}).get("notes"), "peak_tflops": s["peak_tflops"], "mfu": s["mfu"]}
    return {"rows": rows, "totals": totals, "assumptions": assumptions, "missing": list(dict.fromkeys(missing)),
            "storage": dict(storage)}


def _row(model: str, dataset: str, method: str, gpus: int, eval_gpus: int) -> dict:
    """A row before its figures: nothing trained, figures that need the parameter count unknown (None)."""
    return {"model": model, "dataset": dataset, "method": method, "fine_tunes": 0, "train_examples": 0,
            "train_tokens": 0, "tokens_from": None, "tokens_per_microbatch": None, "train_gpu_h": None,
            "gpus_per_job": gpus, "wall_h_per_job": None, "eval_passes": 0, "eval_tokens": 0, "eval_gpu_h": None,
            "eval_gpu_h_other": None, "eval_gpus_per_job": eval_gpus, "overhead_gpu_h": 0.0, "model_gb": None,
            "peak_gb_per_job": None, "kept_gb": None}


def _totals(rows: list[dict], storage: dict) -> dict:
    def total(key):
        return sum(r[key] for r in rows if r[key] is not None)

    unknown = [f"{r['model']} x {r['dataset']} x {r['method']}" for r in rows
               if (r["train_gpu_h"] is None and r["fine_tunes"]) or r["eval_gpu_h"] is None]
    micro = [r["tokens_per_microbatch"] for r in rows if r["tokens_per_microbatch"]]
    return {"fine_tunes": sum(r["fine_tunes"] for r in rows), "eval_passes": sum(r["eval_passes"] for r in rows),
            "train_tokens": total("train_tokens"), "train_gpu_h": total("train_gpu_h"),
            "eval_tokens": total("eval_tokens"), "eval_gpu_h": total("eval_gpu_h"),
            "eval_gpu_h_other": total("eval_gpu_h_other"), "overhead_gpu_h": total("overhead_gpu_h"),
            "gpu_h": total("train_gpu_h") + total("eval_gpu_h") + total("overhead_gpu_h"),
            "kept_gb": total("kept_gb"), "models_written_gb": sum((r["model_gb"] or 0) * r["fine_tunes"] for r in rows),
            "peak_gb_per_job": max([r["peak_gb_per_job"] for r in rows if r["peak_gb_per_job"] is not None] or [0.0]),
            "delete_finetuned_models": bool(storage.get("delete_finetuned_models")),
            "rows_without_params": unknown, "known": len(unknown) < len(rows),
            "tokens_per_microbatch": (min(micro), max(micro)) if micro else None,
            "tokens_from": sorted({r["tokens_from"] for r in rows if r["tokens_from"]})}


# ------------------------------------------------------------------------------------------ output
def _num(x, digits: int = 1) -> str:
    if x is None:
        return "?"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{int(x):,}"


def _size(gb) -> str:
    """A size given in GB, in the unit that reads best."""
    gb = float(gb or 0)
    for unit, div in (("TB", 1e3), ("GB", 1.0), ("MB", 1e-3)):
        if gb >= div:
            return f"{gb / div:.2f} {unit}"
    return f"{gb * 1e6:.0f} kB"


def _tokens(x) -> str:
    x = float(x or 0)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def format_table(result: dict) -> str:
    """One markdown row per model x dataset x method ("?" where the model's parameter count is missing)."""
    cols = [("model", "model"), ("dataset", "dataset"), ("method", "method"), ("fine-tunes", "fine_tunes"),
            ("examples", "train_examples"), ("train tokens", "train_tokens"), ("tokens from", "tokens_from"),
            ("tokens/micro-batch", "tokens_per_microbatch"), ("train GPU-h", "train_gpu_h"),
            ("GPUs/job", "gpus_per_job"), ("h/job", "wall_h_per_job"), ("eval passes", "eval_passes"),
            ("eval tokens", "eval_tokens"), ("eval GPU-h", "eval_gpu_h"), ("overhead GPU-h", "overhead_gpu_h"),
            ("model GB", "model_gb"), ("peak GB/job", "peak_gb_per_job"), ("kept GB", "kept_gb")]
    trained_only = {"train_examples", "train_tokens", "tokens_from", "tokens_per_microbatch", "train_gpu_h",
                    "wall_h_per_job", "model_gb", "peak_gb_per_job", "kept_gb"}
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = []
        for _, key in cols:
            v = r[key]
            if key in trained_only and not r["fine_tunes"]:
                cells.append("")
            elif key in ("train_tokens", "eval_tokens"):
                cells.append(_tokens(v))
            elif v is None:
                cells.append("?")
            elif isinstance(v, float):
                cells.append(_num(v, 2))
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grouped(missing: list[str]) -> list[str]:
    """``params of A: why`` lines with the same reason as one: ``params of A, B (2 models): why``."""
    by_why, out = {}, []
    for m in missing:
        hit = re.match(r"params of (.+?): (.*)$", m)
        if hit:
            by_why.setdefault(hit.group(2), []).append(hit.group(1))
        else:
            out.append(m)
    for why, models in by_why.items():
        n = f" ({len(models)} models)" if len(models) > 1 else ""
        out.insert(0, f"params of {', '.join(models)}{n}: {why}")
    return out


def format_summary(result: dict, configfile: str = "", short: bool = False) -> str:
    """The totals in a few lines (the dry run prints them with ``short``)."""
    t, a = result["totals"], result["assumptions"]
    if not t["known"]:
        head = "GPU-hours unknown (no model's parameter count)"
        part = ""
    else:
        part = ">= " if t["rows_without_params"] else ""
        head = f"{part}{t['gpu_h']:,.1f} GPU-h" + (f" ({len(t['rows_without_params'])} row(s) without a parameter "
                                                     "count left out)" if part else "")
    def h(x):
        return f"{part}{x:,.1f} GPU-h" if t["known"] else "? GPU-h"

    def size(x):
        return _size(x) if t["known"] else "?"

    gen = "up to max_gen_toks" if a["generation"] == "max_gen_toks" else "as long as the training target"
    if short:
        first = (f"{head} (training {h(t['train_gpu_h'])}, evaluation {h(t['eval_gpu_h'])}, job overhead "
                 f"{h(t['overhead_gpu_h'])}); disk {size(t['kept_gb'])} kept at the end, up to "
                 f"{size(t['peak_gb_per_job'])} per running fine-tune") if t["known"] else \
            "GPU-hours and disk need the models' parameter counts (not counted below)"
        lines = [f"estimate: {t['fine_tunes']} fine-tune(s), {t['eval_passes']} evaluation pass(es): {first}",
                 f"estimate:   {_tokens(t['train_tokens'])} training tokens (from {', '.join(t['tokens_from']) or '-'}); "
                 f"training at {a['training']}; generations {gen}"]
        if result["missing"]:
            grouped = _grouped(result["missing"])
            lines.append("estimate:   not counted: " + "; ".join(grouped[:2]) + (" ..." if len(grouped) > 2 else ""))
        lines.append(f"estimate:   the table per model x dataset x method: crossdiff estimate --configfile "
                     f"{configfile or 'FILE'}")
        return "\n".join(lines)
    other = "as long as the training target" if a["generation"] == "max_gen_toks" else "up to max_gen_toks"
    lines = [
        f"estimate{' of ' + configfile if configfile else ''}: {t['fine_tunes']} fine-tune(s), {t['eval_passes']} "
        f"evaluation pass(es) over the test items: {head}",
        f"estimate:   training   {h(t['train_gpu_h'])} for {_tokens(t['train_tokens'])} tokens "
        f"(6 x params x tokens at {a['training']}; tokens from {', '.join(t['tokens_from']) or '-'})",
        f"estimate:   evaluation {h(t['eval_gpu_h'])} for {_tokens(t['eval_tokens'])} tokens (generations {gen}; "
        f"{h(t['eval_gpu_h_other'])} if {other}; prefill at {a['prefill']}, decoding at {a['decoding']})",
        f"estimate:   job overhead {h(t['overhead_gpu_h'])} ({a['overhead']})",
        f"estimate:   disk {size(t['kept_gb'])} kept at the end ("
        + ("fine-tuned models deleted once evaluated" if t["delete_finetuned_models"] else "every fine-tuned model")
        + f"), {size(t['models_written_gb'])} of fine-tuned models written, up to {size(t['peak_gb_per_job'])} "
        "per running fine-tune (checkpoints + model)",
    ]
    micro = t["tokens_per_microbatch"]
    if micro and micro[0] < 2048 and not a["measured"]:
        lines.append(f"estimate:   note: micro-batches of {micro[0]:,}-{micro[1]:,} tokens (per-device batch x mean "
                     "example) run below the default MFU's 8192-token sequences: measure it (benchmarks/gpu_check.py, "
                     "resources.estimate.measured)")
    return "\n".join(lines)


_DRY_RUN_FLAGS = ("-n", "--dry-run", "--dryrun", "--just-print")


def is_dry_run(argv) -> bool:
    """Whether snakemake's command line asks for a dry run: ``-n`` alone or among short flags that take no
    value (``-np``, ``-pn``), or its long forms."""
    return any(a in _DRY_RUN_FLAGS or re.fullmatch(r"-[pqFfkr]*n[pqFfkr]*", a) for a in list(argv)[1:])


def dry_run_summary(plan, configfile: str = "") -> str:
    """The dry run's few lines: no tokenizer loaded, no hub look-up (the CLI does both), never an error."""
    try:
        result = estimate(plan, tokenize=False, lookup=False)
    except Exception as exc:  # the summary never stops a dry run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"estimate: not available ({first[:200]}); crossdiff estimate --configfile {configfile or 'FILE'}"
    if not result["rows"] and not result["missing"]:
        return ""
    return format_summary(result, configfile, short=True)


# ------------------------------------------------------------------------------------------ the CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", required=True, help="the config file (as snakemake --configfile)")
    p.add_argument("--directory", default=".", help="the work directory the study runs in (snakemake -d); default .")
    p.add_argument("--measured", help="benchmarks/gpu_check.py's gpu_check.json or gpu_check.md (its MFU and "
                                      "generation throughput replace the defaults)")
    p.add_argument("--mfu", type=float, help="training MFU (over resources.estimate.mfu)")
    p.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of one GPU (default 989: H100/H200)")
    p.add_argument("--eval-mfu", type=float, help="MFU of evaluation forward passes (default: the training MFU)")
    p.add_argument("--decode-mfu", type=float, help="MFU of decoding (default: the roofline, see --help of the module)")
    p.add_argument("--generation", choices=GENERATION, help="generated tokens per item: max_gen_toks or the target's length")
    p.add_argument("--model-configs", help="config.json of models offline: a JSON {model id: config} "
                                           "(e.g. tests/fixtures/paper_models.json) or a folder <org>--<name>.json")
    p.add_argument("--no-tokenize", action="store_true", help="count characters, never load a tokenizer")
    p.add_argument("--no-lookup", action="store_true", help="no hub look-up of config.json")
    p.add_argument("--json", help="also write the rows, totals and assumptions as JSON here")


def run(args: argparse.Namespace) -> None:
    from crossdiff.config import load

    config_path = os.path.abspath(args.configfile)
    json_path = os.path.abspath(args.json) if args.json else None
    configs = load_model_configs(args.model_configs) if args.model_configs else None
    measured = os.path.abspath(args.measured) if args.measured else None
    if not os.path.isdir(args.directory):
        raise CrossdiffError(f"{args.directory}: --directory not found")
    os.chdir(args.directory)
    if not os.path.isfile(config_path):
        raise CrossdiffError(f"{args.configfile}: config file not found")
    plan = Plan(load(config_path))
    overrides = {"mfu": args.mfu, "peak_tflops": args.peak_tflops, "eval_mfu": args.eval_mfu,
                 "decode_mfu": args.decode_mfu, "generation": args.generation}
    result = estimate(plan, tokenize=not args.no_tokenize, lookup=not args.no_lookup, model_configs=configs,
                      measured=measured, overrides=overrides)
    print(format_table(result))
    print()
    print(format_summary(result, args.configfile))
    for name in sorted({r["dataset"] for r in result["rows"]}):
        prof_sources = sorted({r["tokens_from"] for r in result["rows"] if r["dataset"] == name and r["tokens_from"]})
        if "benchmark" in " ".join(prof_sources):
            spec = plan.dataset(name)["items"]
            print(f"  {name}: per-benchmark figures ({BENCHMARKS[spec['adapter']]['source']})")
    if result["missing"]:
        print("not counted:", *result["missing"], sep="\n  - ")
    if json_path:
        from crossdiff.io import write_json

        write_json(result, json_path)
