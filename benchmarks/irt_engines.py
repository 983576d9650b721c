"""Benchmark the IRT engines and models on identical simulated response matrices, in one run.

Speed table (default ``--sizes 5000x12000 --missing 0.3``): one matrix simulated from a 1PL (theta, b ~
N(0, 1), fixed seed, a share of cells unobserved) is fitted by every engine and model:

* ``fast``: 1pl, 2pl (``crossdiff.irt.fast``), 3pl, 4pl, 4pl-standard (``crossdiff.irt.asymptote``);
* ``girth`` (0.8.0, when installed; not a project dependency): ``rasch_mml`` (1pl), ``twopl_mml`` (2pl),
  ``threepl_mml`` (3pl); it has no 4PL. girth's MML is not a joint fit (item parameters under a fixed
  N(0, 1) ability distribution);
* ``py-irt`` (the library, 1pl/2pl/3pl/4pl, its default 2000 SVI epochs) and ``py-irt-compatible``
  (1pl/2pl). Above ``--pyirt-full-max`` cells py-irt runs ``--pyirt-epochs`` epochs and its 2000-epoch time
  is extrapolated (setup + 2000 x per-epoch time); its rho is then n/a. ``--engines`` chooses.

Recovery table (``--recovery 2000x1000``): for each model a matrix simulated from that model (log a ~
N(0, 0.3); 3pl floors U(0, 0.3); 4pl ceilings U(0.7, 1); 4pl-standard floors U(0, 0.25) and ceilings
U(0.85, 1)), fitted by every engine that has the model.

Each fit runs in its own subprocess: "peak MB" is the child's peak RSS minus its RSS just before the fit
(after imports and simulation; the kernel's peak mark is reset there); "wall s" is the fit call alone. "x girth" is girth's time on the same
matrix and model over this row's (measured in this run); "x 1pl" the row's time over the fast 1PL's.
girth runs stop after ``--girth-timeout`` seconds (then ">" lower bounds).

Physical floor (fast rows): bytes a sweep must read (the 1PL: the 1-byte cell codes of the C kernel, 4 B
of float32 mask on the torch path; the 2PL: float32 mask and responses, 8 B; 3PL/4PL: the cell codes, two
passes per sweep, plus the 1PL start) x sweeps / memory bandwidth, the bandwidth measured by a numpy copy
of 512 MB (bytes read + written / time). The fits are compute-bound (an exp per cell, 3PL/4PL also a log),
so the floor shows how far from memory speed they are, not a reachable target.

Usage: python benchmarks/irt_engines.py [--sizes 5000x12000] [--recovery 2000x1000] [--engines ...]
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

MODELS = ["1pl", "2pl", "3pl", "4pl", "4pl-standard"]
ENGINES = ["fast", "girth", "py-irt", "py-irt-compatible"]
HAS = {"fast": set(MODELS), "girth": {"1pl", "2pl", "3pl"}, "py-irt": {"1pl", "2pl", "3pl", "4pl"},
       "py-irt-compatible": {"1pl", "2pl"}}
GIRTH = {"1pl": "rasch_mml", "2pl": "twopl_mml", "3pl": "threepl_mml"}


def simulate(M: int, N: int, missing: float, model: str = "1pl", seed: int = 20240601):
    """Responses from ``model``: theta, b ~ N(0, 1); a seeded ``missing`` share of cells unobserved.

    1pl: the matrix of earlier runs of this benchmark (same seed and draws)."""
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    if model == "1pl":
        x = theta[:, None] - b[None, :]
        Y = (rng.random((M, N), dtype=np.float32) < 1 / (1 + np.exp(-x))).astype(np.uint8)
    else:
        a = np.exp(rng.normal(0, 0.3, N))
        c, d = np.zeros(N), np.ones(N)
        if model == "3pl":
            c = rng.uniform(0, 0.3, N)
        elif model == "4pl":
            d = rng.uniform(0.7, 1.0, N)
        elif model == "4pl-standard":
            c, d = rng.uniform(0, 0.25, N), rng.uniform(0.85, 1.0, N)
        p = c + (d - c) / (1 + np.exp(-a * (theta[:, None] - b[None, :])))
        Y = (rng.random((M, N), dtype=np.float32) < p).astype(np.uint8)
    observed = rng.random((M, N), dtype=np.float32) >= missing
    return Y, observed, theta, b


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so that the simulation's peak does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else the process's lifetime peak (ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(engine: str, model: str, gen: str, M: int, N: int, missing: float, epochs: int, out: str) -> None:
    """Child process: fit one engine and model, write difficulty estimates and a JSON record to ``out``."""
    from crossdiff.irt.base import IrtSettings

    Y, observed, _, _ = simulate(M, N, missing, gen)
    record = {"epochs": epochs}
    if engine == "girth":
        import girth

        data = girth.tag_missing_data(np.where(observed.T, Y.T, -1).astype(int), [0, 1]) if missing else Y.T
        del Y, observed
        _reset_peak()
        base = _rss_mb()
        start = time.perf_counter()
        difficulty = np.asarray(getattr(girth, GIRTH[model])(data)["Difficulty"])
    else:
        import py_irt.training  # noqa: F401  (imports are not part of the timed fit)
        import torch  # noqa: F401

        from crossdiff.irt import engines, pyirt_engine

        settings = IrtSettings(engine=engine, model=model, epochs=epochs, seed=0)
        if engine == "py-irt" and epochs < 2000:
            from py_irt.dataset import Dataset

            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                pyirt_engine._to_jsonlines(Y, observed, os.path.join(tmp, "r.jsonlines"))
                Dataset.from_jsonlines(os.path.join(tmp, "r.jsonlines"))
                record["setup_s"] = time.perf_counter() - start
        if engine == "fast" and model not in ("1pl", "2pl"):
            from crossdiff.irt import cells

            cells.load_kernel()  # a first compile is not part of the fit (it is cached across runs)
        _reset_peak()
        base = _rss_mb()
        start = time.perf_counter()
        result = engines.fit_engine(Y, observed, settings)
        difficulty = result.difficulty
        info = result.info
        record.update(iterations=info.get("iterations"), converged=info.get("converged"),
                      criterion=info.get("criterion"), kernel=info.get("kernel"))
    record["wall_s"] = time.perf_counter() - start
    record["peak_mb"] = _peak_mb() - base
    np.save(out + ".npy", difficulty)
    with open(out + ".json", "w") as fh:
        json.dump(record, fh)


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0])


def bandwidth_gbs() -> float:
    """Memory bandwidth of a numpy copy of 512 MB: bytes read + written per second (best of 3)."""
    src = np.ones(1 << 27, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def floor_s(model: str, rec: dict, M: int, N: int, gbs: float) -> float | None:
    """Bytes a sweep must read x sweeps / bandwidth (see the module docstring)."""
    sweeps = rec.get("iterations")
    if not sweeps:
        return None
    c_kernel = rec.get("kernel") == "C"
    per_cell = {"1pl": 1 if c_kernel else 4, "2pl": 8}.get(model, 2)  # 3pl/4pl: 1-byte codes, two passes a sweep
    extra = 0
    if model not in ("1pl", "2pl"):  # the fast 1PL fit it starts from (about 9 sweeps)
        extra = (1 if c_kernel else 4) * M * N * 9
    return (per_cell * M * N * sweeps + extra) / (gbs * 1e9)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000x12000", help="speed table sizes (models x items), comma-separated")
    ap.add_argument("--missing", type=float, default=0.3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--recovery", default="2000x1000", help="recovery table size ('' skips it)")
    ap.add_argument("--recovery-missing", type=float, default=0.3)
    ap.add_argument("--pyirt-full-max", type=float, default=8.0e6, help="max cells for a full 2000-epoch py-irt run")
    ap.add_argument("--pyirt-epochs", type=int, default=10, help="py-irt epochs above --pyirt-full-max")
    ap.add_argument("--girth-timeout", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 500x1000 and 300x200, py-irt at 200 epochs")
    ap.add_argument("--one", nargs=7, metavar=("ENGINE", "MODEL", "GEN", "M", "N", "MISSING", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        engine, model, gen, M, N, missing, out = args.one
        run_one(engine, model, gen, int(M), int(N), float(missing), int(os.environ.get("BENCH_EPOCHS", "2000")), out)
        return
    if args.quick:
        args.sizes, args.recovery = "500x1000", "300x200"
    models = args.models.split(",")
    engines = args.engines.split(",")
    if "girth" in engines:
        try:
            import girth  # noqa: F401
        except ImportError:
            print("girth not installed: skipping it", file=sys.stderr)
            engines.remove("girth")
    gbs = bandwidth_gbs()
    print(f"memory bandwidth (numpy copy, read + write): {gbs:.1f} GB/s; cores: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="irt-bench-") as tmp:
        for title, sizes, missing, own in (("speed", args.sizes.split(","), args.missing, False),
                                            ("recovery", [s for s in args.recovery.split(",") if s], args.recovery_missing, True)):
            if not sizes:
                continue
            print(f"\n## {title}: {'each model on its own simulated data' if own else 'one 1PL-simulated matrix'}, "
                  f"{missing:g} missing\n", flush=True)
            header = ["size", "model", "engine", "wall s", "peak MB", "rho truth", "x girth", "x 1pl", "sweeps", "floor s", "note"]
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
            for size in sizes:
                M, N = map(int, size.split("x"))
                t_1pl = None
                for model in models:
                    gen = model if own else "1pl"
                    b_true = simulate(M, N, missing, gen)[3]
                    t_girth = None
                    for engine in [e for e in ("girth", *[e for e in engines if e != "girth"]) if e in engines]:
                        if model not in HAS[engine]:
                            continue
                        epochs = 200 if args.quick else 2000
                        if engine == "py-irt" and not args.quick and M * N > args.pyirt_full_max:
                            epochs = args.pyirt_epochs
                        out = os.path.join(tmp, f"{engine}-{model}-{gen}-{size}")
                        env = dict(os.environ, BENCH_EPOCHS=str(epochs))
                        cmd = [sys.executable, __file__, "--one", engine, model, gen, str(M), str(N), str(missing), out]
                        timeout = args.girth_timeout if engine == "girth" else None
                        try:
                            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
                        except subprocess.TimeoutExpired:
                            t_girth = float("inf")
                            print(f"| {size} | {model} | girth {GIRTH[model]} | > {timeout:.0f} | | | | | | | stopped at the timeout |",
                                  flush=True)
                            continue
                        if proc.returncode != 0:
                            last = proc.stderr.strip().splitlines()[-1:]
                            why = last[0] if last else f"no message: the process died (exit code {proc.returncode})"
                            print(f"| {size} | {model} | {engine} | failed: {why} |", flush=True)
                            continue
                        rec = json.load(open(out + ".json"))
                        est = np.load(out + ".npy")
                        wall, note = rec["wall_s"], ""
                        if engine == "py-irt" and epochs < 2000 and not args.quick:
                            wall = rec["setup_s"] + 2000 * (rec["wall_s"] - rec["setup_s"]) / epochs
                            note = f"extrapolated from {epochs} epochs ({rec['wall_s']:.1f} s)"
                        elif engine in ("py-irt", "py-irt-compatible"):
                            note = f"{epochs} epochs"
                        elif engine == "fast":
                            note = f"converged {rec.get('converged')}, criterion {rec.get('criterion'):.2g}"
                            if rec.get("kernel"):
                                note += f", kernel {rec['kernel']}"
                        rho = "n/a" if "extrapolated" in note else f"{spearman(est, b_true):.4f}"
                        if engine == "girth":
                            t_girth = wall
                            name = f"girth {GIRTH[model]}"
                        else:
                            name = engine
                        if engine == "fast" and model == "1pl":
                            t_1pl = wall
                        x_girth = ""
                        if engine != "girth" and t_girth:
                            x_girth = f"> {args.girth_timeout / wall:.0f}x" if t_girth == float("inf") else f"{t_girth / wall:.1f}x"
                        x_1pl = f"{wall / t_1pl:.1f}x" if t_1pl and engine == "fast" else ""
                        fl = floor_s(model, rec, M, N, gbs) if engine == "fast" else None
                        sweeps = rec.get("iterations") if engine == "fast" else ""
                        print(f"| {size} | {model} | {name} | {wall:.2f} | {rec['peak_mb']:.0f} | {rho} | {x_girth} | "
                              f"{x_1pl} | {sweeps} | {'' if fl is None else f'{fl:.3f}'} | {note} |", flush=True)


if __name__ == "__main__":
    main()
