"""How long Snakemake takes to plan the paper's DAG, against a plain DAG of the same size.

Times ``snakemake -n --configfile config/paper.yaml`` (the paper's 1,084 jobs, planned offline with
HF_HUB_OFFLINE=1 in an empty temp workdir) and, in the same run, a generated plain Snakefile with
the same number of jobs: N-1 instances of one rule with one wildcard, each writing one file, all
feeding one ``all`` rule. Best of ``--repeat`` runs each (wall clock of the whole process: start-up,
parsing, DAG building and the dry run's per-job printing). Prints both times, jobs/s and their ratio.

The plain DAG is Snakemake's floor on this machine: what planning that many jobs costs with no
input functions, no params and one candidate rule per file.

Usage: python benchmarks/dag_planning.py [--configfile config/paper.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = """\
N = {n}


rule all:
    input:
        expand("out/{{i}}.txt", i=range(N)),


rule one:
    output:
        "out/{{i}}.txt",
    shell:
        "touch {{output}}"
"""


def snakemake_bin() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    return str(exe) if exe.exists() else shutil.which("snakemake") or "snakemake"


def dry_run(args: list[str]) -> tuple[float, int, str]:
    """One dry run in a fresh empty workdir: (wall seconds, planned jobs, output)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="dag-planning-") as wd:
        t0 = time.perf_counter()
        proc = subprocess.run([snakemake_bin(), "-n", "--directory", wd, *args], cwd=REPO, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed (exit {proc.returncode}):\n{out[-3000:]}")
    m = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    return wall, int(m.group(1)) if m else 0, out


def best_of(args: list[str], repeat: int) -> tuple[float, int]:
    runs = [dry_run(args) for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", default="config/paper.yaml")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)

    study_s, n_jobs = best_of(["--configfile", a.configfile, "-s", str(REPO / "Snakefile")], a.repeat)
    with tempfile.TemporaryDirectory(prefix="dag-plain-") as d:
        plain = Path(d) / "Snakefile"
        plain.write_text(PLAIN.format(n=n_jobs - 1))  # + the `all` job = n_jobs
        plain_s, plain_jobs = best_of(["-s", str(plain)], a.repeat)

    print(f"{'DAG':<32} {'jobs':>6} {'best s':>8} {'jobs/s':>8}")
    print(f"{a.configfile:<32} {n_jobs:>6} {study_s:>8.2f} {n_jobs / study_s:>8.0f}")
    print(f"{'plain (one wildcard rule)':<32} {plain_jobs:>6} {plain_s:>8.2f} {plain_jobs / plain_s:>8.0f}")
    print(f"ratio {a.configfile} / plain: {study_s / plain_s:.2f}x  (best of {a.repeat}, "
          f"{os.cpu_count()} CPUs, snakemake -n in an empty temp workdir, HF_HUB_OFFLINE=1)")


if __name__ == "__main__":
    main()
