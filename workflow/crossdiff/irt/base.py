"""What every IRT engine takes and returns.

Input: a dense response matrix ``Y`` (models x items, uint8 0/1) and a boolean ``observed`` mask of
the same shape; cells with ``observed == False`` are missing and are left out of the fit, never
imputed (their value in ``Y`` is ignored).

Model: P(correct) = sigmoid(discrimination_j * (ability_i - difficulty_j)); 1PL has discrimination 1.
3PL and 4PL as py-irt 0.7.1 parameterises them, with ``lambdas_j`` per item in [0, 1]:
3PL ``lambdas + (1 - lambdas) * sigmoid(...)`` (lambdas = guessing floor); 4PL ``lambdas * sigmoid(...)``
(lambdas = upper asymptote, i.e. 1 - slip; py-irt's 4PL has no guessing floor). The standard 4PL
(``4pl-standard``, Barton and Lord 1981): ``guess + (ceiling - guess) * sigmoid(...)``, a floor and a ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class IrtSettings:
    engine: str = "fast"  # fast | py-irt-compatible | py-irt
    model: str = "1pl"  # 1pl | 2pl | 3pl | 4pl | 4pl-standard
    priors: str = "vague"  # vague | hierarchical
    epochs: int = 2000  # py-irt / py-irt-compatible SVI steps
    lr: float = 0.1
    lr_decay: float = 0.9999
    seed: int = 42
    max_iter: int = 200  # fast engine: maximum Newton sweeps
    tol: float = 1e-6  # fast engine: 1PL/2PL max abs parameter change; 3PL/4PL: relative objective change per sweep
    gtol: float = 1e-3  # fast 3PL/4PL/4pl-standard: max Newton decrement (posterior sds) at convergence
    guess_prior: float = 0.25  # fast 3pl/4pl-standard: floor prior mode where the item's options count is unknown
    guess_prior_weight: float = 20.0  # ... its weight (Beta pseudo-observations; 0 = flat, py-irt's)
    ceiling_prior: float = 0.95  # fast 4pl/4pl-standard: ceiling prior mode
    ceiling_prior_weight: float = 10.0  # ... its weight (0 = flat, py-irt's)
    threads: int | None = None  # torch/numpy threads; None = min(2, cores)
    device: str = "auto"  # auto | cpu | cuda

    @classmethod
    def from_dict(cls, d: dict) -> "IrtSettings":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class EngineResult:
    ability: np.ndarray  # (M,)
    difficulty: np.ndarray  # (N,) point estimate (posterior mean / MAP)
    difficulty_sd: np.ndarray | None = None  # (N,) posterior sd, if the engine gives one
    discrimination: np.ndarray | None = None  # (N,) 2PL only
    ability_sd: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # iterations, converged, final_loss, criterion, ...
    lambdas: np.ndarray | None = None  # (N,) 3PL: guessing floor; 4PL: upper asymptote
    model: str = "1pl"
    guess: np.ndarray | None = None  # (N,) 4pl-standard: floor c
    ceiling: np.ndarray | None = None  # (N,) 4pl-standard: ceiling d

    def logits(self) -> np.ndarray:
        """Predicted log-odds of the logistic part, models x items."""
        a = self.discrimination if self.discrimination is not None else 1.0
        return a * (self.ability[:, None] - self.difficulty[None, :])

    def probability(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """P(correct) of the cells (rows[k], cols[k]) under the fitted model."""
        a = self.discrimination[cols] if self.discrimination is not None else 1.0
        p = 1.0 / (1.0 + np.exp(-a * (self.ability[rows] - self.difficulty[cols])))
        if self.model == "4pl-standard":
            return asymptotes(p, None, self.model, self.guess[cols], self.ceiling[cols])
        return asymptotes(p, None if self.lambdas is None else self.lambdas[cols], self.model)


def asymptotes(p_star, lambdas, model: str, guess=None, ceiling=None):
    """P(correct) from the logistic part ``p_star``: py-irt's 3PL / 4PL (``lambdas``), the standard 4PL
    (``guess``, ``ceiling``); 1PL/2PL: unchanged."""
    if model == "3pl":
        return lambdas + (1.0 - lambdas) * p_star
    if model == "4pl":
        return lambdas * p_star
    if model == "4pl-standard":
        return guess + (ceiling - guess) * p_star
    return p_star


def check_matrix(Y: np.ndarray, observed: np.ndarray) -> None:
    if Y.shape != observed.shape or Y.ndim != 2:
        raise ValueError(f"Y {Y.shape} and observed {observed.shape} must be equal 2-D shapes")
    if observed.dtype != np.bool_:
        raise ValueError("observed must be a boolean mask")
