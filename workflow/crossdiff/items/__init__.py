"""Stage 1, items: where a benchmark's items come from (the generated benchmark, a local file, one adapter per
real benchmark). Writes ``results/items/{dataset}.parquet``. CLI: ``prepare-items``.
"""
