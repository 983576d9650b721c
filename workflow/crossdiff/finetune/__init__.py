"""Stage 8, finetune: TRL SFT of one model on one run's data (settings, launch, training, checkpoints and
resume, weight checks, memory plan). Reads ``results/sft/``; writes ``results/finetune/{model}/{dataset}/{run}/``.
CLI: ``finetune`` (:mod:`crossdiff.finetune.run`).
"""
