"""Stage 10, results: the tidy table with gains and bootstrap intervals, heatmaps, gain vs gap, size x
difficulty, and the summary. Reads ``results/eval/``; writes ``results/tables/`` and ``results/figures/``.
CLI: ``aggregate``, ``plot-results``, ``size-difficulty``, ``summarize``, ``partial-results`` (``results/partial/``:
the same table, heatmaps and summary on whatever cells exist while the study runs).
"""
