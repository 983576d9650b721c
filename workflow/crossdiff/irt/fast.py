"""The ``fast`` engine: the converged MAP of the 1PL / 2PL model with py-irt's priors.

Objective (negative log posterior, minimised)::

    sum_{observed (i,j)} softplus(-(2y-1) * a_j * (theta_i - b_j))
      + sum_i (theta_i - mu_theta)^2 tau_theta / 2 + sum_j (b_j - mu_b)^2 tau_b / 2
      [2PL] + sum_j (log a_j - mu_eta)^2 tau_eta / 2          [+ hyperprior terms, hierarchical]

Priors are py-irt 0.7.1's (``py_irt/models/one_param_logistic.py``, ``two_param_logistic.py``):

* 1PL vague: theta ~ N(0, 1), b ~ N(0, 1000) (scale 1000, i.e. variance 1e6).
* 2PL vague: theta ~ N(0, 1), b ~ N(0, 0.1), a ~ LogNormal(0, 0.1); the MAP is taken in log a.
* 1PL hierarchical: theta ~ N(mu_theta, 1/u_theta), b ~ N(mu_b, 1/u_b), mu ~ N(0, 1e6),
  u ~ Gamma(1, 1); the joint MAP over all of them.
* 2PL hierarchical is refused: its joint MAP is degenerate (the common scale theta*k, b*k, a/k is
  held only by the Gamma(1, 1) hyperpriors, whose optimum shrinks abilities towards 0 and pushes
  discriminations to py-irt's clamp of mu_a at 5), so there is no meaningful point estimate.

Algorithm: Gauss-Seidel sweeps of exact per-row Newton steps, vectorised over all rows at once.
1PL: one sigmoid evaluation of the dense matrix per sweep; the ability step is an exact 1-D Newton
step per model, and the difficulty step uses the column sums at the new abilities through their
first-order expansion (exact at the fixed point). 2PL: ability Newton step, then a Fisher-scoring
2x2 step on (b, log a) per item at the new abilities. After each sweep the likelihood-invariant
directions are solved in closed form: the common location shift of theta and b (and for the 2PL
the common scale), which the near-flat prior on b would otherwise leave to converge slowly.

All-correct / all-wrong items and models (``extreme``) have a finite MAP only through the prior. Their
sigmoid is within float32 rounding of 0 or 1, so they are solved separately in float64 by Newton on
the log of their stationarity equation (which is near-linear in the tail) and reported in ``info``.

The response matrix stays dense and compact: ``uint8`` responses and a ``bool`` missing mask, swept
in row blocks of float32 work arrays (about 2 MB on CPU); missing cells contribute nothing.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix

HYPER_SD = 1.0e6  # py-irt's prior scale for every hierarchical location mu
MAX_STEP = 4.0  # cap on any single Newton step (logit units); only acts far from the optimum


def _vague_priors(model: str) -> dict:
    """Fixed prior means and precisions of py-irt's 'vague' priors."""
    b_sd = 1.0e3 if model == "1pl" else 0.1
    return {"mu_theta": 0.0, "tau_theta": 1.0, "mu_b": 0.0, "tau_b": b_sd**-2, "mu_eta": 0.0, "tau_eta": 0.1**-2}


def _gamma_normal_precision(ss: float, n: int) -> float:
    """MAP of u for n normals with sd 1/u, sum of squares ``ss`` and u ~ Gamma(1, 1).

    Maximises n log u - u - u^2 ss / 2, the positive root of ss u^2 + u - n = 0 (stable form).
    """
    return 2.0 * n / (1.0 + math.sqrt(1.0 + 4.0 * ss * n))


