import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# scikit-learn's OpenMP (loaded by py-irt) beside torch's slows torch ~40x on 2 cores unless passive
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` (which holds its own config/config.yaml)."""
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def make_workdir(tmp_path: Path, config_text: str) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(config_text)
    return tmp_path


def crossdiff_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "crossdiff"), *args], capture_output=True, text=True)


__all__ = ["REPO", "snakemake", "make_workdir", "crossdiff_cli", "shutil"]
