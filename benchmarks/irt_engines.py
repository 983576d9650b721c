"""Benchmark the IRT engines on identical simulated response matrices.

One run, one machine: for each size (models x items) and missing fraction (0 and 0.3) it simulates
a 1PL matrix from a fixed seed and fits it with py-irt (the library), ``py-irt-compatible``,
``fast`` and, when installed, girth's Rasch MML. Each fit runs in its own subprocess so that its
peak memory is its own: "peak MB" is the child's peak RSS (``ru_maxrss``) minus its RSS just
before the fit (after imports and data simulation).

py-irt runs its default 2000 epochs up to ``--pyirt-full-max`` cells; above that it runs
``--pyirt-epochs`` epochs and its 2000-epoch time is extrapolated as
setup + 2000 x (measured per-epoch time), where setup (jsonlines + py-irt's Dataset) is timed
separately; such rows are marked "extrapolated". Spearman figures against a short py-irt run would
not be like-for-like, so they are marked n/a for those rows.

Usage: python benchmarks/irt_engines.py [--sizes 500x1000,2000x4000,5000x12000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ENGINES = ["py-irt", "py-irt-compatible", "fast", "girth"]


def simulate(M: int, N: int, missing: float, seed: int = 20240601):
    """1PL responses: theta, b ~ N(0, 1); a seeded ``missing`` fraction of cells unobserved."""
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    Y = (rng.random((M, N), dtype=np.float32) < 1 / (1 + np.exp(-(theta[:, None] - b[None, :])))).astype(np.uint8)
    observed = rng.random((M, N), dtype=np.float32) >= missing
    return Y, observed, theta, b


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(engine: str, M: int, N: int, missing: float, epochs: int, out: str) -> None:
    """Child process: fit one engine, write difficulty estimates and a JSON record to ``out``."""
    from crossdiff.irt.base import IrtSettings

    Y, observed, _, _ = simulate(M, N, missing)
    record = {"epochs": epochs}
    if engine == "girth":
        import girth

        data = Y.T.astype(float)
        data = girth.tag_missing_data(np.where(observed.T, data, -1).astype(int), [0, 1]) if missing else Y.T
        base = _rss_mb()
        start = time.perf_counter()
        difficulty = np.asarray(girth.rasch_mml(data)["Difficulty"])
    else:
        import py_irt.training  # noqa: F401  (imports are not part of the timed fit)
        import torch  # noqa: F401

        from crossdiff.irt import compat, fast, pyirt_engine

        module = {"py-irt": pyirt_engine, "py-irt-compatible": compat, "fast": fast}[engine]
        settings = IrtSettings(engine=engine, epochs=epochs, seed=0)
        if engine == "py-irt" and epochs < 2000:
            from py_irt.dataset import Dataset

            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                pyirt_engine._to_jsonlines(Y, observed, os.path.join(tmp, "r.jsonlines"))
                Dataset.from_jsonlines(os.path.join(tmp, "r.jsonlines"))
                record["setup_s"] = time.perf_counter() - start
        base = _rss_mb()
        start = time.perf_counter()
        result = module.fit(Y, observed, settings)
        difficulty = result.difficulty
        record["iterations"] = result.info.get("iterations")
    record["wall_s"] = time.perf_counter() - start
    record["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    np.save(out + ".npy", difficulty)
    with open(out + ".json", "w") as fh:
        json.dump(record, fh)


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500x1000,2000x4000,5000x12000")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: only 500x1000, py-irt and py-irt-compatible at 200 epochs")
    ap.add_argument("--missing", default="0,0.3")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--pyirt-full-max", type=float, default=8.0e6, help="max cells for a full 2000-epoch py-irt run")
    ap.add_argument("--pyirt-epochs", type=int, default=10, help="py-irt epochs above --pyirt-full-max")
    ap.add_argument("--one", nargs=5, metavar=("ENGINE", "M", "N", "MISSING", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        engine, M, N, missing, out = args.one
        epochs = int(os.environ.get("BENCH_EPOCHS", "2000"))
        run_one(engine, int(M), int(N), float(missing), epochs, out)
        return
    sizes = ["500x1000"] if args.quick else args.sizes.split(",")
    engines = args.engines.split(",")
    if "girth" in engines:
        try:
            import girth  # noqa: F401
        except ImportError:
            print("girth not installed: skipping it", file=sys.stderr)
            engines.remove("girth")
    header = ["size", "missing", "engine", "wall s", "peak MB", "rho truth", "rho py-irt", "x faster than py-irt"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory(prefix="irt-bench-") as tmp:
        for size in sizes:
            M, N = map(int, size.split("x"))
            for missing in map(float, args.missing.split(",")):
                _, _, _, b_true = simulate(M, N, missing)
                ref_b, ref_s, ref_note = None, None, ""
                for engine in engines:
                    epochs = 200 if args.quick and engine in ("py-irt", "py-irt-compatible") else 2000
                    if engine == "py-irt" and not args.quick and M * N > args.pyirt_full_max:
                        epochs = args.pyirt_epochs
                    out = os.path.join(tmp, f"{engine}-{size}-{missing}")
                    env = dict(os.environ, BENCH_EPOCHS=str(epochs))
                    proc = subprocess.run([sys.executable, __file__, "--one", engine, str(M), str(N), str(missing), out],
                                          env=env, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"| {size} | {missing:g} | {engine} | failed: {proc.stderr.strip().splitlines()[-1:]} |")
                        continue
                    rec = json.load(open(out + ".json"))
                    est = np.load(out + ".npy")
                    wall, note = rec["wall_s"], ""
                    if engine == "py-irt":
                        if epochs < 2000 and not args.quick:
                            per_epoch = (wall - rec["setup_s"]) / epochs
                            wall = rec["setup_s"] + 2000 * per_epoch
                            note = f" (extrapolated from {epochs} epochs: {rec['wall_s']:.1f} s)"
                        elif epochs < 2000:
                            note = f" ({epochs} epochs)"
                        ref_b, ref_s, ref_note = est, wall, note
                    short = "extrapolated" in note
                    rho_true = "n/a" if short else f"{spearman(est, b_true):.4f}"
                    rho_ref = "n/a" if ref_b is None or "extrapolated" in ref_note else f"{spearman(est, ref_b):.4f}"
                    ratio = f"{ref_s / wall:.0f}x" if ref_s and engine != "py-irt" else ""
                    print(f"| {size} | {missing:g} | {engine}{note} | {wall:.2f} | {rec['peak_mb']:.0f} | "
                          f"{rho_true} | {rho_ref} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
