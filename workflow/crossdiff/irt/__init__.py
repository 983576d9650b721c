"""Stage 3, irt: a 1PL/2PL fit of each dataset's response matrix. Reads ``results/responses/{dataset}.parquet``;
writes ``results/irt/{dataset}/`` (items.parquet, models.parquet, fit.json). CLI: ``fit-irt``.

IRT engines behind one function: :func:`crossdiff.irt.engines.fit_engine`.

Engines:
- ``fast``: converged MAP / mean-field optimum on the dense masked matrix (default).
- ``py-irt-compatible``: reproduces py-irt's default SVI output for a seed, much faster.
- ``py-irt``: the py-irt library itself, the reference.
"""
