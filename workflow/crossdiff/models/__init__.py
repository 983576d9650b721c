"""Stage 7, models: the tiny local base model of the embedded default (tokenizer + warmed-up Llama).
Writes ``results/models/{model}/``. CLI: ``build-base-model`` (``register-models`` lives in :mod:`crossdiff.slugs`).
"""
