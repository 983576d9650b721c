"""Run the demo DAG N times in fresh directories and print the spread of its headline numbers.

    python benchmarks/demo_spread.py [--runs 2] [--cores 2] [--config config/config.yaml]
                                     [--no-stability] [--env KEY=VALUE ...] [--keep DIR]

Each run is a fresh working directory (a copy of the config as ``config/config.yaml``, nothing else)
running ``snakemake --cores N`` with this checkout's Snakefile. Per run: the wall time, the summary's
slope of gain on |gap| (with its interval), the asymmetry (easy-to-hard minus hard-to-easy), the near
and far gains and how many test bins have their best train bin within ``near_gap`` of them; then the
spread (min..max) over the runs, and, for every stage output, whether all runs wrote the same content
(so a difference is traced to the first stage that differs: items, responses, IRT, bins, base model,
fine-tuned weights, evaluation samples, tables). ``--no-stability`` drops the bin-stability replicate
fits (a py-irt fit; they feed only the stability table, not the numbers above). ``--env`` sets variables
for every run, e.g. ``--env ATEN_CPU_CAPABILITY=avx2 --env MKL_CBWR=AVX2`` to compare instruction sets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# stage outputs compared across runs (globs under results/); JSON keys that hold wall times are ignored
STAGES = [
    ("items", "items/*.parquet"),
    ("responses", "responses/*.parquet"),
    ("irt", "irt/*/items.parquet"),
    ("bins", "bins/*/bins.parquet"),
    ("base model", "models/*/model.safetensors"),
    ("base tokenizer", "models/*/tokenizer.json"),
    ("fine-tuned weights", "finetune/*/*/*/model.safetensors"),
    ("evaluation samples", "eval/*/*/*/*.samples.jsonl"),
    ("evaluation scores", "eval/*/*/*/bin*.json"),
    ("results table", "tables/results.csv"),
    ("summary", "tables/summary.csv"),
    ("best train bin", "tables/best_train_bin.csv"),
]
TIMING_KEYS = {"wall_seconds", "seconds", "runtime_s", "eval_seconds", "started", "finished", "date", "time",
               "model_load_seconds", "tokens_per_second", "warmup_seconds", "zero_shot_eval_seconds"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS and "seconds" not in k}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def content_hash(path: Path) -> str:
    """sha256 of what a file says: parquet by its rows, JSON without wall times, other files by bytes."""
    if path.suffix == ".parquet":
        import polars as pl

        data = pl.read_parquet(path).write_csv().encode()
    elif path.suffix == ".json":
        data = json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def stage_hashes(results: Path) -> dict[str, str]:
    out = {}
    for name, pattern in STAGES:
        files = sorted(results.glob(pattern))
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.relative_to(results)).encode())
            h.update(content_hash(f).encode())
        out[name] = f"{len(files)} file(s) {h.hexdigest()[:12]}" if files else "absent"
    return out


def headline(results: Path) -> dict:
    import polars as pl

    s = pl.read_csv(results / "tables/summary.csv").row(0, named=True)
    return {k: s.get(k) for k in ("slope", "slope_lo", "slope_hi", "asymmetry", "asymmetry_lo", "asymmetry_hi",
                                  "near_gain", "far_gain", "best_within_near_gap", "n_test_bins")}


def run_once(i: int, args, base: Path, env: dict) -> dict:
    import yaml

    wd = base / f"run{i}"
    (wd / "config").mkdir(parents=True)
    config = yaml.safe_load(Path(args.config).read_text())
    if args.no_stability:
        config.setdefault("irt", {})["stability"] = {"seeds": [], "engines": []}
    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(wd),
           "--cores", str(args.cores)]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"run {i} failed ({wd}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    row = {"run": i, "wall_s": round(wall), **headline(wd / "results"), "stages": stage_hashes(wd / "results")}
    print(f"run {i}: {wall:.0f} s, slope {row['slope']:+.4f} [{row['slope_lo']:+.4f}, {row['slope_hi']:+.4f}], "
          f"asymmetry {row['asymmetry']:+.4f}, near {row['near_gain']:+.4f} far {row['far_gain']:+.4f}, best train bin "
          f"within reach for {row['best_within_near_gap']} of {row['n_test_bins']}", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--config", default=str(REPO / "config/config.yaml"))
    p.add_argument("--no-stability", action="store_true", help="skip the bin-stability replicate fits")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for every run")
    p.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(dict(kv.split("=", 1) for kv in args.env))
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crossdiff-demo-spread-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"{args.runs} run(s) of {args.config} in {base}, --cores {args.cores}, {os.cpu_count()} CPU(s)"
          + (f", env {' '.join(args.env)}" if args.env else ""), flush=True)
    try:
        rows = [run_once(i, args, base, env) for i in range(1, args.runs + 1)]
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("\n| run | wall s | slope [CI] | asymmetry [CI] | near | far | best within reach |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['wall_s']} | {r['slope']:+.3f} [{r['slope_lo']:+.3f}, {r['slope_hi']:+.3f}] | "
              f"{r['asymmetry']:+.3f} [{r['asymmetry_lo']:+.3f}, {r['asymmetry_hi']:+.3f}] | {r['near_gain']:+.3f} | "
              f"{r['far_gain']:+.3f} | {r['best_within_near_gap']} of {r['n_test_bins']} |")
    for key in ("slope", "asymmetry", "near_gain", "far_gain", "best_within_near_gap"):
        vals = [r[key] for r in rows]
        print(f"{key}: min {min(vals):+.4f} max {max(vals):+.4f} spread {max(vals) - min(vals):.4f}")
    print("\nstage outputs identical in every run:")
    for name, _ in STAGES:
        seen = {r["stages"][name] for r in rows}
        print(f"  {name:20s} {'yes' if len(seen) == 1 else 'NO'}  ({' | '.join(sorted(seen))})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
