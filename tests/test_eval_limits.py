"""Issue 18, items 6 and 9: hf auto batch sizing bounded by a configurable length; vLLM data parallelism
refused without Ray."""

import os
from importlib.util import find_spec

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.backends import hf_model_kwargs, vllm_model_args
from crossdiff.evaluate.run import resolve_settings


def test_auto_batch_is_sized_at_a_bounded_length():
    assert hf_model_kwargs(resolve_settings({"batch_size": "auto"}))["max_length"] == 8192
    assert hf_model_kwargs(resolve_settings({"batch_size": "auto", "auto_batch_max_length": 6000}))["max_length"] == 6000
    assert hf_model_kwargs(resolve_settings({"batch_size": "auto", "max_length": 5000}))["max_length"] == 5000
    assert "max_length" not in hf_model_kwargs(resolve_settings({"batch_size": 16}))


def test_hflm_takes_the_bound_instead_of_the_model_context(tmp_path):
    """A model whose config says 131072 positions (Llama 3.x): HFLM's max_length, which batch detection uses,
    is the bound."""
    from lm_eval.models.huggingface import HFLM
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=131072)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok = Tokenizer(models.WordLevel({chr(97 + i): i for i in range(26)} | {"<unk>": 26, "</s>": 27}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path)
    s = resolve_settings({"batch_size": "auto"})
    lm = HFLM(pretrained=str(tmp_path), device="cpu", dtype="float32", batch_size=1, **hf_model_kwargs(s))
    assert lm.max_length == 8192
    assert HFLM(pretrained=str(tmp_path), device="cpu", dtype="float32", batch_size=1).max_length == 131072


def test_vllm_data_parallel_needs_ray(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    s = resolve_settings({"backend": "vllm", "data_parallel": 2})
    with pytest.raises(CrossdiffError, match="ray is not installed"):
        vllm_model_args("m", s, 2)
    assert vllm_model_args("m", resolve_settings({"backend": "vllm"}), 2)["tensor_parallel_size"] == 2
