"""E2H Reasoner's schedules over a train set's levels (Parashar et al., ICLR 2026; divelab/E2H-Reasoning).

A train set with ``schedule`` (``study.train_sets.<name>.schedule``, GRPO only) has levels 0..K-1: its bins in
ascending order (bin 0 the easiest). At generation round t of T the prompts' levels are drawn from p(t), read from
E2H's ``src/trainer.py`` at 381e5002:

* ``classic`` (:43-45): one-hot on level ``min(floor(t K / T), K - 1)``: a traditional curriculum, K stages;
* ``balanced`` (:48-49): uniform 1/K (plain GRPO on the pooled levels);
* ``cosine`` (:52-63, E2H's default): ``alpha = (1 + cos(pi t / T)) / 2``, ``p_i = alpha (K - i) / S + (1 - alpha)
  (i + 1) / S`` with ``S = K (K + 1) / 2``, each floored at ``2 / (K (K + 1))``, renormalised;
* ``gaussian`` (:66-85): ``mu = (t / T)^mu_exp (K - 1)``, ``q_i`` proportional to ``exp(-(i - mu)^2 / (2 sigma^2))``,
  ``p_i = p_min + (1 - K p_min) q_i`` with ``p_min = 2 / (K (K + 1))`` when ``min_prob`` is true, else the number
  given (E2H's config: mu_exp 0.5, sigma 0.5, min_prob true).

``min_prob: false`` is an error in E2H's code (it accepts true or a float); here it is refused at parse; 0 gives no
floor. The sampler that draws with these probabilities is :mod:`crossdiff.finetune.grpo_schedule`.
"""

from __future__ import annotations

import math

import numpy as np

from crossdiff.errors import CrossdiffError

SCHEDULES = ("classic", "balanced", "cosine", "gaussian")
ARG_DEFAULTS = {"mu_exp": 0.5, "sigma": 0.5, "min_prob": True}  # E2H config/algorithm/grpo.yaml e2h_args


def floor_prob(K: int) -> float:
    """E2H's probability floor 2 / (K (K + 1)): the smallest of the cosine schedule's end points."""
    return 2.0 / (K * (K + 1))


def check_args(name: str, args: dict | None, K: int, where: str) -> dict:
    """Complete, checked schedule arguments (defaults: E2H's config)."""
    if name not in SCHEDULES:
        raise CrossdiffError(f"{where}.schedule: {name!r}; expected one of {list(SCHEDULES)} (E2H Reasoner's schedules)")
    out = {**ARG_DEFAULTS, **(args or {})}
    unknown = sorted(set(out) - set(ARG_DEFAULTS))
    if unknown:
        raise CrossdiffError(f"{where}.schedule_args: unknown key(s) {unknown}; known: {sorted(ARG_DEFAULTS)}")
    for key in ("mu_exp", "sigma"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise CrossdiffError(f"{where}.schedule_args.{key}: expected a number > 0, got {v!r}")
    m = out["min_prob"]
    if m is False or not isinstance(m, (bool, int, float)):
        raise CrossdiffError(f"{where}.schedule_args.min_prob: expected true (E2H's floor 2/(K(K+1))) or a number in "
                             f"[0, 1/K], got {m!r} (E2H's code refuses false; 0 means no floor)")
    if m is not True and not 0 <= m <= 1.0 / K:
        raise CrossdiffError(f"{where}.schedule_args.min_prob: {m!r} with {K} levels: K x min_prob must not exceed 1")
    return out


def probabilities(name: str, t: int, T: int, K: int, args: dict | None = None) -> np.ndarray:
    """p(t) over the K levels (module docstring; E2H src/trainer.py:43-85)."""
    a = {**ARG_DEFAULTS, **(args or {})}
    i = np.arange(K, dtype=np.float64)
    if name == "classic":
        p = np.zeros(K)
        p[min(int(t * K / T), K - 1)] = 1.0
        return p
    if name == "balanced":
        return np.full(K, 1.0 / K)
    if name == "cosine":
        S = K * (K + 1) / 2.0
        alpha = 0.5 * (1 + math.cos(math.pi * t / T))
        p = np.maximum(alpha * (K - i) / S + (1 - alpha) * (i + 1) / S, floor_prob(K))
        return p / p.sum()
    if name == "gaussian":
        mu = (t / T) ** a["mu_exp"] * (K - 1)
        q = np.exp(-((i - mu) ** 2) / (2 * a["sigma"] ** 2))
        q = q / q.sum()
        p_min = floor_prob(K) if a["min_prob"] is True else float(a["min_prob"])
        return p_min + (1 - K * p_min) * q
    raise CrossdiffError(f"schedule {name!r}: expected one of {list(SCHEDULES)}")
