"""The ``py-irt-compatible`` engine: py-irt 0.7.1's default SVI, replayed on the dense matrix.

What py-irt does (``py_irt/training.py``, ``models/one_param_logistic.py``, ``two_param_logistic.py``)
and is reproduced here step for step, for the same seed (``pyro.set_rng_seed(seed)`` before
training, as ``crossdiff.irt.pyirt_engine`` does; py-irt itself ignores ``IrtConfig.seed``):

* item order = order of first appearance in the jsonlines file (row-major over observed cells);
  each item's random draws follow that order;
* before the loop the model and then the guide are run once: they draw M, N [and N for the 2PL
  discrimination] standard normals each, which only advances the random stream;
* guide: theta ~ N(loc_ability, scale_ability), b ~ N(loc_diff, scale_diff) [2PL: a ~
  LogNormal(loc_slope, scale_slope)], initialised at loc 0 and scale 1 (ability), 1000 (1PL
  difficulty), 10 (2PL difficulty), 1e-6 (2PL slope); scales are optimised as log(scale);
* each epoch: one reparameterised draw in the order theta, b [, a]; Trace_ELBO loss
  ``sum log q - sum log p(z) - sum log p(y | z)``; one step of torch Adam (lr 0.1, betas
  (0.9, 0.999)) per parameter, then ExponentialLR (gamma = lr_decay);
* output: ``best_params`` = the locations right after the step whose (pre-step) loss was lowest.

The likelihood gradient is computed in closed form on the dense masked matrix, swept in row blocks
of float32 work arrays, instead of through autograd over a per-response list; the prior and guide
terms (O(M + N)) go through autograd exactly as in pyro. Hierarchical priors are not implemented.
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


def pyirt_item_order(observed: np.ndarray) -> np.ndarray:
    """Column indices in py-irt's internal item order (first appearance, row-major)."""
    rows = np.where(observed.any(0), observed.argmax(0), observed.shape[0])
    return np.lexsort((np.arange(observed.shape[1]), rows))


