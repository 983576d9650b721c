"""One chat-template rendering (issue 26): training (show-prompt's text, TRL's tokens, the length check), the loss
measure, ICL, lm-eval's chat path and show-prompt of an lm-eval task all render a Llama-3-style template, which
writes today's date unless ``date_string`` is given, with the same fixed date."""

from __future__ import annotations

import datetime
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.prompts.chat import CHAT_TEMPLATE_KWARGS, lm_eval_renderer, render_chat, template_kwargs
from crossdiff.prompts.format import PromptFormat

from conftest import REPO

FIXED = f"Today Date: {CHAT_TEMPLATE_KWARGS['date_string']}"
TODAY = f"Today Date: {datetime.date.today().strftime('%d %b %Y')}"

# Llama 3.x's own date logic (strftime_now when date_string is undefined), trimmed to the parts that matter
LLAMA3 = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with a byte-level tokenizer (every character its own token) carrying the template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("llama3ish")
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|pad|>"]
    raw.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|pad|>")
    tok.chat_template = LLAMA3
    tok.save_pretrained(d)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


FMT = PromptFormat(instruction="Be brief.")
ITEM = {"item_id": "a", "question": "1 + 1 = ?", "answer": "2"}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question: 1 + 1 = ?\nAnswer:"}]
ANSWER = [{"role": "assistant", "content": "2"}]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_template_prints_todays_date_without_the_fixed_one(tok):
    """The tokenizer is a fair witness: rendered without date_string it writes today's date."""
    plain = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert TODAY in plain
    assert FIXED in render_chat(tok, MESSAGES, add_generation_prompt=True)


def test_training_loss_and_show_prompt_render_the_same_text(tok):
    """show-prompt's training text, TRL's tokens of the training example, the training length check and the loss
    measure's tokens: one rendering, the fixed date."""
    from trl.data_utils import _tokenize

    from crossdiff.evaluate.loss_measure import tokenize_example
    from crossdiff.prompts.show import describe
    from crossdiff.study.sft_data import _token_lengths

    prompt_text = render_chat(tok, MESSAGES, add_generation_prompt=True)
    full_text = render_chat(tok, MESSAGES + ANSWER)
    assert FIXED in prompt_text and (TODAY == FIXED or TODAY not in full_text)
    shown = describe(FMT, ITEM, tok)
    assert shown["training"]["prompt"] == prompt_text
    assert shown["training"]["prompt"] + shown["training"]["completion"] == full_text
    assert shown["evaluation"]["request"] == prompt_text  # the evaluation prompt of a crossdiff task
    # TRL renders the conversational example itself, with the example's chat_template_kwargs (as tokenize_fn does)
    record = FMT.sft_record(ITEM)
    ex = FMT.training_example(record, chat=True)
    kw = {"chat_template": None, "tools": None, **ex["chat_template_kwargs"]}
    trl_prompt = _tokenize(tok, ex["prompt"], add_generation_prompt=True, **kw)["input_ids"]
    trl_full = _tokenize(tok, ex["prompt"] + ex["completion"], **kw)["input_ids"]
    assert trl_prompt == _ids(tok, prompt_text) and trl_full == _ids(tok, full_text)
    assert _token_lengths(tok, ex, True) == (len(trl_prompt), len(trl_full))
    # the loss measure (bins.by loss:<model>): was rendered without date_string, i.e. today's date
    ids, n_prompt = tokenize_example(tok, record, FMT)
    assert ids == trl_full and n_prompt == len(trl_prompt)
    assert tok.decode(ids) == full_text


def test_lm_eval_chat_path_renders_through_the_same_function(model_dir, tok):
    """The lm-eval model evaluation loads (hf) renders with the one function: lm-eval's generation prompt, its
    continued final message (multiple-choice continuations), and multi-turn ICL demonstrations."""
    from crossdiff.evaluate.run import load_lm, resolve_settings

    lm = load_lm(model_dir, resolve_settings({"device": "cpu", "batch_size": 1}))
    assert lm.apply_chat_template(MESSAGES) == render_chat(tok, MESSAGES, add_generation_prompt=True)
    turns = MESSAGES + ANSWER + [{"role": "user", "content": "Question: 2 + 2 = ?\nAnswer:"}]
    assert lm.apply_chat_template(turns) == render_chat(tok, turns, add_generation_prompt=True)
    assert lm.apply_chat_template(MESSAGES + ANSWER, add_generation_prompt=False) == \
        render_chat(tok, MESSAGES + ANSWER, continue_final_message=True)
    assert FIXED in lm.apply_chat_template(MESSAGES)
    # and with a model argument the template reads, the fixed date stays
    extra = lm_eval_renderer(tok, {"enable_thinking": False})
    assert extra(MESSAGES) == render_chat(tok, MESSAGES, add_generation_prompt=True)
    with pytest.raises(CrossdiffError, match="chat_template_args.date_string"):
        template_kwargs({"date_string": "01 Jan 2030"})


def test_icl_contexts_and_lm_eval_task_requests_use_the_fixed_date(tmp_path, tok):
    import crossdiff.evaluate.run as ev
    from crossdiff.evaluate.icl import make_icl_task, rendered_contexts
    from crossdiff.items.adapters import prepare_items, prompt_for
    from crossdiff.items.synthetic import generate_items
    from crossdiff.prompts.show import describe_lm_eval_task

    items = generate_items(30, seed=5)
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": [i % 2 for i in range(30)]}).write_parquet(
        tmp_path / "bins.parquet")
    ev.make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 1, tmp_path / "task1", "arith")
    make_icl_task(tmp_path / "task1", tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, 2, tmp_path / "icl")
    contexts = rendered_contexts(tmp_path / "icl", seed=1, tokenizer=tok)
    assert contexts and all(c.count(FIXED) == 1 and c.count("<|start_header_id|>assistant") == 3 for c in contexts.values())
    # show-prompt of an lm-eval task under the chat template: lm-eval's own request, rendered by the same function
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1", "answer": str(i + 1), "options": [str(i), str(i + 1)],
                                        "label": 1}) + "\n" for i in range(4)))
    settings = {"source": "lm_eval_task", "task": "sums_mc", "include_path": str(REPO / "tests" / "fixtures" / "lm_eval_tasks"),
                "overrides": {"dataset_kwargs": {"data_files": {"test": str(data)}}}, "chat_template": True}
    table = prepare_items(settings, "sums")
    fmt = PromptFormat.from_config(prompt_for(settings, None))
    info = describe_lm_eval_task(fmt, table.to_dicts()[0], tok)
    request = info["evaluation"]["request"]
    assert FIXED in request and request == render_chat(tok, [{"role": "user", "content": "Question: 0 + 1\nAnswer:"}],
                                                       add_generation_prompt=True)
    assert info["training"]["prompt"] == request
