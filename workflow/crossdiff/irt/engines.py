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


ASYMPTOTE_MODELS = ("3pl", "4pl", "4pl-standard")


def fit_engine(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False,
               n_options: np.ndarray | None = None) -> EngineResult:
    """Fit ``settings.model`` with ``settings.engine``. ``n_options`` (per item, NaN = unknown): the options
    count, which centres the standard 4PL's floor prior (other models ignore it)."""
    require_device(settings.device, "irt.device")  # before any work (the planning host may have no GPU)
    if settings.engine not in ENGINES:
        raise CrossdiffError(f"irt.engine = {settings.engine!r}; expected one of {', '.join(ENGINES)}")
    if settings.model == "4pl-standard" and settings.engine != "fast":
        raise CrossdiffError(f"irt.model: 4pl-standard (floor and ceiling per item) runs only with irt.engine: fast, "
                             f"not {settings.engine!r}: py-irt has no such model (its 4pl, irt.model: 4pl, has an upper "
                             "asymptote and no guessing floor)")
    name = ENGINES[settings.engine]
    kwargs = {}
    if settings.engine == "fast" and settings.model in ASYMPTOTE_MODELS:
        name = "crossdiff.irt.asymptote"  # the fast engine's 3PL/4PL/standard 4PL (projected Newton sweeps)
        kwargs["n_options"] = n_options
    module = importlib.import_module(name)
    try:
        return module.fit(Y, observed, settings, progress=progress, **kwargs)
    except (ValueError, NotImplementedError) as exc:  # unsupported model/prior combinations, empty rows
        raise CrossdiffError(f"irt (engine {settings.engine}, model {settings.model}, priors {settings.priors}): {exc}") from exc
