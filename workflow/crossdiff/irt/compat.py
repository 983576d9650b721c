"""The ``py-irt-compatible`` engine: py-irt 0.7.1's default SVI, replayed on the dense matrix.

What is replicated
------------------
py-irt (``py_irt/training.py``, ``models/one_param_logistic.py``, ``two_param_logistic.py``) fits a
mean-field Gaussian guide by pyro's ``Trace_ELBO`` SVI. For the same seed (``pyro.set_rng_seed(seed)``
before training, as ``crossdiff.irt.pyirt_engine`` does; py-irt itself ignores ``IrtConfig.seed``)
this module replays it step for step:

* item order = order of first appearance in the jsonlines file (row-major over observed cells);
  each item's random draws follow that order;
* before the loop py-irt runs the model and then the guide once: they draw M, N [and N for the 2PL
  discrimination] standard normals each, which only advances torch's random stream;
* guide: theta ~ N(loc_ability, scale_ability), b ~ N(loc_diff, scale_diff) [2PL: a ~
  LogNormal(loc_slope, scale_slope)], initialised at loc 0 and scale 1 (ability), 1000 (1PL
  difficulty), 10 (2PL difficulty), 1e-6 (2PL slope); scales are optimised as log(scale);
* each epoch: one reparameterised draw ``z = loc + eps * scale`` with ``eps`` drawn by
  ``torch.empty(n).normal_()`` in the order theta, b [, a] (the guide draws, the model replays),
  so the noise is bit-identical to py-irt's;
* loss = Trace_ELBO's ``sum log q(z) - sum log p(z) - sum log p(y | z)``; one step of torch Adam
  (lr 0.1, betas (0.9, 0.999), eps 1e-8, float32) per parameter, then ExponentialLR (``lr *=
  gamma``). The Adam update is torch's single-tensor code path op for op (``lerp_``, ``mul_`` /
  ``addcmul_``, ``sqrt`` / ``div_`` / ``add_``, ``addcdiv_`` with the same Python-float
  coefficients), applied once to all parameters laid end to end in one flat float32 tensor; that is
  elementwise identical to pyro's one-optimizer-per-parameter setup because every parameter has
  the same lr, step count and schedule;
* output: ``best_params`` = the locations right after the step whose (pre-step) loss was lowest;
  the posterior sds are the final scales, as py-irt's param store holds them.

What differs is only floating-point rounding (gradients summed in another order, the closed forms
below instead of autograd's chain of float32 ops): the replay agrees with real py-irt to ~1e-6 for
the 1PL and ~1e-4 for the 2PL (whose slope scale starts at 1e-6, where float32 rounding of
``z - loc`` inside pyro's log-density is relatively large) after 2000 epochs; see
``tests/test_irt_compat.py``. The loss is computed to ~1e-3 absolute, finer than the float32
rounding of py-irt's own loss (a float32 sum over all responses), so the same epoch is "best".

Why it is fast
--------------
py-irt spends ~25 ms per epoch at 500 x 1000 in pyro/autograd bookkeeping over a list of responses.
Here no autograd and no optimizer objects are used; one epoch is ~20 torch calls on preallocated
buffers:

* O(M + N) terms in closed form. With ``z = loc + eps * s`` and ``s = exp(u)``, the reparameterised
  gradients are ``dL/dloc = z / var_prior + dNLL/dz`` and ``dL/du = dL/dloc * eps * s - 1`` (the
  guide entropy contributes exactly -1), and the prior/guide part of the loss is
  ``sum z^2 / (2 var_prior) - sum eps^2 / 2 - sum u + const``.
* The likelihood on the dense masked matrix with no transcendental function per cell (1PL): with
  ``w_ij = exp(theta_i) * exp(-b_j) * mask_ij`` (an outer product of two exponentiated vectors),
  ``p_ij = w / (1 + w)`` is the success probability and
  ``NLL = sum log(1 + w) - sum_observed y_ij (theta_i - b_j)``; the second sum is
  ``sum_i k_i theta_i - sum_j c_j b_j`` with k, c the row/column counts of observed successes,
  and the gradients are the row and column sums of p minus k and c. ``sum log(1 + w)`` takes
  the log of products of 2^h cells (halving the buffer h times, h chosen so no product can
  overflow), so only 1/2^h of the cells go through ``log``. 2PL: ``w = exp(a_j (theta_i - b_j))``
  per cell, the same sums weighted by a, and two matrix-vector products with the observed-success
  matrix.
* Large logits (the first ~50 1PL epochs, while the difficulty scale is still ~1000) take a
  numerically stable path (softplus/sigmoid on ``(1 - 2y) * logit``) instead.
* Work arrays are row blocks of <= 2^20 cells, reused every epoch; torch uses min(2, cores) threads.

Hierarchical priors are not implemented (:class:`CompatNotSupported`).
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
# Adam defaults as py-irt uses them (pyro.optim wrapping torch.optim.Adam with only lr set)
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8

BLOCK_CELLS = 1 << 20  # cells per row block of the likelihood work arrays (4 MiB of float32)
CLAMP_LOGIT = 20.0  # w = exp(logit) is capped at exp(20): p = 1 in float32 either way
SAFE_ABILITY = 60.0  # fast path while |theta| <= 60 (and 2PL slopes <= 1e3): no inf * 0 anywhere
SAFE_SLOPE = 1.0e3
LOG_PRODUCT_MAX = 87.0  # a product of 2^h cells of 1 + w stays below exp(87) (float32 max ~e^88.7)
MAX_HALVINGS = 3
SUM_ROWS = 64  # see _sum


def pyirt_item_order(observed: np.ndarray) -> np.ndarray:
    """Column indices in py-irt's internal item order (first appearance, row-major)."""
    rows = np.where(observed.any(0), observed.argmax(0), observed.shape[0])
    return np.lexsort((np.arange(observed.shape[1]), rows))