class _Fit:
    """State and sweeps of one MAP fit; arrays are float64 numpy, dense work runs in torch."""

    def __init__(self, Y, observed, settings, torch, device):
        self.torch = torch
        self.device = device
        self.model = settings.model
        self.hier = settings.priors == "hierarchical"
        M, N = Y.shape
        self.M, self.N = M, N
        yo = (Y.astype(bool) & observed)
        self.n_row = observed.sum(1).astype(np.float64)
        self.n_col = observed.sum(0).astype(np.float64)
        self.s_row = yo.sum(1).astype(np.float64)
        self.s_col = yo.sum(0).astype(np.float64)
        self.observed = observed
        self.yo = yo
        self.any_missing = not observed.all()
        self.miss_t = torch.from_numpy(~observed).to(device) if self.any_missing else None
        self.yo_t = torch.from_numpy(yo.view(np.uint8)).to(device) if self.model == "2pl" else None
        rows = max(1, (1 << 26 if device.type == "cuda" else 1 << 19) // max(N, 1))
        self.blocks = [slice(i, min(i + rows, M)) for i in range(0, M, rows)]
        # extremes: every observed response equal (and at least one observed)
        self.xi_correct = np.flatnonzero((self.s_col == self.n_col) & (self.n_col > 0))
        self.xi_wrong = np.flatnonzero((self.s_col == 0) & (self.n_col > 0))
        self.xm_correct = np.flatnonzero((self.s_row == self.n_row) & (self.n_row > 0))
        self.xm_wrong = np.flatnonzero((self.s_row == 0) & (self.n_row > 0))
        self.item_regular = np.ones(N, bool)
        self.item_regular[np.r_[self.xi_correct, self.xi_wrong]] = False
        self.model_regular = np.ones(M, bool)
        self.model_regular[np.r_[self.xm_correct, self.xm_wrong]] = False
        self.p = _vague_priors(self.model)
        if self.hier:
            self.p.update(tau_b=1.0)  # Gamma(1, 1) mean as the starting precision
        self.theta = np.zeros(M)
        self.b = np.zeros(N)
        self.eta = np.zeros(N)  # log discrimination (2PL)
        self.h_theta = np.ones(M)
        self.h_b = np.ones(N)
        self.var_b = np.ones(N)

    # -- dense blocks -------------------------------------------------------------------------
    def _t(self, x):
        return self.torch.as_tensor(x, dtype=self.torch.float32, device=self.device)

    def _probs(self, blk, theta_t, b_t, a_t=None):
        """P(correct) on a row block, zero where missing (float32)."""
        x = theta_t[blk, None] - b_t[None, :]
        if a_t is not None:
            x.mul_(a_t[None, :])
        p = x.sigmoid_()
        if self.any_missing:
            p.masked_fill_(self.miss_t[blk], 0.0)
        return p

    def _np(self, t):
        return t.double().cpu().numpy()

    # -- sweeps ------------------------------------------------------------------------------
    def sweep_1pl(self):
        """Ability Newton step, then difficulty Newton step at the linearised new abilities."""
        torch, p_ = self.torch, self.p
        theta_t, b_t = self._t(self.theta), self._t(self.b)
        col_p = torch.zeros(self.N, dtype=torch.float64, device=self.device)
        col_w = torch.zeros_like(col_p)
        col_dp = torch.zeros_like(col_p)
        d_theta = np.zeros(self.M)
        for blk in self.blocks:
            p = self._probs(blk, theta_t, b_t)
            q = p * p
            sp = self._np(p.sum(1, dtype=torch.float64))
            w = sp - self._np(q.sum(1, dtype=torch.float64))
            g = sp - self.s_row[blk] + p_["tau_theta"] * (self.theta[blk] - p_["mu_theta"])
            h = w + p_["tau_theta"]
            d = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.model_regular[blk]
            d_theta[blk] = d
            self.h_theta[blk] = h
            cp = p.sum(0, dtype=torch.float64)
            cw = cp - q.sum(0, dtype=torch.float64)
            col_p += cp
            col_w += cw
            dt = self._t(d)
            col_dp += (dt @ p - dt @ q).double()  # sum_i w_ij d_theta_i: first-order change of p at new theta
        col_p, col_w, col_dp = self._np(col_p), self._np(col_w), self._np(col_dp)
        self.theta += d_theta
        g = -(col_p + col_dp - self.s_col) + p_["tau_b"] * (self.b - p_["mu_b"])
        h = col_w + p_["tau_b"]
        d_b = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.item_regular
        self.b += d_b
        self.h_b = h
        self.var_b = 1.0 / h
        return d_theta, d_b

    def sweep_2pl(self):
        """Ability Newton step; then Fisher scoring on (b, log a) per item at the new abilities."""
        torch, p_ = self.torch, self.p
        a = np.exp(self.eta)
        theta_t, b_t, a_t = self._t(self.theta), self._t(self.b), self._t(a)
        d_theta = np.zeros(self.M)
        for blk in self.blocks:
            p = self._probs(blk, theta_t, b_t, a_t)
            w = p - p * p
            ya = self.yo_t[blk].to(torch.float32) @ a_t
            g = self._np(p @ a_t - ya) + p_["tau_theta"] * (self.theta[blk] - p_["mu_theta"])
            h = self._np(w @ (a_t * a_t)) + p_["tau_theta"]
            d_theta[blk] = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.model_regular[blk]
            self.h_theta[blk] = h
        self.theta += d_theta
        theta_t = self._t(self.theta)
        R = torch.zeros(2, self.N, dtype=torch.float64, device=self.device)  # sum (p-y) [1, theta]
        W = torch.zeros(3, self.N, dtype=torch.float64, device=self.device)  # sum w [1, theta, theta^2]
        for blk in self.blocks:
            p = self._probs(blk, theta_t, b_t, a_t)
            w = p - p * p
            t = theta_t[blk]
            basis = torch.stack([torch.ones_like(t), t, t * t])
            R += (basis[:2] @ (p - self.yo_t[blk].to(torch.float32))).double()
            W += (basis @ w).double()
        R, W = self._np(R), self._np(W)
        b = self.b
        g_b = -a * R[0] + p_["tau_b"] * (b - p_["mu_b"])
        g_e = a * (R[1] - b * R[0]) + p_["tau_eta"] * (self.eta - p_["mu_eta"])
        i_bb = a * a * W[0] + p_["tau_b"]
        i_be = -a * a * (W[1] - b * W[0])
        i_ee = a * a * (W[2] - 2 * b * W[1] + b * b * W[0]) + p_["tau_eta"]
        det = i_bb * i_ee - i_be * i_be
        d_b = np.clip(-(i_ee * g_b - i_be * g_e) / det, -MAX_STEP, MAX_STEP) * self.item_regular
        d_e = np.clip(-(i_bb * g_e - i_be * g_b) / det, -1.0, 1.0)
        self.b += d_b
        self.eta += d_e
        self.h_b = i_bb
        self.var_b = i_ee / det
        return d_theta, np.maximum(np.abs(d_b), np.abs(d_e))

    # -- extremes ----------------------------------------------------------------------------
    def _solve_tail(self, v, m, tau, z, alpha, mask):
        """Minimise sum_k mask*softplus(alpha_k (v - z_k)) + tau (v - m)^2 / 2 for each row of z.

        The root satisfies log sum alpha sigma(alpha (v - z)) = log(tau (m - v)), v < m; Newton on
        that log form converges in a few steps even when v is far in the tail. Float64 throughout.
        Returns (v, curvature of the objective at v).
        """
        v = np.minimum(v, m - 1e-3)
        for _ in range(100):
            s = 1.0 / (1.0 + np.exp(-alpha * (v[:, None] - z)))
            S = (mask * alpha * s).sum(1)
            H = (mask * alpha * alpha * s * (1 - s)).sum(1)
            phi = np.log(S) - np.log(tau * (m - v))
            step = np.clip(-phi / (H / S + 1.0 / (m - v)), -MAX_STEP, MAX_STEP)
            v_new = np.where(v + step >= m, (v + m) / 2, v + step)
            done = np.abs(v_new - v).max() < 1e-12
            v = v_new
            if done:
                break
        s = 1.0 / (1.0 + np.exp(-alpha * (v[:, None] - z)))
        return v, (mask * alpha * alpha * s * (1 - s)).sum(1) + tau

    def solve_extremes(self):
        """Exact coordinate minimum for every all-correct / all-wrong item and model."""
        p_, a = self.p, np.exp(self.eta)
        change = 0.0
        # items: all-correct minimise sum softplus(a (b - theta)); all-wrong: v = -b
        for idx, sign in ((self.xi_correct, 1.0), (self.xi_wrong, -1.0)):
            if idx.size:
                mask = self.observed[:, idx].T.astype(np.float64)
                v, h = self._solve_tail(sign * self.b[idx], sign * p_["mu_b"], p_["tau_b"],
                                        sign * self.theta[None, :], a[idx, None], mask)
                change = max(change, np.abs(sign * v - self.b[idx]).max())
                self.b[idx] = sign * v
                self.h_b[idx] = h
                self.var_b[idx] = 1.0 / h
        # models: all-correct minimise sum softplus(a (b - theta)) with v = -theta; all-wrong v = theta
        for idx, sign in ((self.xm_correct, -1.0), (self.xm_wrong, 1.0)):
            if idx.size:
                mask = self.observed[idx].astype(np.float64)
                v, h = self._solve_tail(sign * self.theta[idx], sign * p_["mu_theta"], p_["tau_theta"],
                                        sign * self.b[None, :], a[None, :], mask)
                change = max(change, np.abs(sign * v - self.theta[idx]).max())
                self.theta[idx] = sign * v
                self.h_theta[idx] = h
        return change

    # -- invariant directions and hyperparameters --------------------------------------------
    def fix_invariances(self):
        """Closed-form optimum along the directions that leave the likelihood unchanged."""
        p_ = self.p
        if self.hier:
            # shifting theta, b and both means together changes only the two N(0, 1e6) mean priors
            c = -(p_["mu_theta"] + p_["mu_b"]) / 2
            p_["mu_theta"] += c
            p_["mu_b"] += c
        else:
            num = p_["tau_theta"] * (self.theta - p_["mu_theta"]).sum() + p_["tau_b"] * (self.b - p_["mu_b"]).sum()
            c = -num / (self.M * p_["tau_theta"] + self.N * p_["tau_b"])
        self.theta += c
        self.b += c
        shift = abs(c)
        if self.model == "2pl":
            # theta*k, b*k, log a - log k: one Newton step in log k on the prior terms
            tt, tb, te = p_["tau_theta"], p_["tau_b"], p_["tau_eta"]
            d1 = tt * (self.theta * (self.theta - p_["mu_theta"])).sum() + tb * (self.b * (self.b - p_["mu_b"])).sum() \
                - te * (self.eta - p_["mu_eta"]).sum()
            d2 = tt * (2 * self.theta**2 - self.theta * p_["mu_theta"]).sum() \
                + tb * (2 * self.b**2 - self.b * p_["mu_b"]).sum() + te * self.N
            ell = float(np.clip(-d1 / d2, -0.5, 0.5)) if d2 > 0 else 0.0
            self.theta *= math.exp(ell)
            self.b *= math.exp(ell)
            self.eta -= ell
            shift = max(shift, abs(ell) * max(np.abs(self.theta).max(), np.abs(self.b).max(), 1.0))
        return shift

    def update_hyper(self):
        """Hierarchical priors: closed-form MAP of each (mu, u) given the current parameters."""
        p_ = self.p
        keys = ("mu_theta", "tau_theta", "mu_b", "tau_b")
        old = np.array([p_[k] for k in keys])
        self.u = {}
        for name, x in (("theta", self.theta), ("b", self.b)):
            tau = p_[f"tau_{name}"]
            mu = tau * x.sum() / (x.size * tau + HYPER_SD**-2)
            u = _gamma_normal_precision(float(((x - mu) ** 2).sum()), x.size)
            p_[f"mu_{name}"], p_[f"tau_{name}"] = mu, u * u
            self.u[name] = u
        new = np.array([p_[k] for k in keys])
        return float(np.abs(new - old).max())

    # -- objective ---------------------------------------------------------------------------
    def objective(self):
        """Negative log posterior (up to additive constants of the fixed priors)."""
        torch, p_ = self.torch, self.p
        a = np.exp(self.eta) if self.model == "2pl" else np.ones(self.N)
        theta_t, b_t, a_t = self._t(self.theta), self._t(self.b), self._t(a)
        nll = 0.0
        yo = torch.from_numpy(self.yo.view(np.uint8)).to(self.device)
        for blk in self.blocks:
            x = (theta_t[blk, None] - b_t[None, :]) * a_t[None, :]
            sgn = 1.0 - 2.0 * yo[blk].to(torch.float32)  # softplus(-x) if correct, softplus(x) if wrong
            ll = torch.nn.functional.softplus(sgn * x)
            if self.any_missing:
                ll.masked_fill_(self.miss_t[blk], 0.0)
            nll += float(ll.sum(dtype=torch.float64))
        nlp = nll + 0.5 * p_["tau_theta"] * ((self.theta - p_["mu_theta"]) ** 2).sum() \
            + 0.5 * p_["tau_b"] * ((self.b - p_["mu_b"]) ** 2).sum()
        if self.model == "2pl":
            nlp += 0.5 * p_["tau_eta"] * ((self.eta - p_["mu_eta"]) ** 2).sum()
        if self.hier:
            for name, n in (("theta", self.M), ("b", self.N)):
                sd = 1.0 / math.sqrt(p_[f"tau_{name}"])
                nlp += n * math.log(sd) + self.u[name] + 0.5 * (p_[f"mu_{name}"] / HYPER_SD) ** 2
        return nlp


def _device(settings: IrtSettings, torch):
    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    """Converged MAP of the 1PL/2PL with py-irt's priors; see the module docstring."""
    check_matrix(Y, observed)
    supported = {("1pl", "vague"), ("1pl", "hierarchical"), ("2pl", "vague")}
    if (settings.model, settings.priors) not in supported:
        raise ValueError(f"fast engine: model/priors {settings.model}/{settings.priors} not supported; "
                         "use 1pl/vague, 1pl/hierarchical or 2pl/vague (2PL hierarchical MAP is degenerate, "
                         "see crossdiff.irt.fast)")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads or max(1, min(2, os.cpu_count() or 1)))
    try:
        with torch.no_grad():
            state = _Fit(Y, observed, settings, torch, _device(settings, torch))
            sweep = state.sweep_1pl if settings.model == "1pl" else state.sweep_2pl
            converged, crit, it = False, float("inf"), 0
            for it in range(1, settings.max_iter + 1):
                d_theta, d_item = sweep()
                crit = max(np.abs(d_theta).max(initial=0.0), np.abs(d_item).max(initial=0.0))
                crit = max(crit, state.solve_extremes(), state.fix_invariances())
                if state.hier:
                    crit = max(crit, state.update_hyper())
                if progress:
                    print(f"[fast] sweep {it}: max abs change {crit:.3g}", flush=True)
                if crit < settings.tol:
                    converged = True
                    break
            if state.hier:
                state.update_hyper()
            objective = state.objective()
    finally:
        torch.set_num_threads(threads_before)
    info = {
        "iterations": it,
        "converged": converged,
        "criterion": float(crit),
        "criterion_name": "max abs parameter change in the last sweep",
        "objective": float(objective),
        "objective_name": "negative log posterior (constants of the fixed priors dropped)",
        "device": str(state.device),
        "wall_s": time.perf_counter() - start,
        "extreme_items": {"all_correct": state.xi_correct.tolist(), "all_wrong": state.xi_wrong.tolist()},
        "extreme_models": {"all_correct": state.xm_correct.tolist(), "all_wrong": state.xm_wrong.tolist()},
        "n_extreme_items": int(state.xi_correct.size + state.xi_wrong.size),
        "n_extreme_models": int(state.xm_correct.size + state.xm_wrong.size),
        "priors": {k: float(v) for k, v in state.p.items()},
    }
    return EngineResult(
        ability=state.theta.copy(),
        difficulty=state.b.copy(),
        difficulty_sd=np.sqrt(state.var_b),
        discrimination=np.exp(state.eta) if settings.model == "2pl" else None,
        ability_sd=1.0 / np.sqrt(state.h_theta),
        info=info,
    )
