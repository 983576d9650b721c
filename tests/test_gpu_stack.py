"""Issue 18 under the pinned (GPU) stack: a real SFTConfig from build_trainer's arguments with the FSDP2
settings (item 1), padding-free batches with max_length enforced (item 5), a bf16 save says bfloat16 in
config.json (minor), fp32 gradient reduction under FSDP2 (item 8) and 8-bit optimizers refused with FSDP2."""

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import yaml

from conftest import REPO
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.settings import precision_plan, resolve_settings
from crossdiff.finetune.train import engine_for, sft_config_kwargs

PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 200,
         "warmup_steps": 5, "batch_size": 32, "eval_items": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import polars as pl

    from crossdiff.finetune.run import read_sft_jsonl
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model
    from crossdiff.study.sft_data import make_sft_data

    root = tmp_path_factory.mktemp("gpu_stack")
    items = generate_items(40, seed=3)
    items.write_parquet(root / "items.parquet")
    order = items["n_ops"].rank("ordinal").cast(pl.Int64) - 1
    pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64), "bin": order * 2 // 40}).write_parquet(root / "bins.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    make_sft_data(root / "items.parquet", root / "bins.parquet", 0, root / "bin0.jsonl")
    return {"root": root, "model": root / "base", "train": root / "bin0.jsonl", "rows": read_sft_jsonl(root / "bin0.jsonl")}


def test_real_sft_config_for_fsdp2_with_the_paper_settings(tmp_path):
    """SFTConfig of the installed TRL/transformers (the GPU pins) accepts what build_trainer passes for an
    FSDP2 job; TRL's gradient_checkpointing default (True) is overridden by an explicit False since FSDP's own
    activation checkpointing is on."""
    from trl import SFTConfig

    s = resolve_settings(PAPER["finetune"])
    prec = precision_plan(s, on_gpu=False, bf16_supported=False)
    kw = sft_config_kwargs(s, tmp_path, engine="fsdp2", on_gpu=False, prec=prec, grad_ckpt=True, accum=1)
    cfg = SFTConfig(**kw)
    assert cfg.gradient_checkpointing is False
    assert cfg.fsdp_plugin_args["fsdp_version"] == 2 and cfg.fsdp_plugin_args["activation_checkpointing"] is True
    assert cfg.ddp_timeout == 7200 and cfg.max_length == 4096
    assert cfg.accelerator_config.gradient_accumulation_kwargs == {"sync_each_batch": True}
    single = SFTConfig(**sft_config_kwargs(s, tmp_path, engine="single", on_gpu=False, prec=prec, grad_ckpt=True, accum=8))
    assert single.gradient_checkpointing is True and not single.fsdp


def test_eight_bit_optimizer_refused_with_fsdp2():
    s = resolve_settings({"optim": "paged_adamw_8bit"})
    with pytest.raises(CrossdiffError, match="bitsandbytes#1633"):
        engine_for(s, 4, on_gpu=True)
    assert engine_for(s, 1, on_gpu=True) == "single" and engine_for({**s, "sharding": "ddp"}, 4, on_gpu=True) == "ddp"


def test_padding_free_builds_and_enforces_max_length(tiny):
    """TRL raises for padding_free with max_length and no packing; crossdiff passes max_length=None and cuts
    the tokenized examples itself (flash attention is needed on a GPU; on CPU the flat batch is checked)."""
    from crossdiff.finetune.train import build_trainer
    from crossdiff.prompts.format import PromptFormat

    s = {**resolve_settings({"max_length": 24, "per_device_train_batch_size": 4, "max_steps": 1}), "padding_free": True}
    trainer, _, _ = build_trainer(tiny["model"], tiny["rows"], tiny["root"] / "pf", s, PromptFormat())
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    assert max(lengths) == 24 and min(lengths) < 24
    assert all(len(a) == len(b) for a, b in zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # one flat sequence, no padding
    assert batch["input_ids"].shape[1] == sum(lengths[:4])


def test_bf16_save_says_bfloat16_in_config(tiny, tmp_path):
    from safetensors import safe_open

    from crossdiff.finetune.run import finetune

    out = tmp_path / "ft"
    finetune(tiny["model"], tiny["train"], out, settings={"max_steps": 2, "per_device_train_batch_size": 4,
                                                          "learning_rate": 1e-3, "save_dtype": "bf16"})
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert str(fh.get_tensor(next(iter(fh.keys()))).dtype) == "torch.bfloat16"


def test_fsdp2_reduces_gradients_in_fp32():
    """accelerate's default FSDP2 policy under bf16 reduces in bf16; crossdiff replaces it (item 8)."""
    import types

    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin

    from crossdiff.finetune.train import fp32_gradient_reduction

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    plugin.set_mixed_precision("bf16")
    assert plugin.mixed_precision_policy.reduce_dtype == torch.bfloat16  # accelerate's default
    trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(state=types.SimpleNamespace(fsdp_plugin=plugin)))
    fp32_gradient_reduction(trainer)
    pol = plugin.mixed_precision_policy
    assert pol.reduce_dtype == torch.float32 and pol.param_dtype == torch.bfloat16


def test_training_renders_the_chat_template_with_the_fixed_date(tiny, tmp_path):
    """TRL renders conversational examples with their chat_template_kwargs: a Llama-3-style template gets the
    fixed date, not today's (what evaluation also passes)."""
    import shutil

    from transformers import AutoTokenizer

    from crossdiff.finetune.train import build_trainer
    from crossdiff.prompts.format import PromptFormat

    model = tmp_path / "chat"
    shutil.copytree(tiny["model"], model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = ("{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
                         "Date: {{ date_string }}\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(model)
    s = resolve_settings({"max_length": 512, "per_device_train_batch_size": 2, "max_steps": 1})
    trainer, tok, runtime = build_trainer(model, tiny["rows"][:4], tmp_path / "w", s, PromptFormat())
    assert runtime["chat_template"] is True
    assert tok.decode(trainer.train_dataset[0]["input_ids"]).startswith("Date: 26 Jul 2024\n")


def test_flash_attention_without_flash_attn_stops_naming_the_setting(tiny, monkeypatch):
    """padding_free needs flash_attention_2; without flash-attn installed the job stops before loading, saying
    how to install it (flash-attn is not in the requirement files: it compiles against the installed torch)."""
    import importlib.util

    from crossdiff.finetune.train import build_trainer
    from crossdiff.prompts.format import PromptFormat

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    s = resolve_settings({"padding_free": True, "attn_implementation": "flash_attention_2", "max_steps": 1})
    with pytest.raises(CrossdiffError, match="flash-attn is not installed: pip install flash-attn"):
        build_trainer(tiny["model"], tiny["rows"], tiny["root"] / "fa", s, PromptFormat())