def _likelihood(blocks, S, n_missing, theta, b, a, torch):
    """Sum of Bernoulli NLL over observed cells and its gradient w.r.t. theta, b [, a].

    ``S`` holds 1 - 2y on observed cells and 0 on missing ones, so with x the logit,
    softplus(S x) is the NLL of observed cells (log 2 on missing ones, subtracted afterwards) and
    S sigmoid(S x) = sigmoid(x) - y is d NLL / d x (0 on missing cells).
    """
    g_theta = torch.empty_like(theta)
    col_r = torch.zeros_like(b, dtype=torch.float64)
    col_rt = torch.zeros_like(b, dtype=torch.float64) if a is not None else None
    nll = 0.0
    for blk in blocks:
        x = theta[blk, None] - b[None, :]
        if a is not None:
            x.mul_(a[None, :])
        t = x.mul_(S[blk])
        nll += float(torch.nn.functional.softplus(t).sum(dtype=torch.float64))
        r = t.sigmoid_().mul_(S[blk])  # sigmoid(x) - y
        if a is None:
            g_theta[blk] = r.sum(1)
        else:
            g_theta[blk] = r @ a
            col_rt += (theta[blk] @ r).double()
        col_r += r.sum(0, dtype=torch.float64)
    nll -= n_missing * math.log(2.0)
    if a is None:
        return nll, g_theta, (-col_r).float(), None
    g_b = (-col_r).float() * a
    g_a = (col_rt - b.double() * col_r).float()
    return nll, g_theta, g_b, g_a


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    """Replay py-irt's SVI for ``settings.epochs`` epochs; see the module docstring."""
    check_matrix(Y, observed)
    if (settings.model, settings.priors) not in SUPPORTED:
        raise CompatNotSupported(
            f"py-irt-compatible replays {', '.join('/'.join(s) for s in sorted(SUPPORTED))} only, "
            f"not {settings.model}/{settings.priors}; use engine 'py-irt' (slow) or 'fast'")
    if not observed.any(0).all():
        raise ValueError("some items have no observed response; filter them first (py-irt cannot see them)")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import pyro
    import torch
    from torch.distributions import Normal

    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads or max(1, min(2, os.cpu_count() or 1)))
    device = torch.device("cuda" if settings.device == "cuda"
                          or (settings.device == "auto" and torch.cuda.is_available()) else "cpu")
    two_pl = settings.model == "2pl"
    M, N = Y.shape
    order = pyirt_item_order(observed)
    Yp, obs_p = Y[:, order], observed[:, order]
    try:
        S = torch.from_numpy(np.where(obs_p, 1.0 - 2.0 * Yp, 0.0).astype(np.float32)).to(device)
        n_missing = int((~obs_p).sum())
        rows = max(1, (1 << 26 if device.type == "cuda" else 1 << 18) // N)
        blocks = [slice(i, min(i + rows, M)) for i in range(0, M, rows)]

        pyro.set_rng_seed(settings.seed)
        n_draws = [M, N] + ([N] if two_pl else [])

        def draws():
            return [torch.empty(n, device=device).normal_() for n in n_draws]

        draws()  # py-irt runs the model once before training (prior samples) ...
        draws()  # ... and the guide once

        f32 = dict(dtype=torch.float32, device=device)
        params = {
            "loc_ability": torch.zeros(M, **f32),
            "scale_ability": torch.log(torch.ones(M, **f32)),
            "loc_diff": torch.zeros(N, **f32),
            "scale_diff": torch.log(torch.full((N,), INIT_SCALE_DIFF[settings.model], **f32)),
        }
        if two_pl:
            params["loc_slope"] = torch.zeros(N, **f32)
            params["scale_slope"] = torch.log(torch.full((N,), INIT_SCALE_SLOPE, **f32))
        for p in params.values():
            p.requires_grad_(True)
        # pyro builds one optimizer and one scheduler per parameter
        optims = [torch.optim.Adam([p], lr=settings.lr, foreach=False) for p in params.values()]
        scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=settings.lr_decay) for o in optims]
        prior_theta = Normal(torch.tensor(0.0, **f32), torch.tensor(1.0, **f32))
        prior_b = Normal(torch.tensor(0.0, **f32), torch.tensor(PRIOR_SCALE_DIFF[settings.model], **f32))
        prior_log_a = Normal(torch.tensor(0.0, **f32), torch.tensor(PRIOR_SCALE_LOG_SLOPE, **f32))

        best_loss, best = float("inf"), None
        for epoch in range(settings.epochs):
            eps = draws()
            s_theta, s_b = params["scale_ability"].exp(), params["scale_diff"].exp()
            q_theta, q_b = Normal(params["loc_ability"], s_theta), Normal(params["loc_diff"], s_b)
            z_theta = params["loc_ability"] + eps[0] * s_theta
            z_b = params["loc_diff"] + eps[1] * s_b
            small = (q_theta.log_prob(z_theta).sum() + q_b.log_prob(z_b).sum()
                     - prior_theta.log_prob(z_theta).sum() - prior_b.log_prob(z_b).sum())
            a = None
            if two_pl:
                s_a = params["scale_slope"].exp()
                q_log_a = Normal(params["loc_slope"], s_a)
                z_log_a = params["loc_slope"] + eps[2] * s_a
                z_a = z_log_a.exp()
                # LogNormal log density = Normal density of log a minus log a, in model and guide alike
                small = small + q_log_a.log_prob(z_log_a).sum() - prior_log_a.log_prob(z_log_a).sum()
                a = z_a.detach()
            nll, g_theta, g_b, g_a = _likelihood(blocks, S, n_missing, z_theta.detach(), z_b.detach(), a, torch)
            surrogate = small + (z_theta * g_theta).sum() + (z_b * g_b).sum()
            if two_pl:
                surrogate = surrogate + (z_a * g_a).sum()
            for o in optims:
                o.zero_grad(set_to_none=False)
            surrogate.backward()
            loss = nll + float(small.detach())
            for o in optims:
                o.step()
            if loss < best_loss:
                best_loss = loss
                best = {k: params[k].detach().clone() for k in ("loc_ability", "loc_diff")}
                if two_pl:
                    best["loc_slope"] = params["loc_slope"].detach().clone()
                best["epoch"] = epoch
            for s in scheds:
                s.step()
            if progress and epoch % 100 == 0:
                print(f"[py-irt-compatible] epoch {epoch + 1}: loss {loss:.4f} best {best_loss:.4f}", flush=True)
    finally:
        torch.set_num_threads(threads_before)

    def back(t):
        """py-irt's item order back to ours."""
        out = np.empty(N)
        out[order] = t.detach().double().cpu().numpy()
        return out

    return EngineResult(
        ability=best["loc_ability"].double().cpu().numpy(),
        difficulty=back(best["loc_diff"]),
        difficulty_sd=back(params["scale_diff"].exp()),
        discrimination=back(best["loc_slope"].exp()) if two_pl else None,
        ability_sd=params["scale_ability"].exp().detach().double().cpu().numpy(),
        info={
            "iterations": settings.epochs,
            "converged": None,
            "criterion": "fixed number of SVI epochs (py-irt default: no convergence check)",
            "best_epoch": best["epoch"],
            "objective": best_loss,
            "objective_name": "lowest single-sample negative ELBO (py-irt's best_loss)",
            "final_loss": loss,
            "device": str(device),
            "wall_s": time.perf_counter() - start,
        },
    )
