"""Per-epoch time of ``py-irt-compatible`` against real py-irt, measured in the same run.

For each size (models x items) and missing fraction it simulates one 1PL matrix (theta, b ~ N(0, 1),
fixed seed) and, alternating engines ``--repeats`` times on the same machine:

* py-irt (``crossdiff.irt.pyirt_engine``): per-epoch time = time from the start of the first to the
  end of the last ``SVI.step`` divided by the epochs (so jsonlines / Dataset setup is excluded, while
  py-irt's own per-epoch work after the step -- best-params export, scheduler -- is included);
  ``--pyirt-epochs`` epochs (default: all of ``--epochs``; use fewer at large sizes);
* py-irt-compatible (``crossdiff.irt.compat``): per-epoch time = (wall(E) - wall(1)) / (E - 1);
  optionally the same for a baseline file (``--baseline path/to/old/compat.py``).

It prints the median per-epoch times, their ratio, the full-run wall times, and the max abs
difference between compat and py-irt (difficulty and ability, same seed and epoch count).
Timings on a shared machine are noisy: compare ratios from the same run only.

Usage: python benchmarks/compat_profile.py [--sizes 500x1000,2000x4000] [--epochs 2000]
       [--pyirt-epochs 2000,100] [--repeats 3] [--threads 2] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def simulate(M: int, N: int, missing: float, seed: int = 20240601):
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    Y = (rng.random((M, N), dtype=np.float32) < 1 / (1 + np.exp(-(theta[:, None] - b[None, :])))).astype(np.uint8)
    observed = rng.random((M, N), dtype=np.float32) >= missing
    return Y, observed


def time_pyirt(Y, observed, settings):
    """(result, per-epoch seconds over the SVI loop, wall seconds)."""
    import pyro.infer

    from crossdiff.irt import pyirt_engine

    stamps = []
    step = pyro.infer.SVI.step

    def timed_step(self, *args, **kwargs):
        stamps.append(time.perf_counter())
        return step(self, *args, **kwargs)

    pyro.infer.SVI.step = timed_step
    try:
        start = time.perf_counter()
        result = pyirt_engine.fit(Y, observed, settings)
        wall = time.perf_counter() - start
    finally:
        pyro.infer.SVI.step = step
    # the loop runs from the first step to the end of training (last step + its export/scheduler)
    per_epoch = (start + wall - stamps[0]) / len(stamps)
    return result, per_epoch, wall


def time_compat(module, Y, observed, settings):
    """(result, per-epoch seconds, wall seconds): setup removed by a 1-epoch run."""
    from dataclasses import replace

    start = time.perf_counter()
    module.fit(Y, observed, replace(settings, epochs=1))
    one = time.perf_counter() - start
    start = time.perf_counter()
    result = module.fit(Y, observed, settings)
    wall = time.perf_counter() - start
    return result, (wall - one) / max(settings.epochs - 1, 1), wall


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500x1000,2000x4000")
    ap.add_argument("--missing", default="0,0.3")
    ap.add_argument("--epochs", type=int, default=2000, help="compat epochs")
    ap.add_argument("--pyirt-epochs", default=None,
                    help="py-irt epochs per size, comma-separated (default: --epochs for every size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: min(2, cores))")
    ap.add_argument("--model", default="1pl")
    ap.add_argument("--baseline", default=None, help="another compat.py to time alongside (e.g. the previous version)")
    ap.add_argument("--no-pyirt", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from crossdiff.irt import compat
    from crossdiff.irt.base import IrtSettings

    baseline = load(args.baseline, "compat_baseline") if args.baseline else None
    sizes = args.sizes.split(",")
    py_epochs = [int(e) for e in args.pyirt_epochs.split(",")] if args.pyirt_epochs else [args.epochs] * len(sizes)
    print(f"torch {torch.__version__}, threads {args.threads or 'engine defaults'}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.2f}")
    for size, pe in zip(sizes, py_epochs):
        M, N = map(int, size.split("x"))
        for missing in map(float, args.missing.split(",")):
            Y, observed = simulate(M, N, missing)
            times = {"py-irt": [], "compat": [], "baseline": []}
            walls = {"py-irt": [], "compat": [], "baseline": []}
            diff = None
            for _ in range(args.repeats):
                s = IrtSettings(model=args.model, epochs=args.epochs, seed=0, threads=args.threads)
                ours, per, wall = time_compat(compat, Y, observed, s)
                times["compat"].append(per)
                walls["compat"].append(wall)
                if baseline is not None:
                    _, per, wall = time_compat(baseline, Y, observed, s)
                    times["baseline"].append(per)
                    walls["baseline"].append(wall)
                if not args.no_pyirt:
                    sp = IrtSettings(model=args.model, epochs=pe, seed=0, threads=args.threads)
                    ref, per, wall = time_pyirt(Y, observed, sp)
                    times["py-irt"].append(per)
                    walls["py-irt"].append(wall)
                    if diff is None:
                        same = ours if pe == args.epochs else compat.fit(Y, observed, sp)
                        diff = max(np.abs(same.difficulty - ref.difficulty).max(),
                                   np.abs(same.ability - ref.ability).max())
            med = {k: statistics.median(v) for k, v in times.items() if v}
            line = f"{size} missing {missing:g}: compat {med['compat'] * 1e3:.3f} ms/epoch"
            line += f" (wall {statistics.median(walls['compat']):.2f} s / {args.epochs} epochs)"
            if "baseline" in med:
                slower = med["baseline"] / med["compat"]
                line += f"; baseline {med['baseline'] * 1e3:.3f} ms/epoch ({slower:.1f}x slower)"
            if "py-irt" in med:
                line += (f"; py-irt {med['py-irt'] * 1e3:.2f} ms/epoch (wall {statistics.median(walls['py-irt']):.1f} s"
                         f" / {pe} epochs); compat {med['py-irt'] / med['compat']:.1f}x faster per epoch")
                if "baseline" in med:
                    line += f", baseline {med['py-irt'] / med['baseline']:.1f}x"
                line += f"; max |compat - py-irt| = {diff:.2e} ({pe} epochs)"
            print(line, flush=True)
            print("   per-epoch samples (ms): " + "; ".join(
                f"{k} " + ", ".join(f"{t * 1e3:.3f}" for t in v) for k, v in times.items() if v), flush=True)


if __name__ == "__main__":
    sys.exit(main())
