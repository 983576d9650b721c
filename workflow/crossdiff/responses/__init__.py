"""Response matrices: per-example correctness of many models on a benchmark.

Canonical form (one parquet per dataset): a long table ``model_id`` (str), ``item_id`` (str),
``correct`` (int8, 0/1). A missing response is an absent row.
"""