def _sum(x, torch) -> float:
    """Sum of a float32 vector whose length is a multiple of SUM_ROWS, to ~float64 accuracy cheaply:
    SUM_ROWS-term float32 column sums of a (SUM_ROWS, -1) view, then a float64 sum of those."""
    return float(x.view(SUM_ROWS, -1).sum(0).sum(dtype=torch.float64))


class _DenseBernoulli:
    """Bernoulli negative log-likelihood of the observed cells and its gradient, on the dense matrix.

    ``evaluate(theta, b, a, g_theta, g_b, g_a)`` returns NLL = sum over observed cells of
    ``softplus(x) - y x`` with logit ``x = a_j (theta_i - b_j)`` (a = None: 1PL) and writes the
    gradients w.r.t. theta, b [and a] into the given vectors.

    Per row block it forms ``T = 1 + exp(x)`` (1 on missing cells, capped at ``1 + e^CLAMP_LOGIT``),
    ``R = 1 / T = 1 - sigmoid(x)``, and uses

    * ``sum softplus(x) = sum log T`` (+ the part above the cap, summed over the few cells there);
    * ``sum_observed (p - y) = (#cells - sum R) - sum y`` along rows and columns;
    * ``sum_observed y x``: O(M + N) for the 1PL (row/column success counts), two matrix-vector
      products with the observed-success matrix for the 2PL.
    """

    def __init__(self, Y: np.ndarray, observed: np.ndarray, two_pl: bool, device, torch):
        self.torch = torch
        M, N = Y.shape
        self.M, self.N = M, N
        f32 = dict(dtype=torch.float32, device=device)
        observed = np.ascontiguousarray(observed)  # row-major (column-permuted arrays are not)
        y_obs = np.ascontiguousarray(Y.astype(bool) & observed)
        self.y_obs = torch.from_numpy(y_obs).to(device)  # bool; float32 copy below for the 2PL
        self.Ym = self.y_obs.float() if two_pl else None
        complete = bool(observed.all())
        # observed mask, items x models (float32), and per item the number of observed responses
        self.obsT = None if complete else torch.from_numpy(np.ascontiguousarray(observed.T, dtype=np.float32)).to(device)
        self.n_obs = torch.from_numpy(observed.sum(0).astype(np.float64)).to(device)
        # cap on T = 1 + w: 1 + e^CLAMP on observed cells, 1 on missing ones (w = 0 there)
        self.cap = None if complete else torch.from_numpy(
            np.where(observed, np.float32(1.0 + math.exp(CLAMP_LOGIT)), np.float32(1.0))).to(device)
        self.k = torch.from_numpy(y_obs.sum(1).astype(np.float32)).to(device)  # successes per row
        self.c = torch.from_numpy(y_obs.sum(0).astype(np.float32)).to(device)  # successes per column
        rows = max(1, min(M, BLOCK_CELLS // N))
        self.blocks = [(i, min(i + rows, M)) for i in range(0, M, rows)]
        cells = rows * N
        padded = cells + (SUM_ROWS << MAX_HALVINGS)
        self.ones = torch.ones(rows, N, **f32)  # addr's input: T = 1 + u v'
        self.T = torch.ones(padded, **f32)  # 1 + w, padded with ones for the halvings
        self.R = torch.empty(cells, **f32)  # 1 / T
        self.H = torch.empty(padded // 2, **f32)  # products of cells of T
        self.H0 = None  # log T when no halving is possible (huge logits), allocated on demand
        self.col = torch.empty(N, **f32)  # column sums of R
        self.col_blk = torch.empty(N, **f32)
        self.u, self.v, self.ab = torch.empty(M, **f32), torch.empty(N, **f32), torch.empty(N, **f32)
        if two_pl:
            self.colt = torch.empty(N, **f32)  # sum_i theta_i R_ij
            self.ya, self.ty = torch.empty(M, **f32), torch.empty(N, **f32)
        self.stable_epochs = 0

    def _sum_log_T(self, n: int, halvings: int) -> float:
        """sum(log(T[:n])) as the sum of logs of products of 2^halvings cells (T >= 1, bounded).

        T is padded with ones (log 1 = 0) to a multiple of 2^halvings * SUM_ROWS cells."""
        torch = self.torch
        padded = -(-n // (SUM_ROWS << halvings)) * (SUM_ROWS << halvings)
        if padded > n:
            self.T[n:padded].fill_(1.0)
        if halvings == 0:
            if self.H0 is None:
                self.H0 = torch.empty_like(self.T)
            return _sum(torch.log(self.T[:padded], out=self.H0[:padded]), torch)
        half = padded // 2
        torch.mul(self.T[:half], self.T[half:padded], out=self.H[:half])
        for _ in range(halvings - 1):
            half //= 2
            torch.mul(self.H[:half], self.H[half:2 * half], out=self.H[:half])
        return _sum(torch.log_(self.H[:half]), torch)

    def _excess(self, theta, b, a, x_top, t_lo: float) -> float:
        """sum over observed cells of relu(x - CLAMP_LOGIT): what capping w at e^CLAMP_LOGIT leaves out.

        Columns whose smallest logit is above the cap contribute ``a_j (sum_obs theta - n_j b_j) - n_j C``
        (one matrix-vector product); only the few columns that straddle the cap are summed cell by cell.
        """
        torch = self.torch
        C = CLAMP_LOGIT
        x_bot = t_lo - b if a is None else a * (t_lo - b)
        full = x_bot >= C
        total = 0.0
        if bool(full.any()):
            obs_theta = (self.obsT @ theta).double() if self.obsT is not None else float(theta.double().sum())
            slope = 1.0 if a is None else a.double()
            e = slope * (obs_theta - self.n_obs * b.double()) - self.n_obs * C
            total += float(e[full].sum())
        part = torch.nonzero((x_top > C) & ~full).squeeze(1)
        if part.numel():
            x = theta[None, :] - b[part][:, None]  # straddling columns x models
            if a is not None:
                x.mul_(a[part][:, None])
            x.sub_(C).relu_()
            if self.obsT is not None:
                x.mul_(self.obsT[part])
            total += float(x.sum(dtype=torch.float64))
        return total

    def evaluate(self, theta, b, a, g_theta, g_b, g_a) -> float:
        torch = self.torch
        M, N = self.M, self.N
        t_lo, t_hi = (float(x) for x in torch.aminmax(theta))
        if a is None:
            x_top = t_hi - b  # per column, the largest logit
        else:
            torch.mul(a, b, out=self.ab)
            x_top = a * t_hi - self.ab
        x_hi = float(x_top.max())
        fast = max(-t_lo, t_hi) <= SAFE_ABILITY and (a is None or float(a.max()) <= SAFE_SLOPE)
        if not (fast and math.isfinite(x_hi)):
            self.stable_epochs += 1
            return self._evaluate_stable(theta, b, a, g_theta, g_b, g_a)
        over = x_hi > CLAMP_LOGIT  # some cells are capped
        x_cap = min(x_hi, CLAMP_LOGIT)
        per_cell = max(x_cap, 0.0) + math.log1p(math.exp(-abs(x_cap)))  # log T <= this in every cell
        h = 0  # products of 2^h cells of T stay below e^LOG_PRODUCT_MAX
        while h < MAX_HALVINGS and per_cell * (2 << h) <= LOG_PRODUCT_MAX:
            h += 1
        if a is None:
            torch.exp(theta, out=self.u)
            torch.neg(b, out=self.v).clamp_(-87.0, 88.0).exp_()  # finite, so u v is never NaN

        sum_log, col = (self._excess(theta, b, a, x_top, t_lo) if over else 0.0), self.col
        for r0, r1 in self.blocks:
            n = (r1 - r0) * N
            T, R = self.T[:n].view(r1 - r0, N), self.R[:n].view(r1 - r0, N)
            if a is None:
                torch.addr(self.ones[:r1 - r0], self.u[r0:r1], self.v, out=T)  # 1 + exp(theta_i - b_j)
            else:
                torch.sub(theta[r0:r1, None], b[None, :], out=T).mul_(a)  # x = a_j (theta_i - b_j)
                if over:
                    T.clamp_(max=CLAMP_LOGIT)
                T.exp_().add_(1.0)
            if self.cap is not None:
                torch.minimum(T, self.cap[r0:r1], out=T)  # 1 on missing cells; capped
            elif over:
                T.clamp_(max=1.0 + math.exp(CLAMP_LOGIT))
            sum_log += self._sum_log_T(n, h)
            torch.reciprocal(T, out=R)
            if r0 == 0:
                torch.sum(R, 0, out=col)
            else:
                col.add_(torch.sum(R, 0, out=self.col_blk))
            if a is None:
                torch.sum(R, 1, out=g_theta[r0:r1])
            else:
                torch.mv(R, a, out=g_theta[r0:r1])
                if r0 == 0:
                    torch.mv(R.t(), theta[r0:r1], out=self.colt)
                else:
                    self.colt.add_(torch.mv(R.t(), theta[r0:r1], out=self.col_blk))

        # p = 1 - R on observed cells and R = 1 on missing ones, so sum_obs p = #cells - sum R
        if a is None:
            torch.sub(N - self.k, g_theta, out=g_theta)  # sum_j (p - y)
            torch.sub(col, M, out=g_b).add_(self.c)  # -sum_i (p - y)
            yx = float(torch.dot(self.k, theta)) - float(torch.dot(self.c, b))
        else:
            torch.mv(self.Ym, a, out=self.ya)
            torch.mv(self.Ym.t(), theta, out=self.ty)
            g_theta.neg_().add_(float(a.sum())).sub_(self.ya)  # sum_j a_j (p - y)
            col.neg_().add_(M).sub_(self.c)  # sum_i (p - y)
            torch.mul(a, col, out=g_b).neg_()
            # sum_i (p - y)(theta_i - b_j)
            torch.sub(float(theta.sum()) - self.ty, self.colt, out=g_a).sub_(b * col)
            yx = float(torch.dot(theta, self.ya)) - float(torch.dot(self.ab, self.c))
        return sum_log - yx

    def _evaluate_stable(self, theta, b, a, g_theta, g_b, g_a) -> float:
        """Any logits (|theta| > SAFE_ABILITY): softplus / sigmoid of (1 - 2y) x, allocating freely."""
        torch = self.torch
        x = theta[:, None] - b[None, :]
        if a is not None:
            x.mul_(a)
        s = 1.0 - 2.0 * self.y_obs.float()
        if self.obsT is not None:
            s.mul_(self.obsT.t())  # 0 on missing cells
        sx = s * x
        nll = float(torch.nn.functional.softplus(sx).sum(dtype=torch.float64))
        nll -= float(self.M * self.N - self.n_obs.sum()) * math.log(2.0)  # softplus(0) on missing cells
        r = torch.sigmoid(sx).mul_(s)  # (p - y) on observed cells, 0 elsewhere
        if a is None:
            torch.sum(r, 1, out=g_theta)
            torch.sum(r, 0, out=g_b).neg_()
        else:
            torch.mv(r, a, out=g_theta)
            col = r.sum(0)
            torch.mul(a, col, out=g_b).neg_()
            torch.sub(theta @ r, b * col, out=g_a)
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
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads or max(1, min(2, os.cpu_count() or 1)))
    device = torch.device("cuda" if settings.device == "cuda"
                          or (settings.device == "auto" and torch.cuda.is_available()) else "cpu")
    two_pl = settings.model == "2pl"
    M, N = Y.shape
    order = pyirt_item_order(observed)
    try:
        with torch.no_grad():
            lik = _DenseBernoulli(Y[:, order], observed[:, order], two_pl, device, torch)
            best, best_epoch, best_loss, loss = _svi(lik, settings, M, N, two_pl, device, pyro, torch, progress)
            scales = best.pop("scales")
    finally:
        torch.set_num_threads(threads_before)

    def back(t):
        """py-irt's item order back to ours."""
        out = np.empty(N)
        out[order] = t.double().cpu().numpy()
        return out

    return EngineResult(
        ability=best["loc"][:M].double().cpu().numpy(),
        difficulty=back(best["loc"][M:M + N]),
        difficulty_sd=back(scales[M:M + N]),
        discrimination=back(best["loc"][M + N:].exp()) if two_pl else None,
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


def _svi(lik: _DenseBernoulli, settings: IrtSettings, M: int, N: int, two_pl: bool, device, pyro, torch, progress):
    """The SVI loop on flat float32 tensors; returns (best locations and final scales, epoch, loss, last loss)."""
    f32 = dict(dtype=torch.float32, device=device)
    sizes = [M, N] + ([N] if two_pl else [])  # theta, b [, log a]: the guide's sample order
    K = sum(sizes)
    bounds = np.cumsum([0] + sizes)
    views = lambda t: [t[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]  # noqa: E731

    # parameters laid end to end: [loc_ability, loc_diff, (loc_slope), log scale_ability, log scale_diff, (log scale_slope)]
    params = torch.zeros(2 * K, **f32)
    loc, log_s = params[:K], params[K:]
    init_scales = [1.0, INIT_SCALE_DIFF[settings.model]] + ([INIT_SCALE_SLOPE] if two_pl else [])
    for view, s0 in zip(views(log_s), init_scales):
        view.copy_(torch.log(torch.full_like(view, s0)))  # pyro stores log(init) in float32
    # prior variances, computed as torch.distributions.Normal does (scale ** 2 in float32)
    prior_scales = [1.0, PRIOR_SCALE_DIFF[settings.model]] + ([PRIOR_SCALE_LOG_SLOPE] if two_pl else [])
    var_prior = torch.empty(K, **f32)
    for view, s in zip(views(var_prior), prior_scales):
        view.fill_(float(torch.tensor(s, dtype=torch.float32) ** 2))
    # -sum log p(z) carries + sum log(prior scale); the 2 pi constants of log p and log q cancel
    const = sum(n * math.log(float(torch.tensor(s, dtype=torch.float32))) for n, s in zip(sizes, prior_scales))

    grad = torch.zeros(2 * K, **f32)
    g_loc, g_u = grad[:K], grad[K:]
    g_theta, g_b, g_a = (views(g_loc) + [None])[:3]
    exp_avg, exp_avg_sq, denom = torch.zeros(2 * K, **f32), torch.zeros(2 * K, **f32), torch.empty(2 * K, **f32)
    eps, s, z = torch.empty(K, **f32), torch.empty(K, **f32), torch.empty(K, **f32)
    a = torch.empty(N, **f32) if two_pl else None
    eps_views = views(eps)
    z_views = views(z)

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
        theta, b = z_views[0], z_views[1]
        if two_pl:
            torch.exp(z_views[2], out=a)
        nll = lik.evaluate(theta, b, a, g_theta, g_b, g_a)
        if two_pl:
            g_a.mul_(a)  # through a = exp(log a)
        # prior and guide terms: sum z^2 / (2 var) - sum eps^2 / 2 - sum log s + const
        torch.div(z, var_prior, out=g_u)  # d(-log p)/dz, parked in g_u for a moment
        small = 0.5 * (float(torch.dot(g_u, z)) - float(torch.dot(eps, eps))) - float(log_s.sum()) + const
        loss = nll + small
        g_loc.add_(g_u)
        torch.mul(g_loc, eps, out=g_u).mul_(s).sub_(1.0)  # dL/du = dL/dz * eps * s - 1 (entropy)

        # torch.optim.Adam's single-tensor step (foreach=False, as on CPU), op for op
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
        if progress and epoch % 10 == 0:
            print(f"[py-irt-compatible] epoch {epoch + 1}: loss {loss:.4f} best {best_loss:.4f}", flush=True)
    return {"loc": best_loc, "scales": log_s.exp()}, best_epoch, best_loss, loss
