"""The decoding of every generation task, set completely by crossdiff.

A model's own ``generation_config.json`` must not change what is scored: Qwen2.5-Instruct ships
``repetition_penalty`` > 1 (and ``top_k``/``top_p``/``temperature``), Llama-3.1-Instruct
``do_sample``/``temperature``/``top_p``, and transformers applies a repetition penalty even under
greedy decoding (to prompt tokens too). The authors decoded with vLLM and lm-eval's own sampling
parameters: greedy, no penalty. So the decoding is exactly:

* greedy (``do_sample: false``, ``temperature: 0``), ``repetition_penalty: 1.0``;
* the format's ``stop`` strings and ``max_gen_toks`` new tokens (plus the tokenizer's EOS);
* nothing else: no ``top_k``/``top_p``/``min_p``/``typical_p``, no ``no_repeat_ngram_size``, no
  length penalty, no forced or suppressed tokens, whatever the model's files say.

The task YAML carries :func:`generation_kwargs`; the backends drop the model's own generation
config (hf: a neutral ``GenerationConfig`` that keeps only the special-token ids; vLLM:
``generation_config="vllm"``), see ``crossdiff.evaluate.decoding``. :func:`effective` is what
``crossdiff show-prompt`` prints.
"""

from __future__ import annotations

#: the decoding fields crossdiff fixes for every generation task, whatever the model says
GREEDY: dict = {"do_sample": False, "temperature": 0.0, "repetition_penalty": 1.0}

#: generation-config fields left at the library's neutral default (never taken from a model's files)
NEUTRAL_FIELDS = ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "no_repeat_ngram_size",
                  "encoder_repetition_penalty", "length_penalty", "exponential_decay_length_penalty",
                  "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens",
                  "begin_suppress_tokens", "sequence_bias", "num_beams", "max_new_tokens", "min_new_tokens",
                  "min_length", "presence_penalty", "frequency_penalty")


def generation_kwargs(fmt) -> dict:
    """lm-eval ``generation_kwargs`` of a generation task (the same for the hf and vLLM backends)."""
    return {"until": list(fmt.stop), **GREEDY, "max_gen_toks": fmt.max_gen_toks}


def effective(fmt) -> dict:
    """The whole decoding of a generation task, as show-prompt prints it."""
    return {**GREEDY, "max_new_tokens": fmt.max_gen_toks, "stop": list(fmt.stop) + ["<the tokenizer's EOS>"],
            "model_generation_config": "ignored: " + ", ".join(NEUTRAL_FIELDS[:6]) + ", ... stay neutral"}
