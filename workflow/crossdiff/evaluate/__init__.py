"""Stage 9, evaluate: lm-eval tasks of each bin, scoring the base model and every checkpoint on every bin (hf
or vLLM backend), and the zero-shot difficulty measure. Writes ``results/tasks/``, ``results/eval/{model}/{dataset}/``
and the measure ``results/bins/{dataset}/zero_shot_measure.parquet``. CLI: ``make-task``, ``evaluate``, ``zero-shot-measure``.
"""
