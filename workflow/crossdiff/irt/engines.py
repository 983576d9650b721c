"""Dispatch to an IRT engine by name."""

from __future__ import annotations

import importlib

import numpy as np

from crossdiff.compute import require_device
from crossdiff.errors import CrossdiffError
from crossdiff.irt.base import EngineResult, IrtSettings

ENGINES = {
    "fast": "crossdiff.irt.fast",
    "py-irt-compatible": "crossdiff.irt.compat",
    "py-irt": "crossdiff.irt.pyirt_engine",
}


def fit_engine(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    require_device(settings.device, "irt.device")  # before any work (the planning host may have no GPU)
    if settings.engine not in ENGINES:
        raise CrossdiffError(f"irt.engine = {settings.engine!r}; expected one of {', '.join(ENGINES)}")
    name = ENGINES[settings.engine]
    if settings.engine == "fast" and settings.model in ("3pl", "4pl"):
        name = "crossdiff.irt.asymptote"  # the fast engine's 3PL/4PL (L-BFGS-B MAP)
    module = importlib.import_module(name)
    try:
        return module.fit(Y, observed, settings, progress=progress)
    except (ValueError, NotImplementedError) as exc:  # unsupported model/prior combinations, empty rows
        raise CrossdiffError(f"irt (engine {settings.engine}, model {settings.model}, priors {settings.priors}): {exc}") from exc
