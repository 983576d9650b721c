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

The response matrix is dense: a float32 0/1 mask of observed cells (2PL: also the observed responses
as float32), swept in row blocks of float32 work arrays (4 MiB on CPU); missing cells contribute
nothing. Per block the cell arithmetic is float32 and the row and column statistics come from float32
row sums and one float32 GEMM ([1; d_theta]' [P | W]), accumulated across blocks in float64. The
success counts of rows and columns are computed once. The objective reported at the end costs one pass.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from crossdiff.irt import cells
from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix

HYPER_SD = 1.0e6  # py-irt's prior scale for every hierarchical location mu
MAX_STEP = 4.0  # cap on any single Newton step (logit units); only acts far from the optimum
BLOCK_CELLS = 1 << 20  # cells per row block of the float32 work arrays (4 MiB each) on CPU
GEMM_ROWS = 32  # rows per block at most: column sums are float32 over <= 32 rows, float64 across blocks
ROW_CHUNK = 128  # row sums: float32 over chunks of 128 cells, float64 across chunks (a float32 total of
# thousands of cells would round the gradient p - y by ~1e-3)


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
        self.threads = settings.threads or max(1, min(2, os.cpu_count() or 1))
        M, N = Y.shape
        self.M, self.N = M, N
        yo = np.not_equal(Y, 0)
        yo &= observed
        self.n_row = np.count_nonzero(observed, axis=1).astype(np.float64)
        self.n_col = np.count_nonzero(observed, axis=0).astype(np.float64)
        self.s_row = np.count_nonzero(yo, axis=1).astype(np.float64)
        self.s_col = np.count_nonzero(yo, axis=0).astype(np.float64)
        self.observed = observed
        self.yo = yo
        self.any_missing = not observed.all()
        # 1PL on CPU: the fused C sweep of crossdiff.irt.cells (one pass, the cell codes as its only matrix)
        self.lib = None
        if self.model == "1pl" and device.type == "cpu" and cells.kernel_choice() != "numpy":
            self.lib = cells.load_library()
            if self.lib is None and cells.kernel_choice() == "c":
                raise RuntimeError(f"the C kernel of crossdiff.irt.cells is unavailable: {cells.load_kernel()[1]}")
        self.kernel = "C" if self.lib is not None else "torch"
        self.code = cells.code_matrix(Y, observed) if self.lib is not None else None
        # torch: float32 0/1 mask (multiplying by it is cheaper than masked_fill_ with a bool mask) and, for
        # the 2PL, the observed responses as float32: the GEMMs below read them directly
        self.mask_t = (torch.from_numpy(observed).to(device=device, dtype=torch.float32)
                       if self.any_missing and self.lib is None else None)
        self.yo_t = torch.from_numpy(yo).to(device=device, dtype=torch.float32) if self.model == "2pl" else None
        # at most GEMM_ROWS rows per block: the float32 GEMM sums over a block's rows (then float64 across blocks)
        rows = max(1, min(GEMM_ROWS, (1 << 26 if device.type == "cuda" else BLOCK_CELLS) // max(N, 1)))
        self.blocks = [slice(i, min(i + rows, M)) for i in range(0, M, rows)]
        self.work = torch.empty(min(rows, M), 2, N, dtype=torch.float32, device=device)  # [P | W] of a block
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
        """[P | W] of a row block in the work buffer: P(correct) and W = P (1 - P), zero where missing
        (float32). Returns the (rows, 2, N) view, P and W."""
        r = blk.stop - blk.start
        buf = self.work[:r]
        p, w = buf[:, 0], buf[:, 1]
        torch = self.torch
        if a_t is None:
            torch.sub(theta_t[blk, None], b_t[None, :], out=p)
        else:
            torch.addr(-(a_t * b_t)[None, :].expand(r, -1), theta_t[blk], a_t, out=p)  # a (theta - b)
        p.sigmoid_()
        if self.any_missing:
            p.mul_(self.mask_t[blk])
        torch.addcmul(p, p, p, value=-1.0, out=w)
        return buf, p, w

    def _row_sums(self, buf):
        """Sums over the last axis of a float32 (..., N) block as float64 (float32 over ROW_CHUNK cells)."""
        n = buf.shape[-1]
        main = n - n % ROW_CHUNK
        out = buf[..., :main].reshape(*buf.shape[:-1], main // ROW_CHUNK, ROW_CHUNK).sum(-1).double().sum(-1)
        if main < n:
            out += buf[..., main:].sum(-1).double()
        return out

    def _np(self, t):
        return t.double().cpu().numpy()

    # -- sweeps ------------------------------------------------------------------------------
    def sweep_1pl_c(self):
        """:meth:`sweep_1pl` in one fused C pass (crossdiff_sweep_1pl in ``_cells.c``)."""
        p_ = self.p
        d_theta, h = np.empty(self.M), np.empty(self.M)
        cols = np.empty((3, self.N))
        b32 = self.b.astype(np.float32)
        regular = self.model_regular.view(np.uint8)
        if self.lib.crossdiff_sweep_1pl(self.code.ctypes.data, self.M, self.N, self.theta.ctypes.data, b32.ctypes.data,
                                        self.s_row.ctypes.data, float(p_["tau_theta"]), float(p_["mu_theta"]),
                                        regular.ctypes.data, MAX_STEP, self.threads, d_theta.ctypes.data,
                                        h.ctypes.data, cols.ctypes.data) != 0:
            raise MemoryError("crossdiff.irt.fast: the C sweep could not allocate its column sums")
        self.h_theta = h
        col_p, col_w, col_dp = cols
        self.theta += d_theta
        g = -(col_p + col_dp - self.s_col) + p_["tau_b"] * (self.b - p_["mu_b"])
        h_b = col_w + p_["tau_b"]
        d_b = np.clip(-g / h_b, -MAX_STEP, MAX_STEP) * self.item_regular
        self.b += d_b
        self.h_b = h_b
        self.var_b = 1.0 / h_b
        return d_theta, d_b

    def sweep_1pl(self):
        """Ability Newton step, then difficulty Newton step at the linearised new abilities.

        One pass: per row block, P and W = P (1 - P) in float32; row sums in float32 (over one row),
        column sums as one GEMM [1; d_theta]' [P | W] per block, accumulated in float64 across blocks.
        """
        torch, p_ = self.torch, self.p
        theta_t, b_t = self._t(self.theta), self._t(self.b)
        cols = torch.zeros(2, 2 * self.N, dtype=torch.float64, device=self.device)  # [1; d] x [P | W]
        basis = torch.ones(2, self.work.shape[0], dtype=torch.float32, device=self.device)
        d_theta = np.zeros(self.M)
        for blk in self.blocks:
            buf, p, w = self._probs(blk, theta_t, b_t)
            r = blk.stop - blk.start
            sums = self._np(self._row_sums(buf))  # (r, 2): sum p, sum w per row
            g = sums[:, 0] - self.s_row[blk] + p_["tau_theta"] * (self.theta[blk] - p_["mu_theta"])
            h = sums[:, 1] + p_["tau_theta"]
            d = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.model_regular[blk]
            d_theta[blk] = d
            self.h_theta[blk] = h
            basis[1, :r] = self._t(d)
            cols += (basis[:, :r] @ buf.view(r, 2 * self.N)).double()
        cols = self._np(cols)
        col_p, col_w, col_dp = cols[0, :self.N], cols[0, self.N:], cols[1, self.N:]  # col_dp: sum_i w_ij d_i
        self.theta += d_theta
        g = -(col_p + col_dp - self.s_col) + p_["tau_b"] * (self.b - p_["mu_b"])
        h = col_w + p_["tau_b"]
        d_b = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.item_regular
        self.b += d_b
        self.h_b = h
        self.var_b = 1.0 / h
        return d_theta, d_b

    def sweep_2pl(self):
        """Ability Newton step; then Fisher scoring on (b, log a) per item at the linearised new abilities.

        One pass, as the 1PL: per row block the abilities' Newton step first, then one GEMM
        [1, t, t^2, d, t d]' [P - Y | W] (t = theta, d = its step) gives the item sums at theta and their
        first-order change with theta (exact at the fixed point, where d = 0).
        """
        torch, p_ = self.torch, self.p
        a = np.exp(self.eta)
        theta_t, b_t, a_t = self._t(self.theta), self._t(self.b), self._t(a)
        a2_t = a_t * a_t
        d_theta = np.zeros(self.M)
        cols = torch.zeros(5, 2 * self.N, dtype=torch.float64, device=self.device)
        for blk in self.blocks:
            buf, p, w = self._probs(blk, theta_t, b_t, a_t)
            p.sub_(self.yo_t[blk])  # p - y on observed cells, 0 elsewhere
            g = self._np(p @ a_t) + p_["tau_theta"] * (self.theta[blk] - p_["mu_theta"])
            h = self._np(w @ a2_t) + p_["tau_theta"]
            d = np.clip(-g / h, -MAX_STEP, MAX_STEP) * self.model_regular[blk]
            d_theta[blk] = d
            self.h_theta[blk] = h
            t, d_t = theta_t[blk], self._t(d)
            basis = torch.stack([torch.ones_like(t), t, t * t, d_t, t * d_t])
            cols += (basis @ buf.view(blk.stop - blk.start, 2 * self.N)).double()
        self.theta += d_theta
        cols = self._np(cols)
        R0, R1, Rd = cols[0, :self.N], cols[1, :self.N], cols[3, :self.N]
        W0, W1, W2, Wd, Wtd = (cols[k, self.N:] for k in (0, 1, 2, 3, 4))
        b = self.b
        # at theta + d, to first order: d/dtheta_i of sum (p - y) = a w; of sum (p - y) theta = (p - y) + a w theta of sum (p - y) = a w; of sum (p - y) theta = (p - y) + a w theta
        R = np.stack([R0 + a * Wd, R1 + Rd + a * Wtd])
        W = np.stack([W0, W1, W2])
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
        """Negative log posterior (up to additive constants of the fixed priors).

        NLL = sum_obs softplus(x) - sum_obs y x: the second sum is O(M + N) (1PL: success counts; 2PL:
        one product with the responses), the first one pass of softplus, summed per row in float32.
        """
        torch, p_ = self.torch, self.p
        two = self.model == "2pl"
        a = np.exp(self.eta) if two else np.ones(self.N)
        theta_t, b_t, a_t = self._t(self.theta), self._t(self.b), self._t(a)
        nll = 0.0
        if self.lib is not None:
            rows = np.empty(self.M)
            b32 = self.b.astype(np.float32)
            self.lib.crossdiff_softplus_1pl(self.code.ctypes.data, self.M, self.N, self.theta.ctypes.data,
                                            b32.ctypes.data, self.threads, rows.ctypes.data)
            nll = float(rows.sum())
        for blk in (self.blocks if self.lib is None else []):
            r = blk.stop - blk.start
            x = self.work[:r, 0]
            if two:
                torch.addr(-(a_t * b_t)[None, :].expand(r, -1), theta_t[blk], a_t, out=x)
            else:
                torch.sub(theta_t[blk, None], b_t[None, :], out=x)
            sp = torch.nn.functional.softplus(x)
            if self.any_missing:
                sp.mul_(self.mask_t[blk])
            nll += float(sp.sum(1).double().sum())
            if two:  # sum_obs y x over this block, from the responses
                nll -= float((self.yo_t[blk] @ a_t).double() @ theta_t[blk].double())
        if two:
            nll += float((a * self.b) @ self.s_col)
        else:
            nll -= float(self.s_row @ self.theta - self.s_col @ self.b)
        nlp = nll + 0.5 * p_["tau_theta"] * ((self.theta - p_["mu_theta"]) ** 2).sum() \
            + 0.5 * p_["tau_b"] * ((self.b - p_["mu_b"]) ** 2).sum()
        if two:
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
            sweep = state.sweep_2pl if settings.model == "2pl" else (
                state.sweep_1pl_c if state.lib is not None else state.sweep_1pl)
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
        "kernel": state.kernel,
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
