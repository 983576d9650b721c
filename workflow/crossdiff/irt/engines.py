"""Dispatch to an IRT engine by name."""

from __future__ import annotations

import importlib

import numpy as np

from crossdiff.errors import CrossdiffError
from crossdiff.irt.base import EngineResult, IrtSettings

ENGINES = {
    "fast": "crossdiff.irt.fast",
    "py-irt-compatible": "crossdiff.irt.compat",
    "py-irt": "crossdiff.irt.pyirt_engine",
}


def fit_engine(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    if settings.engine not in ENGINES:
        raise CrossdiffError(f"irt.engine = {settings.engine!r}; expected one of {', '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[settings.engine])
    try:
        return module.fit(Y, observed, settings, progress=progress)
    except (ValueError, NotImplementedError) as exc:  # unsupported model/prior combinations, empty rows
        raise CrossdiffError(f"irt (engine {settings.engine}, model {settings.model}, priors {settings.priors}): {exc}") from exc
