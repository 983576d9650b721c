"""Stage 3, irt: an IRT fit (1PL, 2PL, 3PL, 4PL or the standard 4PL) of each dataset's response matrix.
Reads ``results/responses/{dataset}.parquet`` (and, for the floor prior of the fast 3pl / 4pl-standard,
the item table's options counts); writes ``results/irt/{dataset}/`` (items.parquet, models.parquet,
heldout.parquet, fit.json). CLI: ``fit-irt``.

IRT engines behind one function: :func:`crossdiff.irt.engines.fit_engine`.

Engines:
- ``fast``: converged MAP on the dense masked matrix (default): :mod:`crossdiff.irt.fast` (1PL/2PL) and
  :mod:`crossdiff.irt.asymptote` (3PL/4PL/4pl-standard, passes in :mod:`crossdiff.irt.cells`).
- ``py-irt-compatible``: reproduces py-irt's default SVI output for a seed, much faster (1PL/2PL).
- ``py-irt``: the py-irt library itself, the reference (1PL/2PL/3PL/4PL).
"""
