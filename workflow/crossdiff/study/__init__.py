"""Stage 6, study: the designs (bins, train sets, sizes, seeds, curricula) and their training data.
Reads the item and bins tables; writes ``results/sft/{dataset}/{label}.jsonl``. CLI: ``make-sft-data``, ``make-train-set``.
"""
