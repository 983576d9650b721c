"""Stage 4, bins: equal-size difficulty bins, the held-out split, other difficulty measures, bin stability
and agreement, the difficulty figures. Reads ``results/irt/{dataset}/items.parquet``; writes
``results/bins/{dataset}/`` and the difficulty figures. CLI: ``make-bins``, ``bin-stability``, ``bin-agreement``, ``plot-difficulty``, ``published-difficulty``.
"""
