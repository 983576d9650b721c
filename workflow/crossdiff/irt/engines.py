"""Dispatch to an IRT engine by name."""

from __future__ import annotations

import importlib

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings

ENGINES = {
    "fast": "crossdiff.irt.fast",
    "py-irt-compatible": "crossdiff.irt.compat",
    "py-irt": "crossdiff.irt.pyirt_engine",
}


def fit_engine(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    if settings.engine not in ENGINES:
        raise ValueError(f"unknown IRT engine '{settings.engine}'; expected one of {', '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[settings.engine])
    return module.fit(Y, observed, settings, progress=progress)
