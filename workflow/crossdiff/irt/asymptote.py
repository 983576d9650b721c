"""The ``fast`` engine's 3PL and 4PL: converged MAP with py-irt 0.7.1's priors (``irt.model: 3pl | 4pl``).

Models, as py-irt parameterises them (``py_irt/models/three_param_logistic.py``, ``four_param_logistic.py``),
with ``p* = sigmoid(a_j (theta_i - b_j))`` and one ``lambdas_j`` in [0, 1] per item:

* 3PL: ``P = lambdas + (1 - lambdas) p*`` (guessing floor);
* 4PL: ``P = lambdas * p*`` (upper asymptote, 1 - slip). py-irt's "4pl" has no guessing floor.

Priors: py-irt's 3PL/4PL are hierarchical only: ``b ~ N(mu_b, 1/u_b)``, ``log a ~ N(mu_g, 1/u_g)`` with
``mu_g`` clamped to [-5, 5] and the scale ``1/u_g`` to at most 2, ``mu ~ N(0, 1e6)``, ``u ~ Gamma(1, 1)``;
``lambdas`` is a plain parameter (no prior) in the unit interval. The joint MAP here takes all of
those over (b, log a, lambdas, mu_b, u_b, mu_g, u_g); the clamps become box bounds. One deviation: the
abilities get the fixed ``N(0, 1)`` prior (py-irt's vague ability prior, the Gamma(1, 1) mean of its
hierarchical one). With a hierarchical ability prior the joint MAP is degenerate, exactly as for the
2PL (:mod:`crossdiff.irt.fast`): the scale theta*k, b*k, a/k is held only by the hyperpriors, whose
optimum shrinks the abilities to 0 and pushes the discriminations to the clamp.

Algorithm: Gauss-Seidel sweeps of Fisher scoring, vectorised over all rows at once (numpy, float64,
dense masked matrix): a 1-D step per ability, then a 3x3 step on (b, log a, lambdas) per item at the new
abilities, with ``lambdas`` projected into [1e-6, 1 - 1e-6]; then the hyperparameters in closed form
(``mu`` and the Gamma(1, 1)-MAP precision ``u`` of each normal, clamped as py-irt clamps them). Started
from the ``fast`` 1PL fit, ``a = 1`` and ``lambdas`` = 0.05 (3PL) / 0.95 (4PL). Converged when no
parameter moves more than ``irt.tol`` in a sweep (at most ``irt.max_iter`` x 10 sweeps).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix

MU_SD = 1.0e6  # py-irt's scale of every hierarchical mean's N(0, 1e6) prior
MU_G_CLAMP = 5.0  # py-irt clamps mu_gamma to [-5, 5]
SD_G_MAX = 2.0  # ... and the log-discrimination scale 1/u_gamma to at most 2
LAMBDA_EPS = 1.0e-6  # lambdas bounds: log P stays finite
P_CLIP = 1.0e-12
START_LAMBDA = {"3pl": 0.05, "4pl": 0.95}
LAMBDA_RIDGE = 1.0e-6  # keeps the 3x3 solve regular where an item says nothing about its lambdas
MAX_STEP = 2.0
HALVINGS = 8  # step halvings before a row's / item's step is dropped for this sweep


def _cell_terms(theta, b, eta, lam, model):
    """P, dP/dx (x = a (theta - b)), dP/dlambdas, x and a on the dense matrix."""
    a = np.exp(eta)
    x = a[None, :] * (theta[:, None] - b[None, :])
    s = 1.0 / (1.0 + np.exp(-x))
    if model == "3pl":
        P, D, dlam = lam + (1 - lam) * s, (1 - lam) * s * (1 - s), 1 - s
    else:
        P, D, dlam = lam * s, lam * s * (1 - s), s
    return np.clip(P, P_CLIP, 1 - P_CLIP), D, dlam, x, a


def _cell_nll(y, obs, P):
    """Negative log-likelihood of every cell (0 where missing)."""
    return -obs * (y * np.log(P) + (1 - y) * np.log1p(-P))


def _objective(Y, observed, theta, b, eta, lam, hyper, model):
    P = _cell_terms(theta, b, eta, lam, model)[0]
    nll = -(observed * np.where(Y, np.log(P), np.log1p(-P))).sum()
    mu_b, u_b, mu_g, u_g = hyper
    N = b.size
    prior = 0.5 * (theta**2).sum() + 0.5 * u_b**2 * ((b - mu_b) ** 2).sum() - N * np.log(u_b) + u_b \
        + 0.5 * u_g**2 * ((eta - mu_g) ** 2).sum() - N * np.log(u_g) + u_g + 0.5 * (mu_b**2 + mu_g**2) / MU_SD**2
    return float(nll + prior)


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    check_matrix(Y, observed)
    model = settings.model
    if model not in ("3pl", "4pl"):
        raise ValueError(f"asymptote engine: model {model!r}; expected 3pl or 4pl")
    from crossdiff.irt import fast

    start = time.perf_counter()
    M, N = Y.shape
    init = fast.fit(Y, observed, dataclasses.replace(settings, model="1pl", priors="vague"))
    obs = observed.astype(np.float64)
    y = (Y.astype(bool) & observed).astype(np.float64)
    theta, b = init.ability.copy(), init.difficulty.copy()
    eta, lam = np.zeros(N), np.full(N, START_LAMBDA[model])
    hier = settings.priors == "hierarchical"
    mu_b, u_b, mu_g, u_g = 0.0, 1.0, 0.0, 1.0  # the hyperpriors' means: mu ~ N(0, 1e6), u ~ Gamma(1, 1)
    converged, crit, it = False, float("inf"), 0
    for it in range(1, settings.max_iter * 10 + 1):
        # abilities: 1-D Fisher scoring, prior N(0, 1)
        P, D, dlam, x, a = _cell_terms(theta, b, eta, lam, model)
        W = obs / (P * (1 - P))
        R = W * (y - P)
        dth = D * a[None, :]
        g = (R * dth).sum(1) - theta
        h = (W * dth * dth).sum(1) + 1.0
        d_theta = np.clip(g / h, -MAX_STEP, MAX_STEP)
        before = _cell_nll(y, obs, P).sum(1) + 0.5 * theta**2
        for _ in range(HALVINGS):  # backtrack the rows whose objective went up
            trial = theta + d_theta
            after = _cell_nll(y, obs, _cell_terms(trial, b, eta, lam, model)[0]).sum(1) + 0.5 * trial**2
            worse = after > before + 1e-12
            if not worse.any():
                break
            d_theta = np.where(worse, d_theta / 2, d_theta)
        d_theta = np.where(after > before + 1e-12, 0.0, d_theta)
        theta += d_theta
        # items: 3x3 Fisher scoring on (b, log a, lambdas)
        P, D, dlam, x, a = _cell_terms(theta, b, eta, lam, model)
        W = obs / (P * (1 - P))
        R = W * (y - P)
        J = (-D * a[None, :], D * x, dlam)  # dP/db, dP/dlog a, dP/dlambdas
        grad = np.stack([(R * j).sum(0) for j in J], 1)
        grad[:, 0] -= u_b**2 * (b - mu_b)
        grad[:, 1] -= u_g**2 * (eta - mu_g)
        info = np.empty((N, 3, 3))
        for k in range(3):
            for m in range(k, 3):
                info[:, k, m] = info[:, m, k] = (W * J[k] * J[m]).sum(0)
        info[:, 0, 0] += u_b**2
        info[:, 1, 1] += u_g**2
        info[:, 2, 2] += LAMBDA_RIDGE
        step = np.linalg.solve(info, grad[:, :, None])[:, :, 0]
        d_b = np.clip(step[:, 0], -MAX_STEP, MAX_STEP)
        d_e = np.clip(step[:, 1], -0.5, 0.5)
        d_l = np.clip(step[:, 2], -0.1, 0.1)

        def item_objective(b_, e_, l_):
            nll = _cell_nll(y, obs, _cell_terms(theta, b_, e_, l_, model)[0]).sum(0)
            return nll + 0.5 * u_b**2 * (b_ - mu_b) ** 2 + 0.5 * u_g**2 * (e_ - mu_g) ** 2

        before = item_objective(b, eta, lam)
        for _ in range(HALVINGS):  # backtrack the items whose objective went up
            l_new = np.clip(lam + d_l, LAMBDA_EPS, 1 - LAMBDA_EPS)
            after = item_objective(b + d_b, eta + d_e, l_new)
            worse = after > before + 1e-12
            if not worse.any():
                break
            d_b, d_e, d_l = (np.where(worse, d / 2, d) for d in (d_b, d_e, d_l))
        worse = after > before + 1e-12
        d_b, d_e = np.where(worse, 0.0, d_b), np.where(worse, 0.0, d_e)
        l_new = np.where(worse, lam, np.clip(lam + d_l, LAMBDA_EPS, 1 - LAMBDA_EPS))
        d_l = l_new - lam
        b += d_b
        eta += d_e
        lam = l_new
        # hyperparameters (hierarchical): closed form, py-irt's clamps as bounds; vague: fixed at their means
        old = np.array([mu_b, u_b, mu_g, u_g])
        if hier:
            mu_b = u_b**2 * b.sum() / (N * u_b**2 + MU_SD**-2)
            u_b = fast._gamma_normal_precision(float(((b - mu_b) ** 2).sum()), N)
            mu_g = float(np.clip(u_g**2 * eta.sum() / (N * u_g**2 + MU_SD**-2), -MU_G_CLAMP, MU_G_CLAMP))
            u_g = max(fast._gamma_normal_precision(float(((eta - mu_g) ** 2).sum()), N), 1.0 / SD_G_MAX)
        d_hyper = np.abs(np.array([mu_b, u_b, mu_g, u_g]) - old).max()
        crit = float(max(np.abs(d_theta).max(), np.abs(d_b).max(), np.abs(d_e).max(), np.abs(d_l).max(), d_hyper))
        if progress and it % 20 == 0:
            print(f"[fast {model}] sweep {it}: max abs change {crit:.3g}", flush=True)
        if crit < settings.tol:
            converged = True
            break
    P, D, dlam, x, a = _cell_terms(theta, b, eta, lam, model)
    W = obs / (P * (1 - P))
    info_b = (W * (D * a[None, :]) ** 2).sum(0) + u_b**2
    info_t = (W * (D * a[None, :]) ** 2).sum(1) + 1.0
    return EngineResult(
        ability=theta,
        difficulty=b,
        difficulty_sd=1.0 / np.sqrt(info_b),
        discrimination=np.exp(eta),
        ability_sd=1.0 / np.sqrt(info_t),
        lambdas=lam,
        model=model,
        info={
            "iterations": it,
            "converged": converged,
            "criterion": crit,
            "criterion_name": "max abs parameter change in the last sweep",
            "objective": _objective(Y, observed, theta, b, eta, lam, (mu_b, u_b, mu_g, u_g), model),
            "objective_name": "negative log posterior (constants dropped)",
            "start": "fast 1PL fit; a = 1; lambdas = %g" % START_LAMBDA[model],
            "priors": {"theta": "N(0, 1)", "mu_b": float(mu_b), "sd_b": float(1 / u_b), "mu_log_a": float(mu_g),
                       "sd_log_a": float(1 / u_g), "lambdas": "flat on [0, 1]"},
            "device": "cpu",
            "wall_s": time.perf_counter() - start,
        },
    )
