"""Where and how a job computes, shared by every stage that runs torch.

The device a ``device`` setting asks for (checked when the job starts, before any model loads: the
host that plans the DAG may be a CPU login node, so this is never a parse-time check).

Reproducible numbers: the same job, seed and machine give the same bytes, and the thread count never
depends on the machine's core count. A float reduction split over N threads adds in another order than
over M threads, so every ``crossdiff`` process takes its CPU threads from ``OMP_NUM_THREADS`` (each rule
sets it from its ``threads``), or ``DEFAULT_THREADS`` when that is unset (a command run by hand), never
from the cores it finds (``fixed_threads``, run by the CLI before torch or numpy load); jobs that run
torch on the CPU also switch on ``torch.use_deterministic_algorithms`` (``deterministic_torch``). The
tokenizers library's own thread pool is off (``TOKENIZERS_PARALLELISM=false``).

What still differs between machines is the instruction set: ATen's CPU kernels and MKL choose their
code path at run time (AVX-512 or AVX2; MKL also by CPU vendor), and the paths round differently:
measured on an AVX-512 AMD EPYC, ``ATEN_CPU_CAPABILITY=avx2`` or ``MKL_CBWR=COMPATIBLE`` each change the
tiny model's weights after 40 warm-up steps. To compare numbers across machines, export the same
``ATEN_CPU_CAPABILITY`` (e.g. ``avx2``) and ``MKL_CBWR`` (e.g. ``AVX2``) on all of them.
"""

from __future__ import annotations

import os

from crossdiff.errors import CrossdiffError

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_THREADS = 2  # the rules' default (resources.*.threads) and the IRT engines' cap


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def device_for(value, key: str) -> str:
    """The torch device for a ``device`` setting (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) on this host:
    ``auto`` is cuda when CUDA is available, else cpu; ``cuda`` on a host without CUDA is a CrossdiffError
    naming ``key`` (e.g. ``finetune.device``)."""
    v = "auto" if value is None else str(value)
    if v == "cpu":
        return "cpu"
    if v == "auto":
        return "cuda" if cuda_available() else "cpu"
    if v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()):
        if not cuda_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            why = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            raise CrossdiffError(f"{key} is {v!r} but this host has no CUDA device{why}: run the job on a GPU "
                                 f"node, or set {key}: auto (CUDA when there is one) or cpu")
        return v
    raise CrossdiffError(f"{key} is {value!r}; expected one of auto, cpu, cuda (or cuda:N)")


def require_device(value, key: str) -> None:
    """At the start of a job: stop at once when ``value`` asks for CUDA and this host has none (``auto``
    and ``cpu`` always run; torch is imported only for an explicit cuda)."""
    if value is not None and str(value) not in ("auto", "cpu"):
        device_for(value, key)


def job_threads() -> int:
    """CPU threads of this job: ``OMP_NUM_THREADS`` when it is a positive integer, else DEFAULT_THREADS."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else DEFAULT_THREADS


def fixed_threads() -> int:
    """Before torch, numpy or tokenizers load (the CLI calls it first): every thread pool of this process and
    of the processes it starts (accelerate's ranks) gets ``job_threads()`` threads, not the core count."""
    n = str(job_threads())
    os.environ["OMP_NUM_THREADS"] = n
    for var in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return int(n)


def deterministic_torch(device: str = "cpu") -> int:
    """At the start of a job that runs torch: ``job_threads()`` intra-op threads, and on the CPU
    deterministic algorithms (an op without a deterministic CPU kernel warns instead of failing). Returns
    the thread count."""
    import torch

    n = job_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if not str(device).startswith("cuda"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    return n
