"""Decoding set completely by crossdiff: a model's generation_config.json changes nothing (hf and vLLM)."""

import json
import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl
import pytest

from crossdiff.items.synthetic import generate_items
from crossdiff.prompts.decoding import generation_kwargs
from crossdiff.prompts.format import PromptFormat

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 400,
         "warmup_steps": 40, "batch_size": 32, "eval_items": 0}
# min_new_tokens and no_repeat_ngram_size are not among the task's generation_kwargs: only the neutral
# generation config keeps them out (repetition_penalty and do_sample are also set by the task itself)
LEAKY = {"repetition_penalty": 3.0, "top_k": 3, "do_sample": True, "temperature": 1.7, "min_new_tokens": 8,
         "no_repeat_ngram_size": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("decoding")
    items = generate_items(40, seed=3)
    items.write_parquet(root / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(root / "bins.parquet")
    build_base_model(root / "plain", root / "items.parquet", SMALL)
    shutil.copytree(root / "plain", root / "leaky")
    path = root / "leaky" / "generation_config.json"
    gc = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**gc, **LEAKY}))
    # long generations (no stop string) so that a repetition penalty has repeats to act on
    from crossdiff.evaluate.run import make_task

    make_task(root / "items.parquet", root / "bins.parquet", 0, root / "task", "arith", {"stop": [], "max_gen_toks": 24})
    return root


def _raw(root, model, name, monkeypatch=None):
    from crossdiff.evaluate.run import evaluate_model, samples_path

    out = root / "eval" / f"{name}.json"
    evaluate_model(root / model, [root / "task"], [out], {"batch_size": 8})
    return {s["item_id"]: s["raw"] for s in map(json.loads, samples_path(out).read_text().splitlines())}


def test_model_generation_config_cannot_change_hf_outputs(models, monkeypatch, capsys):
    plain = _raw(models, "plain", "plain")
    capsys.readouterr()
    leaky = _raw(models, "leaky", "leaky")
    log = capsys.readouterr().out
    assert leaky == plain  # identical generations, item by item, through the real evaluation path
    assert len(set(plain.values())) > 1
    # the log says, once, which of the model's fields were overridden
    lines = [line for line in log.splitlines() if line.startswith("decoding:")]
    assert len(lines) == 1 and all(f"{k}={v!r}" in lines[0] for k, v in LEAKY.items())
    assert "use_cache" not in lines[0]  # only fields that choose tokens are reported
    # without crossdiff's neutral generation config the same files DO change the outputs (the test can fail)
    import crossdiff.evaluate.run as E

    monkeypatch.setattr(E, "neutralize_hf", lambda lm, path: {})
    assert _raw(models, "leaky", "leaky-unguarded") != plain


def test_neutral_config_keeps_only_the_special_tokens():
    from transformers import GenerationConfig

    from crossdiff.evaluate.decoding import neutral_generation_config, overridden_fields

    qwen = GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=True,
                            repetition_penalty=1.05, temperature=0.7, top_p=0.8, top_k=20, use_cache=True)
    assert overridden_fields(qwen) == {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7,
                                       "top_k": 20, "top_p": 0.8}
    neutral = neutral_generation_config(qwen)
    assert neutral.eos_token_id == [151645, 151643] and neutral.pad_token_id == 151643
    assert overridden_fields(neutral) == {}


def test_vllm_gets_the_same_decoding():
    """vLLM: the engine ignores the model's generation_config.json and lm-eval's mapping of the task's
    generation_kwargs into SamplingParams is greedy without penalty."""
    from lm_eval.models.utils import normalize_gen_kwargs

    from crossdiff.evaluate.run import resolve_settings, vllm_model_args

    assert vllm_model_args("/m", resolve_settings({"backend": "vllm"}), 1)["generation_config"] == "vllm"
    kwargs = generation_kwargs(PromptFormat.from_config({"stop": ["Q:"], "max_gen_toks": 256}))
    sampling = normalize_gen_kwargs(kwargs)
    sampling.pop("do_sample")  # what lm-eval's VLLM.modify_gen_kwargs does next
    assert sampling["temperature"] == 0.0 and sampling["repetition_penalty"] == 1.0
    assert sampling["until"] == ["Q:"] and sampling["max_gen_toks"] == 256
    assert not {"top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty"} & set(sampling)
