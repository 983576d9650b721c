"""Where and how a job computes, shared by every stage that runs torch: the device a ``device``
setting asks for (checked when the job starts, before any model loads: the host that plans the
DAG may be a CPU login node, so this is never a parse-time check).
"""

from __future__ import annotations

import os

from crossdiff.errors import CrossdiffError

DEVICES = ("auto", "cpu", "cuda")


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
