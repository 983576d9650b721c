"""The backends decode exactly as crossdiff says (crossdiff.prompts.decoding), never as a model's files say.

* hf: lm-eval's ``HFLM`` calls ``model.generate`` with the task's ``generation_kwargs`` only, so
  transformers fills every other field from the model's ``generation_config`` (a
  ``repetition_penalty`` there changes greedy outputs). :func:`neutralize_hf` replaces the loaded
  model's ``generation_config`` by a neutral one that keeps only the special-token ids (EOS still
  ends a generation, as in the authors' vLLM runs).
* vLLM: :data:`VLLM_ARGS` (``generation_config="vllm"``) makes the engine ignore the model's
  ``generation_config.json``; lm-eval passes the task's sampling parameters explicitly.

Either way the evaluation log says once which of the model's fields were overridden.
"""

from __future__ import annotations

#: generation-config fields that are not decoding choices: kept from the model's own config
KEEP = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "transformers_version",
        "_from_model_config")

#: fields that do not choose tokens: reset with the rest, but not reported as overridden
NOT_DECODING = ("use_cache", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
                "return_dict_in_generate", "cache_implementation", "cache_config", "compile_config", "disable_compile")

#: vLLM engine arguments: ignore the model's generation_config.json (vLLM's neutral defaults)
VLLM_ARGS = {"generation_config": "vllm"}


def overridden_fields(generation_config) -> dict:
    """The decoding fields a model's generation config sets away from transformers' defaults."""
    if generation_config is None:
        return {}
    return {k: v for k, v in sorted(generation_config.to_diff_dict().items()) if k not in KEEP + NOT_DECODING}


def neutral_generation_config(generation_config):
    """A default ``GenerationConfig`` carrying only ``generation_config``'s special-token ids."""
    from transformers import GenerationConfig

    keep = {k: getattr(generation_config, k, None) for k in KEEP[:4]} if generation_config is not None else {}
    return GenerationConfig(**{k: v for k, v in keep.items() if v is not None})


def report(model_path, fields: dict, backend: str) -> str:
    """One log line: what crossdiff overrode of the model's generation config."""
    if not fields:
        return f"decoding: greedy, repetition_penalty 1.0 ({backend}); {model_path}'s generation config sets no decoding field"
    return (f"decoding: greedy, repetition_penalty 1.0 ({backend}); overriding {model_path}'s generation config: "
            + ", ".join(f"{k}={v!r}" for k, v in fields.items()))


def neutralize_hf(lm, model_path) -> dict:
    """Give the hf model behind an lm-eval ``HFLM`` a neutral generation config; returns what it overrode."""
    model = lm.model
    if hasattr(model, "get_base_model"):  # a peft model (QLoRA): its generate() runs the base model's
        model = model.get_base_model()
    fields = overridden_fields(getattr(model, "generation_config", None))
    model.generation_config = neutral_generation_config(getattr(model, "generation_config", None))
    print(report(model_path, fields, "hf"))
    return fields


def model_generation_fields(model_path) -> dict:
    """The decoding fields of a model's generation_config.json (for the vLLM log; {} when it has none)."""
    try:
        from transformers import GenerationConfig

        return overridden_fields(GenerationConfig.from_pretrained(str(model_path)))
    except (OSError, ValueError):
        return {}
