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


LLAMA_LIKE = ("{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
              "<|start|>system: Today Date: {{ date_string }}\n{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
              "<|eot|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _llama_like_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    t.chat_template = LLAMA_LIKE
    return t


def test_chat_template_date_is_fixed_in_training_and_evaluation(tmp_path):
    """Llama 3.2's template writes today's date unless date_string is given (minor of issue 18): training
    examples (TRL's per-example chat_template_kwargs), rendered prompts and lm-eval's chat_template_args all
    carry the same fixed date."""
    from crossdiff.prompts.format import CHAT_TEMPLATE_KWARGS, PromptFormat

    tok = _llama_like_tokenizer(tmp_path)
    fmt = PromptFormat()
    item = {"item_id": "a", "question": "1 + 1 = ?", "answer": "2"}
    assert "Today Date: 26 Jul 2024" in fmt.render_prompt(item, tok)
    prompt, _ = fmt.render_training(item, tok)
    assert "Today Date: 26 Jul 2024" in prompt
    ex = fmt.training_example(fmt.sft_record(item), chat=True)
    assert ex["chat_template_kwargs"] == CHAT_TEMPLATE_KWARGS
    assert hf_model_kwargs(resolve_settings({}))["chat_template_args"] == CHAT_TEMPLATE_KWARGS
    kept = hf_model_kwargs(resolve_settings({"model_args": {"chat_template_args": {"enable_thinking": False}}}))
    assert kept["chat_template_args"] == {**CHAT_TEMPLATE_KWARGS, "enable_thinking": False}
