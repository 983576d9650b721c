"""3PL / 4PL / standard 4PL parameter recovery on simulated data, and the ``fast`` engine against py-irt.

For each model it simulates a models x items matrix from known parameters (theta, b ~ N(0, 1),
log a ~ N(0, 0.3); 3PL guessing floor ~ U(0, 0.3), 4PL upper asymptote ~ U(0.7, 1); 4pl-standard floor
~ U(0, 0.25) and ceiling ~ U(0.85, 1)) and fits it with ``fast`` (crossdiff.irt.asymptote) and, unless
``--no-pyirt``, with py-irt's own 3PL/4PL (``engine: py-irt``, its default 2000 epochs unless
``--epochs``; py-irt has no standard 4PL). It prints Spearman of each fit's b and asymptote with the
truth, Spearman between the engines' b, and the wall times. benchmarks/irt_engines.py has the speed
table and the recovery of every model in one run.

Usage: python benchmarks/irt_asymptote_recovery.py [--size 2000x1000] [--models 3pl,4pl,4pl-standard] [--no-pyirt]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from crossdiff.irt.base import IrtSettings, asymptotes  # noqa: E402
from crossdiff.irt.engines import fit_engine  # noqa: E402


def simulate(model: str, M: int, N: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    theta, b, a = rng.normal(size=M), rng.normal(size=N), np.exp(rng.normal(0, 0.3, size=N))
    if model == "4pl-standard":
        lam, ceiling = rng.uniform(0, 0.25, N), rng.uniform(0.85, 1.0, N)
    else:
        lam, ceiling = (rng.uniform(0, 0.3, N) if model == "3pl" else rng.uniform(0.7, 1.0, N)), None
    p = asymptotes(1 / (1 + np.exp(-a * (theta[:, None] - b))), lam, model, lam, ceiling)
    Y = (rng.random((M, N)) < p).astype(np.uint8)
    return Y, np.ones_like(Y, dtype=bool), {"theta": theta, "b": b, "a": a, "lambdas": lam}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2000x1000")
    ap.add_argument("--models", default="3pl,4pl")
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--no-pyirt", action="store_true")
    ap.add_argument("--max-iter", type=int, default=200, help="fast: irt.max_iter (sweeps)")
    args = ap.parse_args()
    M, N = map(int, args.size.split("x"))
    for model in args.models.split(","):
        Y, observed, truth = simulate(model, M, N)
        row = {"model": model, "size": args.size}
        fits = {}
        for engine in ["fast"] + ([] if args.no_pyirt or model == "4pl-standard" else ["py-irt"]):
            t = time.perf_counter()
            r = fit_engine(Y, observed, IrtSettings(engine=engine, model=model, epochs=args.epochs,
                                                                max_iter=args.max_iter))
            fits[engine] = r
            row[f"{engine}_s"] = round(time.perf_counter() - t, 1)
            row[f"{engine}_spearman_b_truth"] = round(float(spearmanr(r.difficulty, truth["b"]).statistic), 4)
            floor = r.guess if model == "4pl-standard" else r.lambdas
            row[f"{engine}_spearman_lambdas_truth"] = round(float(spearmanr(floor, truth["lambdas"]).statistic), 4)
            if engine == "fast":
                row["fast_converged"] = r.info["converged"]
                row["fast_sweeps"] = r.info["iterations"]
        if "py-irt" in fits:
            row["spearman_b_fast_vs_pyirt"] = round(float(spearmanr(fits["fast"].difficulty, fits["py-irt"].difficulty).statistic), 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
