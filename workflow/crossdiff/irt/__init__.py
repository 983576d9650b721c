"""IRT engines behind one function: :func:`crossdiff.irt.engines.fit_engine`.

Engines:
- ``fast``: converged MAP / mean-field optimum on the dense masked matrix (default).
- ``py-irt-compatible``: reproduces py-irt's default SVI output for a seed, much faster.
- ``py-irt``: the py-irt library itself, the reference.
"""
