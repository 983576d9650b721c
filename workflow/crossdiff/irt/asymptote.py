"""The ``fast`` engine's 3PL, 4PL and standard 4PL: the converged MAP (``irt.model: 3pl | 4pl | 4pl-standard``).

Models, with ``s = sigmoid(a_j (theta_i - b_j))``, floor ``c_j`` and ceiling ``d_j``, ``P = c + (d - c) s``:

* ``3pl``: py-irt 0.7.1's 3PL (``py_irt/models/three_param_logistic.py``), ``P = lambdas + (1 - lambdas) s``:
  c = lambdas (guessing floor), d = 1.
* ``4pl``: py-irt's 4PL (``four_param_logistic.py``), ``P = lambdas * s``: c = 0, d = lambdas (upper
  asymptote, 1 - slip). py-irt's "4pl" has **no guessing floor**; it is what the authors published.
* ``4pl-standard``: the standard 4PL of Barton and Lord (1981), ``P = c + (d - c) s``, as mirt, ltm and
  catsim fit it: a floor and a ceiling per item. Not a py-irt model.

Priors (the objective is the negative log posterior):

* theta ~ N(0, 1) (py-irt's vague ability prior, the Gamma(1, 1) mean of its hierarchical one: a
  hierarchical ability prior makes the joint MAP degenerate, as for the 2PL in :mod:`crossdiff.irt.fast`).
* b ~ N(mu_b, 1/u_b), log a ~ N(mu_g, 1/u_g): py-irt's 3PL/4PL priors, which are hierarchical only.
  ``priors: hierarchical`` takes the joint MAP over mu ~ N(0, 1e6), u ~ Gamma(1, 1) as well, with py-irt's
  clamps (mu_g in [-5, 5], 1/u_g <= 2) as bounds; ``priors: vague`` fixes them at the hyperpriors' means
  (mu = 0, u = 1: b ~ N(0, 1), log a ~ N(0, 1)).
* floor c (3pl's lambdas, 4pl-standard's guess): Beta(w m + 1, w (1 - m) + 1), mode m, weight w
  pseudo-observations: the form of BILOG-MG's default guessing prior. m = 1 / n_options where the item
  table gives the item's options count (``n_choices``), else ``irt.guess_prior`` (0.25);
  w = ``irt.guess_prior_weight`` (20).
* ceiling d (4pl's lambdas, 4pl-standard's ceiling): the same form with m = ``irt.ceiling_prior`` (0.95),
  w = ``irt.ceiling_prior_weight`` (10).
* A weight of 0 makes that asymptote flat on [1e-6, 1 - 1e-6]: py-irt's own lambdas have no prior. The
  MAP then often sits on a bound, and on simulated data it ranks easy items worse (the floor absorbs
  them): Spearman of b with the truth 0.94 instead of 0.97 (3PL, 2000 x 1000). 4pl-standard keeps
  d - c >= 1e-3.

Algorithm: Gauss-Seidel sweeps, each one pass over the matrix for the abilities and one for the items
(:mod:`crossdiff.irt.cells`: a fused C kernel, numpy as the fallback), Newton steps on the observed
Hessian (eigenvalues raised where it is not positive definite):

1. abilities: a Newton step per model (capped at 2 logits); the next pass gives every row's objective at
   the new value, and the rows whose objective got worse (beyond float rounding) halve their step (up to
   10 times, then keep the old value); only those rows are recomputed;
2. items: projected Newton on (b, log a[, c][, d]) per item: an epsilon-active set (Bertsekas 1982) for
   the bounds of c and d, the Newton direction on the free parameters, the step scaled **as a whole** to
   at most 2 (b), 1 (log a), 0.25 (c, d) and to at most half the way to 0 or 1 for an asymptote with a
   Beta prior, then projected onto the bounds; items whose objective got worse halve their step, as the
   rows. The items still far from their optimum (Newton decrement > 0.1; at most the slowest 5%)
   then iterate alone on their own columns;
3. the directions that leave the likelihood unchanged (theta and b shifted together; theta, b scaled
   by k and a by 1/k) are set to their prior optimum in closed form, then the hyperparameters.
Once 95% of the abilities and items have a decrement below 0.5 the steps are over-relaxed by 1.3 (the
backtracking still applies).
Every accepted step lowers the objective (up to float rounding): it is monotone.

Stopping rule, checked after every sweep at the current point: the Newton decrement of every ability
and every item, ``sqrt(pg' H^-1 pg)`` with ``pg`` the projected gradient (zero where a bound holds the
parameter and the gradient points out) and ``H`` the Hessian of the objective, at most ``irt.gtol``
(1e-3: the remaining Newton step is within a thousandth of a posterior standard deviation), **and** the
objective changed by at most ``irt.tol`` (relative) in the last sweep. Parameter changes are not used:
on the flat ridges of these posteriors they keep moving while the objective does not. fit.json's
``engine_info`` reports both, the projected gradient's largest component and norm, and the backtracking.
Start: the fast 1PL fit; c and d at their prior modes (flat: c = 0.05, d = 0.95); b and a such that the item
curve crosses 1/2 where the 1PL's does (theta = the 1PL's b) with the 1PL's slope there (1/4), a clipped to
[0.5, 3] (on the 5000 x 12000 benchmark matrix this start saves 3 of 15 sweeps for the standard 4PL).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix
from crossdiff.irt.cells import COLUMNS, Cells

MODELS = {"3pl": (True, False), "4pl": (False, True), "4pl-standard": (True, True)}  # (c free, d free)
MU_SD = 1.0e6  # py-irt's scale of every hierarchical mean's N(0, 1e6) prior
MU_G_CLAMP = 5.0  # py-irt clamps mu_gamma to [-5, 5]
SD_G_MAX = 2.0  # ... and the log-discrimination scale 1/u_gamma to at most 2
BOUND = 1.0e-6  # c, d in [BOUND, 1 - BOUND]: log P stays finite
MIN_GAP = 1.0e-3  # 4pl-standard: d - c >= MIN_GAP
START = {"3pl": (0.05, 1.0), "4pl": (0.0, 0.95), "4pl-standard": (0.05, 0.95)}  # where c / d have no prior
START_A = (0.5, 3.0)  # range of the start's discrimination
STEP_CAP = np.array([2.0, 1.0, 0.25, 0.25])  # whole-step scaling: largest move of b, log a, c, d
THETA_CAP = 2.0
HALVINGS = 10
REFINE_DEC = 0.1  # items whose Newton decrement exceeds this after a sweep get extra iterations alone ...
REFINE_SHARE = 0.05  # ... at most this share of the items
REFINE_ITERS = 20
BARRIER_FRACTION = 0.5
OMEGA = 1.3  # over-relaxation of the ability and item steps once the decrement is below SOR_BELOW
SOR_BELOW = 0.5
ACTIVE_EPS = 1.0e-2  # cap of the epsilon of the epsilon-active set
EIG_FLOOR = 1.0e-6  # modified Newton: Hessian eigenvalues raised to at least this x the largest
IDX = {name: k for k, name in enumerate(COLUMNS)}


def beta_params(mode: np.ndarray | float, weight: float):
    """Beta(w m + 1, w (1 - m) + 1): mode m, w pseudo-observations."""
    mode = np.asarray(mode, dtype=np.float64)
    return weight * mode + 1.0, weight * (1.0 - mode) + 1.0


def guess_modes(n_items: int, settings: IrtSettings, n_options=None) -> tuple[np.ndarray, int]:
    """Floor prior modes per item: 1 / n_options where known (>= 2), else ``settings.guess_prior``."""
    modes = np.full(n_items, float(settings.guess_prior))
    known = 0
    if n_options is not None:
        k = np.asarray(n_options, dtype=np.float64)
        ok = np.isfinite(k) & (k >= 2)
        modes[ok] = 1.0 / k[ok]
        known = int(ok.sum())
    return modes, known


def well_conditioned(H: np.ndarray, floor: float) -> np.ndarray:
    """True where the symmetric ``H[n]`` (k x k) surely has lambda_min >= floor * lambda_max.

    Sufficient test from the LDL' pivots p_1..p_k (Schur complements): positive pivots mean positive
    definite, and prod p = det = prod lambda <= lambda_min lambda_max^(k-1), so lambda_min / lambda_max
    >= prod p / trace^k (lambda_max <= trace). Items that fail it get their eigenvalues computed.
    """
    n, k = H.shape[:2]
    A = H.copy()
    det = np.ones(n)
    ok = np.ones(n, dtype=bool)
    for j in range(k):
        piv = A[:, j, j]
        ok &= piv > 0
        safe = np.where(piv > 0, piv, 1.0)
        det *= safe
        if j + 1 < k:
            col = A[:, j + 1:, j] / safe[:, None]
            A[:, j + 1:, j + 1:] -= col[:, :, None] * A[:, j, None, j + 1:]
    trace = np.trace(H, axis1=1, axis2=2)
    return ok & (det >= floor * np.maximum(trace, 1e-300) ** k)


class _Fit:
    def __init__(self, Y, observed, settings: IrtSettings, n_options=None):
        self.model = settings.model
        self.c_free, self.d_free = MODELS[self.model]
        self.free = np.array([0, 1] + ([2] if self.c_free else []) + ([3] if self.d_free else []))
        threads = settings.threads or max(1, min(2, os.cpu_count() or 1))
        self.cells = Cells(Y, observed, threads=threads)
        self.M, self.N = Y.shape
        self.hier = settings.priors == "hierarchical"
        self.hyper = [0.0, 1.0, 0.0, 1.0]  # mu_b, u_b, mu_g, u_g: the hyperpriors' means
        self.std = self.model == "4pl-standard"
        self.beta = {}  # Beta(alpha, beta) priors of the floor (2) / ceiling (3), per item; none = flat
        self.guess_mode, self.n_known_options = guess_modes(self.N, settings, n_options)
        self.ceiling_mode = float(settings.ceiling_prior)
        if self.c_free and settings.guess_prior_weight > 0:
            self.beta[2] = beta_params(self.guess_mode, settings.guess_prior_weight)
        if self.d_free and settings.ceiling_prior_weight > 0:
            self.beta[3] = beta_params(np.full(self.N, self.ceiling_mode), settings.ceiling_prior_weight)
        self.barrier = {k: int(np.flatnonzero(self.free == k)[0]) for k in self.beta}  # param -> free position
        lo = np.array([-np.inf, -np.inf, BOUND, BOUND])
        hi = np.array([np.inf, np.inf, 1 - BOUND, 1 - BOUND])
        self.lo, self.hi = lo[self.free], hi[self.free]
        self.cap = STEP_CAP[self.free]
        self.not_pd = 0
        self.counts = {"row_halvings": 0, "item_halvings": 0, "rows_reverted": 0, "items_reverted": 0,
                       "refined_items": 0}

    # -- priors --------------------------------------------------------------------------------
    def item_prior(self, X, idx=None):
        """Each item's prior term of the objective (``X`` the rows ``idx`` of the item table, or all)."""
        mu_b, u_b, mu_g, u_g = self.hyper
        out = 0.5 * u_b**2 * (X[:, 0] - mu_b) ** 2 + 0.5 * u_g**2 * (X[:, 1] - mu_g) ** 2
        sel = slice(None) if idx is None else idx
        for k, (al, be) in self.beta.items():
            out = out - (al[sel] - 1) * np.log(X[:, k]) - (be[sel] - 1) * np.log1p(-X[:, k])
        return out

    def item_prior_grad_curv(self, X, idx=None):
        """Gradient and curvature (diagonal) of the item prior terms."""
        mu_b, u_b, mu_g, u_g = self.hyper
        sel = slice(None) if idx is None else idx
        g = np.zeros_like(X)
        h = np.zeros_like(X)
        g[:, 0], h[:, 0] = u_b**2 * (X[:, 0] - mu_b), u_b**2
        g[:, 1], h[:, 1] = u_g**2 * (X[:, 1] - mu_g), u_g**2
        for k, (al, be) in self.beta.items():
            v, al, be = X[:, k], al[sel], be[sel]
            g[:, k] = -(al - 1) / v + (be - 1) / (1 - v)
            h[:, k] = (al - 1) / v**2 + (be - 1) / (1 - v) ** 2
        return g, h

    def hyper_terms(self):
        if not self.hier:
            return 0.0
        mu_b, u_b, mu_g, u_g = self.hyper
        return -self.N * math.log(u_b) + u_b - self.N * math.log(u_g) + u_g + 0.5 * (mu_b**2 + mu_g**2) / MU_SD**2

    def objective(self, theta, X, row):
        return float(row[:, 2].sum() + 0.5 * theta @ theta + self.item_prior(X).sum() + self.hyper_terms())

    # -- passes --------------------------------------------------------------------------------
    def stats(self, theta, X, col_info, rows=None, cols=None, row_info=True):
        return self.cells.stats(theta, np.exp(X[:, 1]), X[:, 0], X[:, 2], X[:, 3], col_info, rows, cols, row_info)

    def item_grad_info(self, X, col, with_info=True, idx=None):
        """Objective gradient (n, k) and Hessian (n, k, k) over the free item parameters.

        The Hessian is the observed one (likelihood's second derivatives plus the prior's curvature);
        where it is not positive definite its eigenvalues are raised (modified Newton), and ``self.not_pd``
        counts those items.
        """
        b, a = X[:, 0], np.exp(X[:, 1])
        C = {name: col[i] for name, i in IDX.items()}
        gl = np.stack([-a * C["G0"], a * (C["G1"] - b * C["G0"]), C["GC"], C["GD"]], 1)
        pg, ph = self.item_prior_grad_curv(X, idx)
        G = (-gl + pg)[:, self.free]
        if not with_info:
            return G, None
        a2 = a * a
        # -d2 loglik = sum v J J' - q d2P (J = dP/dparameter), in the column sums of crossdiff.irt.cells
        H = np.empty((X.shape[0], 4, 4))
        H[:, 0, 0] = a2 * (C["H0"] - C["S0"])
        H[:, 0, 1] = H[:, 1, 0] = -a2 * (C["H1"] - b * C["H0"]) + a2 * (C["S1"] - b * C["S0"]) + a * C["G0"]
        H[:, 1, 1] = a2 * (C["H2"] - 2 * b * C["H1"] + b * b * C["H0"]) \
            - a2 * (C["S2"] - 2 * b * C["S1"] + b * b * C["S0"]) - a * (C["G1"] - b * C["G0"])
        H[:, 0, 2] = H[:, 2, 0] = -a * (C["HC0"] + C["T0"])
        H[:, 1, 2] = H[:, 2, 1] = a * (C["HC1"] - b * C["HC0"] + C["T1"] - b * C["T0"])
        H[:, 0, 3] = H[:, 3, 0] = -a * (C["HD0"] - C["T0"])
        H[:, 1, 3] = H[:, 3, 1] = a * (C["HD1"] - b * C["HD0"] - C["T1"] + b * C["T0"])
        H[:, 2, 2] = C["HCC"]
        H[:, 3, 3] = C["HDD"]
        H[:, 2, 3] = H[:, 3, 2] = C["HCD"]
        H = H[:, self.free][:, :, self.free]
        k = np.arange(len(self.free))
        H[:, k, k] += ph[:, self.free]
        # eigenvalues only where a cheap test cannot rule out lambda_min < EIG_FLOOR lambda_max
        maybe = np.flatnonzero(~well_conditioned(H, EIG_FLOOR))
        if maybe.size:
            lam, vec = np.linalg.eigh(H[maybe])
            floor = np.maximum(EIG_FLOOR * np.abs(lam[:, -1:]), 1e-12)
            bad = (lam < floor).any(1)
            if bad.any():
                self.not_pd += int(bad.sum())
                lb = np.maximum(np.abs(lam[bad]), floor[bad])
                H[maybe[bad]] = np.einsum("nij,nj,nkj->nik", vec[bad], lb, vec[bad])
        return G, H

    # -- items ---------------------------------------------------------------------------------
    def projected(self, XF, G):
        """Projected gradient: zero where a bound holds the parameter and the gradient points outward."""
        at_lo, at_hi = XF <= self.lo, XF >= self.hi
        return np.where((at_lo & (G > 0)) | (at_hi & (G < 0)), 0.0, G)

    def reduced_solve(self, H, G, active):
        """Solve H p = G on the free, inactive parameters (active ones: identity); finite fallback."""
        Hr = np.where(active[:, :, None] | active[:, None, :], 0.0, H)
        k = np.arange(H.shape[1])
        Hr[:, k, k] = np.where(active, 1.0, H[:, k, k])
        Gr = np.where(active, 0.0, G)
        try:
            p = np.linalg.solve(Hr, Gr[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            p = np.full_like(Gr, np.nan)
        bad = ~np.isfinite(p).all(1) | ((p * Gr).sum(1) < 0)  # not a descent direction: diagonal step
        if bad.any():
            p[bad] = Gr[bad] / Hr[bad][:, k, k]
        return p

    def direction(self, X, G, H, omega=1.0):
        """Projected Newton direction (times the over-relaxation ``omega``) and its whole-step scale."""
        XF = X[:, self.free]
        diag = np.diagonal(H, axis1=1, axis2=2)
        moved = np.clip(XF - G / diag, self.lo, self.hi)
        eps = np.minimum(ACTIVE_EPS, np.sqrt(((XF - moved) ** 2).sum(1)))[:, None]
        active = ((XF <= self.lo + eps) & (G > 0)) | ((XF >= self.hi - eps) & (G < 0))
        p = -self.reduced_solve(H, G, active)
        p = np.where(active, -G / diag, p) * omega  # active: scaled gradient step, which the projection stops
        size = np.max(np.abs(p) / self.cap, axis=1)
        alpha = np.minimum(1.0, 1.0 / np.maximum(size, 1e-300))
        # a floor / ceiling with a Beta prior has its optimum inside (0, 1), and the prior is a log
        # barrier there: fraction-to-boundary rule, at most half the way to 0 or 1 in one step
        for k, pos in self.barrier.items():
            v, step = XF[:, pos], p[:, pos] * alpha
            room = np.where(step < 0, v, 1.0 - v)
            over = np.abs(step) > BARRIER_FRACTION * room
            alpha = np.where(over, alpha * BARRIER_FRACTION * room / np.maximum(np.abs(step), 1e-300), alpha)
        return p, alpha

    def trial(self, X, p, alpha):
        """Projected point X + alpha p; 4pl-standard: alpha halved where d - c < MIN_GAP (else no move)."""
        alpha = alpha.copy()
        out = X.copy()
        todo = np.arange(X.shape[0])
        for _ in range(40):
            XF = np.clip(X[todo][:, self.free] + alpha[todo, None] * p[todo], self.lo, self.hi)
            out[np.ix_(todo, self.free)] = XF
            if not self.std:
                break
            bad = out[todo, 3] - out[todo, 2] < MIN_GAP
            if not bad.any():
                break
            todo = todo[bad]
            alpha[todo] /= 2
        else:
            out[todo] = X[todo]
        return out

    # -- one Gauss-Seidel sweep's pieces -----------------------------------------------------------
    def check_rows(self, theta0, step, row, col, before):
        """Rows whose objective rose halve their ability step; row and column sums are corrected."""
        cur = step.copy()
        after = row[:, 2] + 0.5 * (theta0 + cur) ** 2
        tol = self.cells.eps * (1.0 + np.abs(before))
        idx = np.flatnonzero(after > before + tol)
        for h in range(HALVINGS + 1):
            if idx.size == 0:
                break
            self.counts["row_halvings"] += idx.size
            old_r, old_c = self.stats(theta0 + cur, self.X, True, rows=idx, row_info=False)
            if h == HALVINGS:
                cur[idx] = 0.0
                self.counts["rows_reverted"] += idx.size
            else:
                cur[idx] /= 2
            new_r, new_c = self.stats(theta0 + cur, self.X, True, rows=idx, row_info=False)
            col += new_c - old_c
            row[idx] = new_r
            if h == HALVINGS:
                break
            after_i = new_r[:, 2] + 0.5 * (theta0[idx] + cur[idx]) ** 2
            idx = idx[after_i > before[idx] + tol[idx]]
        return theta0 + cur

    def check_items(self, theta, X0, p, alpha, row, col, before):
        """Items whose objective rose halve their step; row and column sums are corrected."""
        X = self.trial(X0, p, alpha)
        after = col[IDX["NLL"]] + self.item_prior(X)
        tol = self.cells.eps * (1.0 + np.abs(before))
        idx = np.flatnonzero(after > before + tol)
        for h in range(HALVINGS + 1):
            if idx.size == 0:
                break
            self.counts["item_halvings"] += idx.size
            old_r, old_c = self.stats(theta, X, False, cols=idx)
            if h == HALVINGS:
                X[idx] = X0[idx]
                self.counts["items_reverted"] += idx.size
            else:
                alpha[idx] /= 2
                X[idx] = self.trial(X0[idx], p[idx], alpha[idx])
            new_r, new_c = self.stats(theta, X, False, cols=idx)
            row += new_r - old_r
            col[:, idx] = new_c
            if h == HALVINGS:
                break
            after_i = new_c[IDX["NLL"]] + self.item_prior(X[idx], idx)
            idx = idx[after_i > before[idx] + tol[idx]]
        return X

    def decrement(self, X, G, H):
        """Newton decrement sqrt(pg' H^-1 pg) per item (pg: projected gradient)."""
        pg = self.projected(X[:, self.free], G)
        p = self.reduced_solve(H, pg, pg == 0)
        return np.sqrt(np.maximum((p * pg).sum(1), 0.0))

    def refine(self, theta, X, idx, col):
        """Extra Newton iterations for the items ``idx`` alone (passes over their columns only).

        The few items that are far from their optimum when the rest have converged would otherwise
        each cost full sweeps; ``col`` holds their column sums at ``X[idx]``. Returns their new rows
        of the item table, each no worse than before.
        """
        Xs = X[idx].copy()
        cs = col[:, idx].copy()
        obj = cs[IDX["NLL"]] + self.item_prior(Xs, idx)
        live = np.arange(idx.size)
        for _ in range(REFINE_ITERS):
            G, H = self.item_grad_info(Xs[live], cs[:, live], idx=idx[live])
            dec = self.decrement(Xs[live], G, H)
            keep = dec > REFINE_DEC / 10
            live, G, H = live[keep], G[keep], H[keep]
            if live.size == 0:
                break
            p, alpha = self.direction(Xs[live], G, H)
            todo = np.arange(live.size)
            for _h in range(HALVINGS):
                T = self.trial(Xs[live[todo]], p[todo], alpha[todo])
                _, c_new = self.stats(theta, self._with(X, idx[live[todo]], T), True, cols=idx[live[todo]], row_info=False)
                new = c_new[IDX["NLL"]] + self.item_prior(T, idx[live[todo]])
                ok = new <= obj[live[todo]] + self.cells.eps * (1 + np.abs(obj[live[todo]]))
                good = live[todo[ok]]
                Xs[good], cs[:, good], obj[good] = T[ok], c_new[:, ok], new[ok]
                todo = todo[~ok]
                if todo.size == 0:
                    break
                alpha[todo] /= 2
            live = np.setdiff1d(live, live[todo])  # items that found no better point stop here
            if live.size == 0:
                break
        self.counts["refined_items"] += idx.size
        return Xs

    @staticmethod
    def _with(X, idx, rows):
        """A view-like copy of X with rows ``idx`` replaced (only those columns are read)."""
        out = X.copy()
        out[idx] = rows
        return out

    def invariances(self, theta, X, row):
        """Prior optimum along the likelihood-invariant location and scale directions (exact)."""
        mu_b, u_b, mu_g, u_g = self.hyper
        tb, tg = u_b**2, u_g**2

        def shift():
            nonlocal mu_b
            if self.hier:  # theta, b and mu_b together: only theta's N(0, 1) and mu_b's N(0, 1e6) move
                delta = -(theta.sum() + mu_b / MU_SD**2) / (self.M + MU_SD**-2)
                mu_b += delta
            else:
                delta = -(theta.sum() + tb * (X[:, 0] - mu_b).sum()) / (self.M + self.N * tb)
            theta[:] += delta
            X[:, 0] += delta

        shift()
        # scale: theta k, b k, log a - log k; f(l) on the priors, Newton in l = log k
        st, sb2, sbm = theta @ theta, X[:, 0] @ X[:, 0], mu_b * X[:, 0].sum()
        r = X[:, 1] - mu_g

        def f(ell):
            k = math.exp(ell)
            return 0.5 * k * k * st + 0.5 * tb * (k * k * sb2 - 2 * k * sbm) + 0.5 * tg * ((r - ell) ** 2).sum()

        ell, f0 = 0.0, f(0.0)
        for _ in range(30):
            k = math.exp(ell)
            d1 = k * k * st + tb * (k * k * sb2 - k * sbm) - tg * (r - ell).sum()
            d2 = 2 * k * k * st + tb * (2 * k * k * sb2 - k * sbm) + tg * self.N
            if d2 <= 0:
                break
            step = max(-0.5, min(0.5, -d1 / d2))
            while step and f(ell + step) > f0:
                step /= 2
                if abs(step) < 1e-12:
                    step = 0.0
            if not step:
                break
            ell += step
            f0 = f(ell)
            if abs(step) < 1e-12:
                break
        if ell:
            k = math.exp(ell)
            theta *= k
            X[:, 0] *= k
            X[:, 1] -= ell
            row[:, 0] /= k
            row[:, 1] /= k * k
            row[:, 3] /= k * k
        shift()
        self.hyper = [mu_b, u_b, mu_g, u_g]

    def update_hyper(self, X):
        from crossdiff.irt.fast import _gamma_normal_precision

        mu_b, u_b, mu_g, u_g = self.hyper
        b, eta = X[:, 0], X[:, 1]
        mu_b = u_b**2 * b.sum() / (self.N * u_b**2 + MU_SD**-2)
        u_b = _gamma_normal_precision(float(((b - mu_b) ** 2).sum()), self.N)
        mu_g = float(np.clip(u_g**2 * eta.sum() / (self.N * u_g**2 + MU_SD**-2), -MU_G_CLAMP, MU_G_CLAMP))
        u_g = max(_gamma_normal_precision(float(((eta - mu_g) ** 2).sum()), self.N), 1.0 / SD_G_MAX)
        self.hyper = [mu_b, u_b, mu_g, u_g]

    @staticmethod
    def theta_curvature(row):
        """-d2 log posterior / d theta^2: observed where positive, else the Fisher information."""
        return np.where(row[:, 3] > 0, row[:, 3], row[:, 1]) + 1.0

    def criterion(self, theta, X, row, col, H):
        """Newton decrements (abilities, items) and the projected gradient at the current point."""
        g_t = -row[:, 0] + theta
        h_t = self.theta_curvature(row)
        dec_t = np.abs(g_t) / np.sqrt(h_t)
        G, _ = self.item_grad_info(X, col, with_info=False)
        pg = self.projected(X[:, self.free], G)
        if H is None:
            dec_i = np.full(self.N, np.inf)
        else:
            p = self.reduced_solve(H, pg, pg == 0)
            dec_i = np.sqrt(np.maximum((p * pg).sum(1), 0.0))
        return dec_t, dec_i, g_t, pg


def _q95(v: np.ndarray) -> float:
    """95% quantile; inf where not every value is finite (the first sweep has no item Hessian yet)."""
    if v.size == 0:
        return 0.0
    return float(np.quantile(v, 0.95)) if np.isfinite(v).all() else math.inf


def _optimise(F: _Fit, theta, X, gtol: float, ftol: float, max_iter: int, progress: bool, label: str):
    """Gauss-Seidel sweeps from (theta, X) until the stopping rule or ``max_iter`` sweeps (module docstring)."""
    N = X.shape[0]
    row, col = F.stats(theta, X, False)
    H = None
    pending = None
    obj_prev, obj_change = None, float("inf")
    it, converged = 0, False
    history = []
    while True:
        if pending is not None:  # the item step of the last sweep: back off where the objective rose
            X0, p, alpha, before = pending
            X = F.check_items(theta, X0, p, alpha, row, col, before)
            F.X = X
        obj = F.objective(theta, X, row)
        dec_t, dec_i, g_t, pg = F.criterion(theta, X, row, col, H)
        crit = float(max(dec_t.max(initial=0.0), dec_i.max(initial=0.0)))
        if obj_prev is not None:
            obj_change = obj_prev - obj
        history.append(obj)
        if progress:
            print(f"[fast {label}] sweep {it}: objective {obj:.6f} change {obj_change:.3g} "
                  f"max Newton decrement {crit:.3g}", flush=True)
        if it > 0 and crit <= gtol and abs(obj_change) <= ftol * max(1.0, abs(obj)):
            converged = True
            break
        if it >= max_iter:
            break
        it += 1
        obj_prev = obj
        F.invariances(theta, X, row)
        if F.hier:
            F.update_hyper(X)
        # abilities
        # over-relax once most parameters are in the Newton region (a few slow items are refined alone)
        bulk = max(_q95(dec_t), _q95(dec_i))
        omega = OMEGA if bulk < SOR_BELOW else 1.0
        step = np.clip(omega * (row[:, 0] - theta) / F.theta_curvature(row), -THETA_CAP, THETA_CAP)
        before = row[:, 2] + 0.5 * theta**2
        row, col = F.stats(theta + step, X, True, row_info=False)  # the items' pass: rows need only their objective
        theta = F.check_rows(theta, step, row, col, before)
        # items
        G, H = F.item_grad_info(X, col)
        p, alpha = F.direction(X, G, H, omega)
        before = col[IDX["NLL"]] + F.item_prior(X)
        trial = F.trial(X, p, alpha)
        dec_now = F.decrement(X, G, H)
        hard = np.flatnonzero(dec_now > REFINE_DEC)
        if hard.size > REFINE_SHARE * N:  # the slowest REFINE_SHARE of the items
            hard = hard[np.argsort(-dec_now[hard])[:int(REFINE_SHARE * N)]]
        if hard.size:  # the slow items: iterate them alone, then take the result as their step
            trial[hard] = F.refine(theta, X, hard, col)
            p[hard] = (trial[hard] - X[hard])[:, F.free]
            alpha[hard] = 1.0
        pending = (X, p, alpha, before)
        row, col = F.stats(theta, trial, False)

    return theta, X, {"iterations": it, "converged": converged, "criterion": crit, "objective": obj,
                      "objective_change": obj_change, "history": history, "g_t": g_t, "pg": pg}


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False,
        n_options=None) -> EngineResult:
    """Converged MAP of the 3PL / 4PL / standard 4PL; see the module docstring."""
    check_matrix(Y, observed)
    model = settings.model
    if model not in MODELS:
        raise ValueError(f"asymptote engine: model {model!r}; expected 3pl, 4pl or 4pl-standard")
    from crossdiff.irt import fast

    start = time.perf_counter()
    M, N = Y.shape
    init = fast.fit(Y, observed, dataclasses.replace(settings, model="1pl", priors="vague"))
    t_init = time.perf_counter() - start
    F = _Fit(Y, observed, settings, n_options)
    theta = init.ability.copy()
    X = np.zeros((N, 4))
    X[:, 0] = init.difficulty
    X[:, 2], X[:, 3] = START[model]
    if 2 in F.beta:
        X[:, 2] = np.clip(F.guess_mode, 0.01, 0.5)
    if 3 in F.beta:
        X[:, 3] = np.clip(F.ceiling_mode, 0.6, 1 - 1e-3)
    X[:, F.free] = np.clip(X[:, F.free], F.lo, F.hi)
    # the 1PL's item curve matched at its midpoint: P = 1/2 at the 1PL's b and the same slope there
    c0, d0 = X[:, 2], X[:, 3]
    mid = np.clip((0.5 - c0) / (d0 - c0), 0.05, 0.95)  # sigmoid(a (theta - b)) where P = 1/2
    a0 = np.clip(0.25 / ((d0 - c0) * mid * (1 - mid)), START_A[0], START_A[1])
    X[:, 1] = np.log(a0)
    X[:, 0] = init.difficulty - np.log(mid / (1 - mid)) / a0
    F.X = X
    gtol, ftol = settings.gtol, settings.tol
    theta, X, state = _optimise(F, theta, X, gtol, ftol, settings.max_iter, progress, model)
    it, converged, crit, obj, obj_change, history, g_t, pg = (state[k] for k in (
        "iterations", "converged", "criterion", "objective", "objective_change", "history", "g_t", "pg"))

    # the information at the returned point: standard errors
    row_f, col_f = F.stats(theta, X, True)
    G, H = F.item_grad_info(X, col_f)
    free_var = np.linalg.inv(H)
    h_t = F.theta_curvature(row_f)
    mu_b, u_b, mu_g, u_g = F.hyper
    c, d = X[:, 2], X[:, 3]
    lambdas = c if model == "3pl" else (d if model == "4pl" else None)
    at_bound = {name: int(((X[:, k] <= BOUND) | (X[:, k] >= 1 - BOUND)).sum())
                for name, k in (("c", 2), ("d", 3)) if k in F.free}
    priors = {"theta": "N(0, 1)", "b": f"N({mu_b:.6g}, sd {1 / u_b:.6g})", "log_a": f"N({mu_g:.6g}, sd {1 / u_g:.6g})",
              "mu_b": float(mu_b), "sd_b": float(1 / u_b), "mu_log_a": float(mu_g), "sd_log_a": float(1 / u_g)}
    for k, name, key in ((2, "guess", "guess_prior"), (3, "ceiling", "ceiling_prior")):
        if k not in F.free:
            continue
        label = name if F.std else "lambdas"
        if k not in F.beta:
            priors[label] = f"flat on [{BOUND:g}, {1 - BOUND:g}] (irt.{key}_weight: 0; py-irt's lambdas have no prior)"
            continue
        w = getattr(settings, f"{key}_weight")
        if k == 2:
            where = (f"m = 1 / n_options for the {F.n_known_options} items whose options count the item table gives, "
                     f"m = {settings.guess_prior:g} (irt.guess_prior) for the other {N - F.n_known_options}")
        else:
            where = f"m = {F.ceiling_mode:g} (irt.ceiling_prior)"
        priors[label] = f"{name}: Beta({w:g} m + 1, {w:g} (1 - m) + 1) (mode m, irt.{key}_weight {w:g}); {where}"
    priors["items_with_options_count"] = F.n_known_options
    info = {
        "iterations": it,
        "converged": converged,
        "criterion": crit,
        "criterion_name": "max Newton decrement sqrt(pg' H^-1 pg) over abilities and items (posterior sds)",
        "convergence_rule": f"max Newton decrement <= gtol {gtol:g} and |objective change in the last sweep| "
                            f"<= tol {ftol:g} x max(1, |objective|)",
        "projected_gradient_max_abs": float(max(np.abs(g_t).max(initial=0.0), np.abs(pg).max(initial=0.0))),
        "projected_gradient_norm": float(math.sqrt((g_t @ g_t) + (pg * pg).sum())),
        "objective": obj,
        "objective_change_last_sweep": float(obj_change),
        "objective_name": "negative log posterior (constants dropped)",
        "objective_monotone": bool(all(b <= a + F.cells.eps * max(1.0, abs(a)) for a, b in zip(history, history[1:]))),
        "start": "fast 1PL fit (%.2f s); b, a: the 1PL's curve matched at P = 1/2; c = %s, d = %s" % (
            t_init, "prior mode" if 2 in F.beta else START[model][0], "prior mode" if 3 in F.beta else START[model][1]),
        "parameters_at_bounds": at_bound,
        "backtracking": dict(F.counts),
        "items_hessian_not_positive_definite": F.not_pd,
        "priors": priors,
        "kernel": F.cells.kernel,
        "kernel_note": F.cells.kernel_note,
        "device": "cpu",
        "wall_s": time.perf_counter() - start,
    }
    return EngineResult(
        ability=theta,
        difficulty=X[:, 0].copy(),
        difficulty_sd=np.sqrt(free_var[:, 0, 0]),
        discrimination=np.exp(X[:, 1]),
        ability_sd=1.0 / np.sqrt(h_t),
        lambdas=None if lambdas is None else lambdas.copy(),
        guess=c.copy() if F.std else None,
        ceiling=d.copy() if F.std else None,
        model=model,
        info=info,
    )
