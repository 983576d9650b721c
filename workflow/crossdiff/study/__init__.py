"""Stage 6, study: the designs (bins, train sets, sizes, seeds, curricula) and their training data.
Reads the item and bins tables; writes ``results/sft/{dataset}/{label}.jsonl`` (a model with its own
solutions: ``results/sft/{dataset}/solutions-{model}/{label}.jsonl``). CLI: ``make-sft-data``, ``make-train-set``,
``attach-solutions``.
"""
