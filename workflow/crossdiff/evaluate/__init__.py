"""Stage 9, evaluate: lm-eval tasks of each bin, scoring the base model and every checkpoint on every bin (hf
or vLLM backend), and the zero-shot and loss difficulty measures. Writes ``results/tasks/``, ``results/eval/{model}/{dataset}/``
and the measures ``results/bins/{dataset}/{zero_shot,loss}_measure.parquet``. CLI: ``make-task``, ``evaluate``,
``zero-shot-measure``, ``loss-measure``.
"""
