"""The ``py-irt-compatible`` engine: py-irt 0.7.1's default SVI, replayed fast on the dense matrix.

What is replicated
------------------
py-irt (``py_irt/training.py``, ``models/one_param_logistic.py``, ``two_param_logistic.py``) fits a
mean-field guide by pyro's ``Trace_ELBO`` SVI. For the same seed (``pyro.set_rng_seed(seed)`` before
training, as ``crossdiff.irt.pyirt_engine`` does; py-irt itself ignores ``IrtConfig.seed``) this
module replays it step for step:

* item order = order of first appearance in the jsonlines file (row-major over observed cells);
  each item's random draws follow that order (models keep row order: every row has a response);
* before the loop py-irt runs the model and then the guide once: they draw M, N [and N for the 2PL
  discrimination] standard normals each, which only advances torch's random stream;
* guide: theta ~ N(loc_ability, scale_ability), b ~ N(loc_diff, scale_diff) [2PL: a ~
  LogNormal(loc_slope, scale_slope)], initialised at loc 0 and scale 1 (ability), 1000 (1PL
  difficulty), 10 (2PL difficulty), 1e-6 (2PL slope); scales are optimised as u = log(scale);
  priors N(0, 1) (ability), N(0, 1000) (1PL difficulty), N(0, 0.1) (2PL difficulty),
  LogNormal(0, 0.1) (2PL slope);
* each epoch: one reparameterised draw ``z = loc + eps * scale``; ``eps`` comes from
  ``torch.empty(n).normal_()`` calls of the same sizes in the same order as pyro's ``rsample``
  (guide sites theta, b [, a]; the model replays them), so the noise is bit-identical;
* loss = Trace_ELBO's ``sum log q(z) - sum log p(z) - sum log p(y | z)``; then torch Adam (lr 0.1,
  betas (0.9, 0.999), eps 1e-8) and ExponentialLR (``lr *= gamma`` after each step). The Adam step
  is torch's single-tensor code path (``foreach=False``, pyro's default on CPU) op for op -- ``lerp_``,
  ``mul_``/``addcmul_``, ``sqrt``/``div_``/``add_``, ``addcdiv_`` with the same Python-float
  coefficients -- applied once to all parameters laid end to end in one flat float32 tensor. That is
  elementwise identical to pyro's one optimizer per parameter: all share lr, step and schedule;
* output: ``best_params`` = the locations right after the step whose (pre-step) loss was lowest;
  the posterior sds are the final scales, as py-irt's param store holds them.

Only floating-point rounding differs (sums in another order, closed forms instead of autograd's
chain of float32 ops). Measured against real py-irt (tests/test_irt_compat.py,
benchmarks/compat_profile.py): ~1e-6 max abs difference for the 1PL (complete or with 30% missing
cells, 2000 epochs at 500 x 1000); for the 2PL ~1e-5 on abilities/difficulties and ~2e-4 on
discriminations (the slope scale starts at 1e-6, where float32 rounding of ``z - loc`` inside
pyro's log-density is relatively large, and this replay does not mirror it). The loss is accurate
to ~1e-8 relative, finer than the float32 rounding of py-irt's own loss, so the same epoch is "best".

Why it is fast
--------------
py-irt spends most of an epoch in pyro/autograd bookkeeping over a flat list of responses. Here there
is no autograd, no optimizer object and no per-response indexing; an epoch is ~45 torch calls on
preallocated buffers, and the per-cell work is a handful of vectorised passes with (almost) no
transcendental function per cell:

* O(M + N) terms in closed form: with ``z = loc + eps * s``, ``s = exp(u)``, the gradients are
  ``dL/dloc = z / var_prior + dNLL/dz`` and ``dL/du = dL/dloc * eps * s - 1`` (the guide's entropy
  gives exactly -1), and the prior/guide part of the loss is
  ``sum z^2 / (2 var_prior) - sum eps^2 / 2 - sum u + sum log(prior scale)``
  (the 2 pi constants cancel; a LogNormal's log-Jacobian appears in model and guide and cancels).
* Likelihood (see :class:`_DenseBernoulli`): with ``T = 1 + exp(x)`` per cell (1PL: one
  ``addr`` outer product of ``exp(theta)`` and ``exp(-b)``, no ``exp`` per cell),
  ``R = 1 / T = 1 - sigmoid(x)``:
  ``NLL = sum_observed log T - sum_observed y x``; the second sum is O(M + N) for the 1PL
  (``sum_i k_i theta_i - sum_j c_j b_j`` with k, c the success counts per row/column); the gradients
  are row and column sums of R. Missing cells get T = 1 (R = 1, log T = 0) through the additive
  ``bias`` matrix and a clamp, so they cost nothing extra.
* ``sum log T`` takes one ``log`` per 2^k cells (k up to 6): the buffer is halved k times by
  multiplying its halves, in float32 while products of 2^k cells stay below e^87, then in float64.
  ``T`` is capped at ``1 + e^20`` (sigmoid is 1 in float32 beyond that) so that products stay
  bounded; the part of ``log T`` above the cap is added back exactly: columns entirely above it in
  closed form, the few straddling it cell by cell.
* Threads: 1 torch thread below ~16M cells (with ``OMP_WAIT_POLICY=PASSIVE`` every parallel region
  wakes sleeping threads, which costs more than it saves on small passes), else min(2, cores).

A stable path (softplus/sigmoid of ``(1 - 2y) x``, allocating) serves epochs with |theta| > 30, which
do not happen in practice. Hierarchical priors are not implemented (:class:`CompatNotSupported`).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix


class CompatNotSupported(NotImplementedError):
    """Raised for model/prior combinations the compatible engine does not replay."""


SUPPORTED = {("1pl", "vague"), ("2pl", "vague")}
# guide's initial difficulty scale and the model's difficulty prior scale, per model (py-irt 0.7.1)
INIT_SCALE_DIFF = {"1pl": 1.0e3, "2pl": 1.0e1}
PRIOR_SCALE_DIFF = {"1pl": 1.0e3, "2pl": 0.1}
PRIOR_SCALE_LOG_SLOPE = 0.1
INIT_SCALE_SLOPE = 1.0e-6
# Adam's defaults, as py-irt uses them (pyro.optim wrapping torch.optim.Adam with only lr set)
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8

BLOCK_CELLS = 1 << 20  # cells per row block of the likelihood work arrays (4 MiB of float32)
SINGLE_THREAD_CELLS = 1 << 24  # below this many cells one torch thread is as fast or faster (module docstring)
CLAMP_LOGIT = 20.0  # T = 1 + exp(x) is capped at 1 + e^20; sigmoid(x) rounds to 1 in float32 there
CAP = 1.0 + math.exp(CLAMP_LOGIT)
MISSING_BIAS = -3.0e38  # added to 1 + w on missing cells, which a clamp at 1 then sets to T = 1
SAFE_ABILITY = 30.0  # fast path while |theta| <= 30 (exp(theta) and the outer product stay finite)
SAFE_SLOPE = 1.0e3  # and 2PL slopes <= 1e3
LOG_PRODUCT_MAX = 87.0  # products of cells of T stay below e^87 in float32 (max ~e^88.7)
LOG_PRODUCT_MAX_64 = 700.0  # and below e^700 in float64 (max ~e^709.8)
MAX_HALVINGS = 6  # at most one log per 64 cells


def pyirt_item_order(observed: np.ndarray) -> np.ndarray:
    """Column indices in py-irt's internal item order (first appearance, row-major)."""
    rows = np.where(observed.any(0), observed.argmax(0), observed.shape[0])
    return np.lexsort((np.arange(observed.shape[1]), rows))


