"""Stage 5, prompts: the prompt format of a dataset (training text, evaluation request, stop strings), its
lm-eval filters and scoring, math equivalence, and ``show-prompt``. Used by study, models, finetune and
evaluate; writes no stage output of its own. CLI: ``show-prompt``.
"""