class _DenseBernoulli:
    """Bernoulli negative log-likelihood of the observed cells and its gradient, on the dense matrix.

    ``evaluate(z, g)`` takes the sample ``z = [theta (M), b (N), (log a (N))]`` and returns
    NLL = sum over observed cells of ``softplus(x) - y x`` with logit ``x = a_j (theta_i - b_j)``
    (a = 1 for the 1PL); it writes dNLL/dz into ``g``.

    Per row block: ``T = 1 + exp(x)`` (1 on missing cells, capped at CAP), ``R = 1 / T``, which is
    ``1 - p`` on observed cells and 1 on missing ones, so the sum over observed cells of ``p - y``
    along row i is ``N - sum_j R_ij - k_i`` and along column j is ``M - sum_i R_ij - c_j``.
    """

    def __init__(self, Y: np.ndarray, observed: np.ndarray, two_pl: bool, device, torch):
        self.torch = torch
        M, N = Y.shape
        self.M, self.N, self.two_pl = M, N, two_pl
        f32 = dict(dtype=torch.float32, device=device)
        observed = np.ascontiguousarray(observed)  # row-major: column-permuted arrays are not
        y_obs = np.ascontiguousarray(Y.astype(bool) & observed)
        self.masked = not observed.all()
        self.y_obs = torch.from_numpy(y_obs).to(device)  # for the stable path
        self.Ym = self.y_obs.float() if two_pl else None
        # observed mask as items x models (float32) and observed responses per item, for the cap excess
        self.obsT = (torch.from_numpy(np.ascontiguousarray(observed.T, dtype=np.float32)).to(device)
                     if self.masked else None)
        self.n_obs = torch.from_numpy(observed.sum(0).astype(np.float64)).to(device)
        rows = max(1, min(M, BLOCK_CELLS // N))
        self.blocks = [(i, min(i + rows, M)) for i in range(0, M, rows)]
        # addr's input: 1 on observed cells, MISSING_BIAS on missing ones (the whole matrix if masked)
        self.bias = (torch.from_numpy(np.where(observed, np.float32(1.0), np.float32(MISSING_BIAS))).to(device)
                     if self.masked else torch.ones(rows, N, **f32))
        k = y_obs.sum(1).astype(np.float32)  # successes per row
        c = y_obs.sum(0).astype(np.float32)  # successes per column
        self.c = torch.from_numpy(c).to(device)
        self.kc = torch.from_numpy(np.concatenate([k, -c])).to(device)  # sum_obs y x = kc . [theta, b]
        self.N_minus_k = torch.from_numpy(N - k).to(device)
        self.c_minus_M = torch.from_numpy(c - M).to(device)
        cells = rows * N
        padded = cells + (1 << MAX_HALVINGS)
        self.T = torch.ones(padded, **f32)  # 1 + w, with room for padding ones for the halvings
        self.R = torch.empty(cells, **f32)  # 1 / T
        self.H = torch.empty(padded // 2, **f32)  # products of 2, 4 [, 8] cells of T
        self.H64 = torch.empty(padded // 4, dtype=torch.float64, device=device)  # and on, in float64
        self.u, self.v = torch.empty(M, **f32), torch.empty(N, **f32)
        self.col_blk = torch.empty(N, **f32)
        self.colt = torch.empty(N, **f32)  # sum_i theta_i R_ij (2PL; 1PL: cap excess)
        if two_pl:
            self.a, self.ab = torch.empty(N, **f32), torch.empty(N, **f32)
            self.ya, self.ty = torch.empty(M, **f32), torch.empty(N, **f32)
        self.stable_epochs = 0
        self._bound = None

    def _views(self, z, g):
        """Views of z, g and the work arrays, made once: slicing costs ~1 us a call."""
        M, N = self.M, self.N
        if self._bound is not None and self._bound[0] is z and self._bound[1] is g:
            return self._bound[2]
        blocks = []
        for r0, r1 in self.blocks:
            n = (r1 - r0) * N
            blocks.append((r0, r1, n, self.T[:n].view(r1 - r0, N), self.R[:n].view(r1 - r0, N),
                           self.bias[r0:r1] if self.masked else self.bias[:r1 - r0], self.u[r0:r1],
                           z[r0:r1], g[r0:r1]))
        v = (z[:M], z[M:M + N], z[:M + N], g[:M], g[M:M + N], blocks)
        self._bound = (z, g, v)
        return v

    def evaluate(self, z, g) -> float:
        torch = self.torch
        M, N = self.M, self.N
        theta, b, theta_b, g_theta, g_b, blocks = self._views(z, g)
        t_lo, t_hi = (float(x) for x in torch.aminmax(theta))
        if self.two_pl:
            a = torch.exp(z[M + N:], out=self.a)
            torch.mul(a, b, out=self.ab)
            x_top = a * t_hi - self.ab  # per column, the largest logit
            x_hi = float(x_top.max())
            fast = float(a.max()) <= SAFE_SLOPE
        else:
            a, x_top = None, None
            x_hi = t_hi - float(b.min())
            fast = True
        if not (fast and -SAFE_ABILITY <= t_lo and t_hi <= SAFE_ABILITY and math.isfinite(x_hi)):
            self.stable_epochs += 1
            return self._evaluate_stable(theta, b, a, g)
        over = x_hi > CLAMP_LOGIT  # some cells are capped
        x_cap = min(x_hi, CLAMP_LOGIT)
        per_cell = max(x_cap, 0.0) + math.log1p(math.exp(-abs(x_cap)))  # log T <= this in every cell
        nll, full = 0.0, None
        if over:  # cells above the cap: straddling columns now, whole columns once R is known
            full, excess = self._excess_partial(theta, b, a, t_hi - b if x_top is None else x_top, t_lo)
            nll += excess
        need_colt = a is not None or (full is not None and self.masked)
        if a is None:
            torch.exp(theta, out=self.u)
            # u_i v_j <= e^85: finite, so that T <= e^85 + 1 and missing cells' MISSING_BIAS + u v < 1
            torch.neg(b, out=self.v).clamp_(-87.0, 85.0 - t_hi).exp_()

        col = g_b  # column sums of R accumulate here
        for r0, r1, n, T, R, bias, u, theta_blk, g_theta_blk in blocks:
            if a is None:
                torch.addr(bias, u, self.v, out=T)  # 1 + exp(theta_i - b_j) (or < 1: missing)
                if self.masked:
                    T.clamp_(1.0, CAP if over else None)
                elif over:
                    T.clamp_(max=CAP)
            else:
                torch.sub(theta_blk[:, None], b[None, :], out=T).mul_(a)  # x = a_j (theta_i - b_j)
                if over:
                    T.clamp_(max=CLAMP_LOGIT)
                T.exp_().add_(bias)
                if self.masked:
                    T.clamp_(min=1.0)
            nll += self._sum_log_T(n, per_cell)
            torch.reciprocal(T, out=R)
            if r0 == 0:
                torch.sum(R, 0, out=col)
            else:
                col.add_(torch.sum(R, 0, out=self.col_blk))
            if a is None:
                torch.sum(R, 1, out=g_theta_blk)
            else:
                torch.mv(R, a, out=g_theta_blk)
            if need_colt:
                if r0 == 0:
                    torch.mv(R.t(), theta_blk, out=self.colt)
                else:
                    self.colt.add_(torch.mv(R.t(), theta_blk, out=self.col_blk))

        if full is not None:
            nll += self._excess_full(theta, b, a, full)
        if a is None:
            torch.sub(self.N_minus_k, g_theta, out=g_theta)  # sum_j (p - y)
            g_b.add_(self.c_minus_M)  # -sum_i (p - y)
            return nll - float(torch.dot(self.kc, theta_b))  # minus sum_obs y x
        torch.mv(self.Ym, a, out=self.ya)
        torch.mv(self.Ym.t(), theta, out=self.ty)
        g_theta.neg_().add_(float(a.sum())).sub_(self.ya)  # sum_j a_j (p - y)
        col.neg_().add_(M).sub_(self.c)  # sum_i (p - y), in g_b for the moment
        g_a = g[M + N:]
        # d/da_j = sum_i (p - y)(theta_i - b_j); then through a = exp(log a)
        torch.sub(float(theta.sum()) - self.ty, self.colt, out=g_a).sub_(b * col).mul_(a)
        g_b.mul_(a).neg_()
        return nll - (float(torch.dot(theta, self.ya)) - float(torch.dot(self.ab, self.c)))

    def _sum_log_T(self, n: int, per_cell: float) -> float:
        """sum(log(T[:n])) for 1 <= T <= e^per_cell, with one ``log`` per 2^k cells.

        Halving the buffer (multiplying its two halves) k times leaves products of 2^k cells:
        in float32 while they stay below e^LOG_PRODUCT_MAX (k32 = 2 or 3 halvings, since
        per_cell <= ~CLAMP_LOGIT), then in float64 below e^LOG_PRODUCT_MAX_64. T is padded with ones
        (log 1 = 0) to a multiple of 2^k cells. Overwrites the padding only.
        """
        torch = self.torch
        k32 = 1
        while k32 < 3 and per_cell * (2 << k32) <= LOG_PRODUCT_MAX:
            k32 += 1
        k = k32
        while k < MAX_HALVINGS and per_cell * (2 << k) <= LOG_PRODUCT_MAX_64:
            k += 1
        padded = -(-n >> k) << k
        if padded > n:
            self.T[n:padded].fill_(1.0)
        half = padded // 2
        torch.mul(self.T[:half], self.T[half:padded], out=self.H[:half])
        for _ in range(k32 - 1):
            half //= 2
            torch.mul(self.H[:half], self.H[half:2 * half], out=self.H[:half])
        H64 = self.H64[:half]
        H64.copy_(self.H[:half])
        for _ in range(k - k32):
            half //= 2
            torch.mul(H64[:half], H64[half:2 * half], out=H64[:half])
        return float(torch.log_(H64[:half]).sum())

    def _excess_partial(self, theta, b, a, x_top, t_lo: float):
        """Excess of log T over the cap (see below) in the columns that straddle the cap.

        Returns (mask of the columns entirely above the cap or None, their excess being left to
        :meth:`_excess_full`, and the straddling columns' excess).

        Capping T at CAP leaves out sum over observed cells of relu(x - CLAMP_LOGIT):
        log(1 + e^x) = x + O(e^-x), so above the cap log T is ``log CAP + (x - CLAMP_LOGIT)``
        to within e^-20. Straddling columns are few (their b lies within the range of theta);
        they are summed cell by cell.
        """
        torch = self.torch
        C = CLAMP_LOGIT
        x_bot = t_lo - b if a is None else a * (t_lo - b)
        full = x_bot >= C
        total = 0.0
        part = torch.nonzero((x_top > C) & (x_bot < C)).squeeze(1)
        if part.numel():
            if a is None:  # straddling columns x models: relu(x - C)
                x = torch.sub(theta[None, :], b.index_select(0, part).add_(C)[:, None]).relu_()
            else:
                a_part = a.index_select(0, part)[:, None]
                x = torch.sub(theta[None, :], b.index_select(0, part)[:, None]).mul_(a_part).sub_(C).relu_()
            if self.masked:
                total += float(torch.dot(x.view(-1), self.obsT.index_select(0, part).view(-1)))
            else:
                total += float(x.sum())
        return (full if bool(full.any()) else None), total

    def _excess_full(self, theta, b, a, full) -> float:
        """Excess over the cap of the columns entirely above it: ``a_j (sum_obs theta - n_j b_j) - n_j C``.

        sum_obs theta of such a column comes from ``colt = theta @ R`` without another pass: there
        R is 1 / CAP on observed cells and 1 on missing ones, so colt = sum(theta) - (1 - 1/CAP)
        sum_obs theta.
        """
        torch = self.torch
        theta_sum = float(theta.double().sum())
        if self.masked:
            r_cap = 1.0 / float(torch.tensor(CAP, dtype=torch.float32))
            obs_theta = (theta_sum - self.colt.double()) / (1.0 - r_cap)
        else:
            obs_theta = theta_sum
        slope = 1.0 if a is None else a.double()
        e = slope * (obs_theta - self.n_obs * b.double()) - self.n_obs * CLAMP_LOGIT
        return float(torch.dot(e, full.double()))

    def _evaluate_stable(self, theta, b, a, g) -> float:
        """Any logits: softplus / sigmoid of (1 - 2y) x over the whole matrix, allocating freely."""
        torch = self.torch
        M, N = self.M, self.N
        x = theta[:, None] - b[None, :]
        if a is not None:
            x.mul_(a)
        s = 1.0 - 2.0 * self.y_obs.float()
        if self.masked:
            s.mul_(self.obsT.t())  # 0 on missing cells
        sx = s * x
        nll = float(torch.nn.functional.softplus(sx).sum(dtype=torch.float64))
        nll -= float(M * N - self.n_obs.sum()) * math.log(2.0)  # softplus(0) on missing cells
        r = torch.sigmoid(sx).mul_(s)  # (p - y) on observed cells, 0 elsewhere
        if a is None:
            torch.sum(r, 1, out=g[:M])
            torch.sum(r, 0, out=g[M:]).neg_()
        else:
            torch.mv(r, a, out=g[:M])
            col = r.sum(0)
            torch.mul(a, col, out=g[M:M + N]).neg_()
            torch.sub(theta @ r, b * col, out=g[M + N:]).mul_(a)
        return nll


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    """Replay py-irt's SVI for ``settings.epochs`` epochs; see the module docstring."""
    check_matrix(Y, observed)
    if (settings.model, settings.priors) not in SUPPORTED:
        raise CompatNotSupported(
            f"py-irt-compatible replays {', '.join('/'.join(s) for s in sorted(SUPPORTED))} only, "
            f"not {settings.model}/{settings.priors}; use engine 'py-irt' (slow) or 'fast'")
    if not observed.any(0).all():
        raise ValueError("some items have no observed response; filter them first (py-irt cannot see them)")
    if not observed.any(1).all():
        raise ValueError("some models have no observed response; filter them first (py-irt cannot see them)")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import pyro
    import torch

    start = time.perf_counter()
    M, N = Y.shape
    threads_before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    torch.set_num_threads(settings.threads or (1 if M * N < SINGLE_THREAD_CELLS else max(1, min(2, cores))))
    device = torch.device("cuda" if settings.device == "cuda"
                          or (settings.device == "auto" and torch.cuda.is_available()) else "cpu")
    two_pl = settings.model == "2pl"
    order = pyirt_item_order(observed)
    try:
        with torch.no_grad():
            lik = _DenseBernoulli(Y[:, order], observed[:, order], two_pl, device, torch)
            best_loc, scales, best_epoch, best_loss, loss = _svi(lik, settings, device, pyro, torch, progress)
    finally:
        torch.set_num_threads(threads_before)

    def back(t):
        """py-irt's item order back to ours."""
        out = np.empty(N)
        out[order] = t.double().cpu().numpy()
        return out

    return EngineResult(
        ability=best_loc[:M].double().cpu().numpy(),
        difficulty=back(best_loc[M:M + N]),
        difficulty_sd=back(scales[M:M + N]),
        discrimination=back(best_loc[M + N:].exp()) if two_pl else None,
        ability_sd=scales[:M].double().cpu().numpy(),
        info={
            "iterations": settings.epochs,
            "converged": None,
            "criterion": "fixed number of SVI epochs (py-irt default: no convergence check)",
            "best_epoch": best_epoch,
            "objective": best_loss,
            "objective_name": "lowest single-sample negative ELBO (py-irt's best_loss)",
            "final_loss": loss,
            "stable_path_epochs": lik.stable_epochs,
            "device": str(device),
            "wall_s": time.perf_counter() - start,
        },
    )


def _svi(lik: _DenseBernoulli, settings: IrtSettings, device, pyro, torch, progress):
    """The SVI loop on flat float32 tensors.

    Returns (best locations, final scales, best epoch, best loss, last loss); locations and scales
    are laid out as the sample: [ability (M), difficulty (N), (log slope (N))].
    """
    f32 = dict(dtype=torch.float32, device=device)
    M, N = lik.M, lik.N
    sizes = [M, N] + ([N] if lik.two_pl else [])  # theta, b [, log a]: the guide's sample order
    K = sum(sizes)
    bounds = np.cumsum([0] + sizes).tolist()

    def views(t):
        return [t[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]

    # parameters end to end: [loc_ability, loc_diff, (loc_slope), u_ability, u_diff, (u_slope)], u = log scale
    params = torch.zeros(2 * K, **f32)
    loc, log_s = params[:K], params[K:]
    init_scales = [1.0, INIT_SCALE_DIFF[settings.model]] + ([INIT_SCALE_SLOPE] if lik.two_pl else [])
    for view, s0 in zip(views(log_s), init_scales):
        view.copy_(torch.log(torch.full_like(view, s0)))  # pyro stores log(init) in float32
    # prior variances as torch.distributions.Normal computes them (scale ** 2 in float32)
    prior_scales = [1.0, PRIOR_SCALE_DIFF[settings.model]] + ([PRIOR_SCALE_LOG_SLOPE] if lik.two_pl else [])
    var_prior = torch.empty(K, **f32)
    for view, sp in zip(views(var_prior), prior_scales):
        view.fill_(float(torch.tensor(sp, dtype=torch.float32) ** 2))
    # -sum log p(z) carries + sum log(prior scale); the 2 pi constants of log p and log q cancel
    const = sum(n * math.log(float(torch.tensor(sp, dtype=torch.float32))) for n, sp in zip(sizes, prior_scales))

    grad = torch.zeros(2 * K, **f32)
    g_loc, g_u = grad[:K], grad[K:]
    exp_avg, exp_avg_sq, denom = (torch.zeros(2 * K, **f32) for _ in range(3))
    eps, s, z = (torch.empty(K, **f32) for _ in range(3))
    eps_views = views(eps)

    pyro.set_rng_seed(settings.seed)
    for _ in range(2):  # py-irt runs the model once (prior samples) and then the guide once
        for n in sizes:
            torch.empty(n, **f32).normal_()

    best_loss, best_epoch, best_loc = float("inf"), None, loc.clone()
    lr, loss = settings.lr, float("nan")
    for epoch in range(settings.epochs):
        for view in eps_views:  # the same normal_ calls, in the same order and sizes, as pyro's rsample
            view.normal_()
        torch.exp(log_s, out=s)
        torch.mul(eps, s, out=z).add_(loc)  # Normal.rsample: loc + eps * scale
        nll = lik.evaluate(z, g_loc)  # dNLL/dz into g_loc
        # prior and guide terms: sum z^2 / (2 var) - sum eps^2 / 2 - sum log s + const
        torch.div(z, var_prior, out=g_u)  # d(-log p)/dz, parked in g_u for a moment
        loss = nll + 0.5 * (float(torch.dot(g_u, z)) - float(torch.dot(eps, eps))) - float(log_s.sum()) + const
        g_loc.add_(g_u)
        torch.mul(g_loc, eps, out=g_u).mul_(s).sub_(1.0)  # dL/du = dL/dz * eps * s - 1 (entropy)

        # torch.optim.Adam's single-tensor step, op for op
        step = epoch + 1
        exp_avg.lerp_(grad, 1 - BETA1)
        exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        step_size = lr / (1 - BETA1 ** step)
        torch.sqrt(exp_avg_sq, out=denom).div_((1 - BETA2 ** step) ** 0.5).add_(ADAM_EPS)
        params.addcdiv_(exp_avg, denom, value=-step_size)

        if loss < best_loss:  # py-irt keeps the params right after the step with the lowest loss
            best_loss, best_epoch = loss, epoch
            best_loc.copy_(loc)
        lr *= settings.lr_decay  # ExponentialLR.step()
        if progress and epoch % 100 == 0:
            print(f"[py-irt-compatible] epoch {epoch + 1}: loss {loss:.4f} best {best_loss:.4f}", flush=True)
    return best_loc, log_s.exp(), best_epoch, best_loss, loss
