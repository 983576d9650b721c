"""Issue 30: 3PL/4PL fits that reach the optimum, the standard 4PL (irt.model: 4pl-standard), the pass kernel.

The objective, gradients and Hessian are recomputed here directly in numpy (float64, dense, no code shared
with crossdiff.irt.cells / asymptote), and the fits are checked against them.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
from scipy.special import expit  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402
from crossdiff.irt import asymptote, cells  # noqa: E402
from crossdiff.irt.base import IrtSettings, asymptotes  # noqa: E402
from crossdiff.irt.engines import fit_engine  # noqa: E402
from crossdiff.irt.fit import fit_dataset  # noqa: E402

MODELS = ["1pl", "2pl", "3pl", "4pl", "4pl-standard"]
KERNELS = ["c", "numpy"]


def simulate(model, M, N, missing=0.0, seed=7, floor=(0.0, 0.25), ceiling=(0.85, 1.0)):
    rng = np.random.default_rng(seed)
    theta, b, a = rng.normal(size=M), rng.normal(size=N), np.exp(rng.normal(0, 0.3, size=N))
    c, d = np.zeros(N), np.ones(N)
    if model in ("3pl", "4pl-standard"):
        c = rng.uniform(*floor, N)
    if model in ("4pl", "4pl-standard"):
        d = rng.uniform(*ceiling, N)
    p = c + (d - c) * expit(a * (theta[:, None] - b))
    Y = (rng.random((M, N)) < p).astype(np.uint8)
    observed = rng.random((M, N)) >= missing
    return Y, observed, {"theta": theta, "b": b, "a": a, "c": c, "d": d}


def floor_ceiling(r, model):
    N = r.difficulty.size
    if model == "3pl":
        return r.lambdas, np.ones(N)
    if model == "4pl":
        return np.zeros(N), r.lambdas
    if model == "4pl-standard":
        return r.guess, r.ceiling
    return np.zeros(N), np.ones(N)


def direct_objective(params, Y, observed, model, beta_c=None, beta_d=None):
    """Negative log posterior with vague priors, written out: theta, b, log a ~ N(0, 1), Beta floor/ceiling."""
    theta, b, eta, c, d = params
    a = np.exp(eta)
    x = a * (theta[:, None] - b)
    P, Pb = c + (d - c) * expit(x), (1 - d) + (d - c) * expit(-x)  # P and 1 - P, each without cancellation
    ll = np.where(Y == 1, np.log(P), np.log(Pb))[observed].sum()
    prior = 0.5 * (theta @ theta + b @ b + eta @ eta)
    for v, ab in ((c, beta_c), (d, beta_d)):
        if ab is not None:
            prior -= ((ab[0] - 1) * np.log(v) + (ab[1] - 1) * np.log1p(-v)).sum()
    return -ll + prior


def direct_gradient(params, Y, observed, model, beta_c=None, beta_d=None):
    """Analytic gradient of direct_objective (chain rule written out cell by cell)."""
    theta, b, eta, c, d = params
    a = np.exp(eta)
    x = a * (theta[:, None] - b)
    s = expit(x)
    P, Pb = c + (d - c) * s, (1 - d) + (d - c) * expit(-x)
    q = np.where(observed, np.where(Y == 1, 1 / P, -1 / Pb), 0.0)  # d loglik / dP = (y - P) / (P (1 - P))
    dPdx = (d - c) * s * (1 - s)
    g_theta = -(q * dPdx) @ a + theta
    g_b = (q * dPdx).sum(0) * a + b
    g_eta = -(q * dPdx * x).sum(0) + eta
    g_c = -(q * (1 - s)).sum(0)
    g_d = -(q * s).sum(0)
    for g, v, ab in ((g_c, c, beta_c), (g_d, d, beta_d)):
        if ab is not None:
            g += -(ab[0] - 1) / v + (ab[1] - 1) / (1 - v)
    return g_theta, g_b, g_eta, g_c, g_d


def params_of(r, model):
    c, d = floor_ceiling(r, model)
    return r.ability, r.difficulty, np.log(r.discrimination), c, d


# ------------------------------------------------------------------------------------------ the pass kernel
def test_kernel_c_matches_numpy_reference():
    rng = np.random.default_rng(0)
    M, N = 70, 50
    Y = rng.random((M, N)) < 0.6
    obs = rng.random((M, N)) > 0.3
    C = cells.Cells(Y, obs, threads=2, kernel="c")
    assert C.kernel == "C", C.kernel_note
    th, a, b = rng.normal(size=M), np.exp(rng.normal(0, .3, N)), rng.normal(size=N)
    c, d = rng.uniform(0, .3, N), rng.uniform(.7, 1, N)
    for col_info in (True, False):
        r1, c1 = C.stats(th, a, b, c, d, col_info)
        r2, c2 = cells.numpy_stats(C.code, th, a, b, c, d, col_info)
        np.testing.assert_allclose(r1, r2, rtol=2e-5, atol=1e-5)
        k = len(cells.COLUMNS) if col_info else cells.N_GRAD
        np.testing.assert_allclose(c1[:k], c2[:k], rtol=2e-5, atol=1e-4)
    # subsets of rows / columns are the same sums over the submatrix (columns: the item-major kernel)
    rows, cols = np.array([3, 9, 40]), np.array([0, 7, 8, 49, 8])
    for col_info in (True, False):
        for row_info in (True, False):
            r_sub, c_sub = C.stats(th, a, b, c, d, col_info, cols=cols, row_info=row_info)
            r_ref, c_ref = cells.numpy_stats(C.code[:, cols], th, a[cols], b[cols], c[cols], d[cols], col_info)
            k = len(cells.COLUMNS) if col_info else cells.N_GRAD
            np.testing.assert_allclose(c_sub[:k], c_ref[:k], rtol=2e-5, atol=1e-4)
            assert not c_sub[k:].any()
            np.testing.assert_allclose(r_sub[:, 2], r_ref[:, 2], rtol=2e-5, atol=1e-5)
            if row_info:
                np.testing.assert_allclose(r_sub, r_ref, rtol=2e-5, atol=1e-5)
            else:
                assert not r_sub[:, [0, 1, 3]].any()
            # a column's sums do not depend on the pass that made them (up to float32 rounding)
            _, c_full = C.stats(th, a, b, c, d, col_info)
            np.testing.assert_allclose(c_sub[:k], c_full[:k, cols], rtol=1e-6, atol=1e-6)
    assert C.stats(th, a, b, c, d, True, cols=np.array([], dtype=int))[1].shape == (len(cells.COLUMNS), 0)
    r_sub, _ = C.stats(th, a, b, c, d, True, rows=rows)
    np.testing.assert_allclose(r_sub, cells.numpy_stats(C.code[rows], th[rows], a, b, c, d)[0], rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_conditioning_screen_never_passes_a_matrix_the_eigenvalues_reject(k):
    """The cheap screen before the modified-Newton eigenvalue floor: a sufficient test, never a wrong pass."""
    rng = np.random.default_rng(k)
    A = rng.normal(size=(4000, k, k))
    H = A @ A.transpose(0, 2, 1)
    H[:1000] -= rng.uniform(0, 3, 1000)[:, None, None] * np.eye(k)  # indefinite
    lam, vec = np.linalg.eigh(H[1000:1500])
    lam[:, 0] = lam[:, -1] * rng.uniform(1e-9, 1e-5, 500)  # around the floor's 1e-6 of the largest
    H[1000:1500] = np.einsum("nij,nj,nkj->nik", vec, lam, vec)
    lam = np.linalg.eigvalsh(H)
    fine = (lam >= asymptote.EIG_FLOOR * np.abs(lam[:, -1:])).all(1)
    screen = asymptote.well_conditioned(H, asymptote.EIG_FLOOR)
    assert not (screen & ~fine).any()
    assert screen[1500:].mean() > 0.5  # and it spares most well-conditioned matrices the eigenvalues
    assert (~fine).sum() > 500  # the set holds many a floor must catch


@pytest.mark.parametrize("kernel", KERNELS)
def test_standard_4pl_likelihood_gradient_and_hessian_match_direct_numpy(kernel, monkeypatch):
    """The engine's objective, gradients (abilities and items) and item Hessian at an arbitrary point."""
    monkeypatch.setenv("CROSSDIFF_IRT_KERNEL", kernel)
    Y, obs, _ = simulate("4pl-standard", 60, 25, missing=0.2, seed=3)
    settings = IrtSettings(model="4pl-standard")
    F = asymptote._Fit(Y, obs, settings)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=60)
    X = np.stack([rng.normal(size=25), rng.normal(0, .3, 25), rng.uniform(.05, .3, 25), rng.uniform(.7, .98, 25)], 1)
    beta_c, beta_d = F.beta[2], F.beta[3]
    params = (theta, X[:, 0], X[:, 1], X[:, 2], X[:, 3])
    row, col = F.stats(theta, X, True)
    tol = dict(rtol=1e-4, atol=2e-4) if kernel == "c" else dict(rtol=1e-9, atol=1e-8)
    assert F.objective(theta, X, row) == pytest.approx(direct_objective(params, Y, obs, "4pl-standard", beta_c, beta_d),
                                                       rel=1e-6 if kernel == "c" else 1e-12)
    g_theta, g_b, g_eta, g_c, g_d = direct_gradient(params, Y, obs, "4pl-standard", beta_c, beta_d)
    np.testing.assert_allclose(-row[:, 0] + theta, g_theta, **tol)
    G, H = F.item_grad_info(X, col)
    np.testing.assert_allclose(G, np.stack([g_b, g_eta, g_c, g_d], 1), **tol)
    # the item Hessian: central differences of the direct gradient, item by item
    h = 1e-5
    for j in (0, 11, 24):
        fd = np.empty((4, 4))
        for k in range(4):
            up, dn = [v.copy() for v in params], [v.copy() for v in params]
            up[k + 1][j] += h
            dn[k + 1][j] -= h
            gu = np.array([g[j] for g in direct_gradient(up, Y, obs, "4pl-standard", beta_c, beta_d)[1:]])
            gd = np.array([g[j] for g in direct_gradient(dn, Y, obs, "4pl-standard", beta_c, beta_d)[1:]])
            fd[:, k] = (gu - gd) / (2 * h)
        if np.linalg.eigvalsh(fd).min() > 0:  # where not positive definite the engine raises eigenvalues
            np.testing.assert_allclose(H[j], fd, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------- the optimum
@pytest.mark.parametrize("model", ["3pl", "4pl", "4pl-standard"])
def test_returned_fit_is_the_optimum(model):
    """At the returned point every parameter's projected gradient is below the stated bound, computed here
    independently. py-irt's flat lambdas (weight 0) for 3pl/4pl: the objective of the fits before issue 30,
    which stopped with items at their start values and gradients of 36-44."""
    Y, obs, _ = simulate(model, 700, 200, missing=0.3, seed=11)
    settings = IrtSettings.from_dict({"model": model, "guess_prior_weight": 0 if model != "4pl-standard" else 20,
                                      "ceiling_prior_weight": 0 if model != "4pl-standard" else 10})
    r = fit_engine(Y, obs, settings)
    assert r.info["converged"], r.info
    F = asymptote._Fit(Y, obs, settings)
    beta_c, beta_d = F.beta.get(2), F.beta.get(3)
    params = params_of(r, model)
    grads = list(direct_gradient(params, Y, obs, model, beta_c, beta_d))
    free = {"3pl": [3], "4pl": [4], "4pl-standard": [3, 4]}[model]
    for k in free:  # projected gradient: zero where a bound holds the parameter and the gradient points out
        v, g = params[k], grads[k]
        grads[k] = np.where(((v <= 1e-6 + 1e-12) & (g > 0)) | ((v >= 1 - 1e-6 - 1e-12) & (g < 0)), 0.0, g)
    BOUND = 0.05  # stated bound on |d objective / d parameter| (the data sums over 140-490 responses)
    for k, (name, g) in enumerate(zip(["theta", "b", "log a", "c", "d"], grads)):
        if k < 3 or k in free:
            assert np.abs(g).max() < BOUND, (name, np.abs(g).max())
    assert r.info["projected_gradient_max_abs"] < BOUND
    # no item left at its start values (a = 1 and the start floor / ceiling) when the data move it
    start_lambda = {"3pl": 0.05, "4pl": 0.95}.get(model)
    if start_lambda is not None:
        stuck = (np.abs(np.log(r.discrimination)) < 1e-9) & (np.abs(r.lambdas - start_lambda) < 1e-9)
        assert not stuck.any(), np.flatnonzero(stuck)
    assert r.info["objective_monotone"]


def test_objective_lower_than_any_perturbation():
    """A direct check of the optimum: small moves of any item's parameters only raise the objective."""
    Y, obs, _ = simulate("4pl-standard", 300, 60, missing=0.1, seed=5)
    r = fit_engine(Y, obs, IrtSettings(model="4pl-standard"))
    F = asymptote._Fit(Y, obs, IrtSettings(model="4pl-standard"))
    params = params_of(r, "4pl-standard")
    f0 = direct_objective(params, Y, obs, "4pl-standard", F.beta[2], F.beta[3])
    rng = np.random.default_rng(0)
    for _ in range(10):
        moved = [v.copy() for v in params]
        j = rng.integers(60)
        for k in range(1, 5):
            moved[k][j] += rng.normal() * 0.01
        assert direct_objective(moved, Y, obs, "4pl-standard", F.beta[2], F.beta[3]) > f0 - 1e-6


# -------------------------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("model", ["3pl", "4pl", "4pl-standard"])
def test_recovery_small(model):
    Y, obs, truth = simulate(model, 800, 150, missing=0.1, seed=2)
    r = fit_engine(Y, obs, IrtSettings(model=model))
    assert r.info["converged"]
    assert spearmanr(r.difficulty, truth["b"]).statistic >= 0.9
    assert spearmanr(r.ability, truth["theta"]).statistic >= 0.95
    rows, cols = np.nonzero(obs)
    p = r.probability(rows, cols)
    c, d = floor_ceiling(r, model)
    assert np.all(p >= c[cols] - 1e-12) and np.all(p <= d[cols] + 1e-12)


def test_two_option_floors_standard_4pl_beats_pyirt_4pl():
    """Two-option items (floor near 1/2) with ceilings: py-irt's 4PL has no floor to put it in."""
    Y, obs, truth = simulate("4pl-standard", 800, 150, seed=4, floor=(0.4, 0.55), ceiling=(0.85, 1.0))
    n_options = np.full(150, 2.0)
    std = fit_engine(Y, obs, IrtSettings(model="4pl-standard"), n_options=n_options)
    pyirt_style = fit_engine(Y, obs, IrtSettings(model="4pl"))
    rho_std = spearmanr(std.difficulty, truth["b"]).statistic
    rho_4pl = spearmanr(pyirt_style.difficulty, truth["b"]).statistic
    assert rho_std > rho_4pl + 0.01, (rho_std, rho_4pl)
    assert std.info["priors"]["items_with_options_count"] == 150
    assert abs(np.median(std.guess) - 0.5) < 0.1  # the floors are found near 1/2


# ------------------------------------------------------------------------------------------- degenerate
def degenerate_matrices():
    rng = np.random.default_rng(9)
    base = (rng.random((30, 20)) < 0.5).astype(np.uint8)
    constant_rows = base.copy()
    constant_rows[:10] = 1
    constant_rows[10:15] = 0
    return {
        "all correct": np.ones((25, 15), np.uint8),
        "all wrong": np.zeros((25, 15), np.uint8),
        "one model": (rng.random((1, 12)) < 0.5).astype(np.uint8),
        "one item": (rng.random((15, 1)) < 0.5).astype(np.uint8),
        "constant rows": constant_rows,
    }


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("model", MODELS)
def test_degenerate_matrices_give_finite_fits(model, kernel, monkeypatch):
    monkeypatch.setenv("CROSSDIFF_IRT_KERNEL", kernel)
    if kernel == "numpy" and model in ("1pl", "2pl"):
        pytest.skip("the 1PL/2PL do not use the pass kernel")
    for name, Y in degenerate_matrices().items():
        obs = np.ones(Y.shape, bool)
        r = fit_engine(Y, obs, IrtSettings(model=model, max_iter=60))
        values = [r.ability, r.difficulty, r.difficulty_sd, r.ability_sd]
        values += [v for v in (r.discrimination, r.lambdas, r.guess, r.ceiling) if v is not None]
        for v in values:
            assert np.isfinite(v).all(), (name, model)
        if "objective" in r.info:
            assert np.isfinite(r.info["objective"]), (name, model)
        rows, cols = np.nonzero(obs)
        p = r.probability(rows, cols)
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all(), (name, model)


# ---------------------------------------------------------------------------------- determinism, kernels
def test_same_input_same_numbers_and_kernels_agree(monkeypatch):
    Y, obs, _ = simulate("3pl", 300, 80, missing=0.2, seed=6)
    one = fit_engine(Y, obs, IrtSettings(model="3pl"))
    two = fit_engine(Y, obs, IrtSettings(model="3pl"))
    np.testing.assert_array_equal(one.difficulty, two.difficulty)
    np.testing.assert_array_equal(one.lambdas, two.lambdas)
    monkeypatch.setenv("CROSSDIFF_IRT_KERNEL", "numpy")
    ref = fit_engine(Y, obs, IrtSettings(model="3pl"))
    assert one.info["kernel"] == "C" and ref.info["kernel"] == "numpy"
    np.testing.assert_allclose(one.difficulty, ref.difficulty, atol=2e-3)  # the same optimum within tolerance
    assert one.info["objective"] == pytest.approx(ref.info["objective"], rel=1e-7)


# ------------------------------------------------------------------------------------- engines and tables
def test_pyirt_engines_refuse_standard_4pl_naming_the_key():
    Y, obs, _ = simulate("4pl-standard", 20, 10)
    for engine in ("py-irt", "py-irt-compatible"):
        with pytest.raises(CrossdiffError, match="irt.model: 4pl-standard"):
            fit_engine(Y, obs, IrtSettings(engine=engine, model="4pl-standard"))


def test_config_refuses_standard_4pl_with_a_pyirt_engine():
    from crossdiff.config import validate

    base = {"datasets": {"d": {"items": {"source": "synthetic"}, "responses": {"source": "simulated"}}}}
    assert validate({**base, "irt": {"model": "4pl-standard"}})["irt"]["gtol"] == 1e-3
    with pytest.raises(CrossdiffError, match="irt.engine: py-irt cannot fit irt.model: 4pl-standard"):
        validate({**base, "irt": {"model": "4pl-standard", "engine": "py-irt"}})
    with pytest.raises(CrossdiffError, match="irt.stability.engines: py-irt-compatible"):
        validate({**base, "irt": {"model": "4pl-standard", "stability": {"engines": ["py-irt-compatible"]}}})


def test_fit_tables_of_the_standard_4pl(tmp_path):
    Y, _, _ = simulate("4pl-standard", 200, 40, seed=8, floor=(0.4, 0.55))
    m, n = np.nonzero(np.ones_like(Y))
    df = pl.DataFrame({"model_id": [f"m{i:03d}" for i in m], "item_id": [f"i{j:03d}" for j in n],
                       "correct": Y[m, n].astype(np.int8)})
    item_table = pl.DataFrame({"item_id": [f"i{j:03d}" for j in range(40)],
                               "choices": [json.dumps(["yes", "no"])] * 30 + [None] * 10})
    items, _, held, summary = fit_dataset(df, IrtSettings(model="4pl-standard"), 0.05, item_table=item_table)
    assert summary["model"] == "4pl-standard" and summary["engine_info"]["converged"]
    assert {"guess", "ceiling"} <= set(items.columns) and "lambdas" not in items.columns
    assert (items["guess"] < items["ceiling"]).all()
    assert summary["engine_info"]["priors"]["items_with_options_count"] == 30
    info = summary["engine_info"]
    for key in ("criterion", "criterion_name", "convergence_rule", "projected_gradient_max_abs", "projected_gradient_norm"):
        assert key in info
    # held-out probabilities are the standard 4PL's: between the item's floor and ceiling
    h = held.join(items.select("item_id", "guess", "ceiling"), on="item_id")
    assert h.height > 0 and ((h["p"] >= h["guess"] - 1e-9) & (h["p"] <= h["ceiling"] + 1e-9)).all()


def test_calibration_figure_draws_standard_4pl_curves():
    from crossdiff.bins.figures import calibration

    n = 50
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(n)], "difficulty": np.linspace(-2, 2, n),
                          "discrimination": np.full(n, 1.5), "accuracy": np.full(n, 0.5),
                          "guess": np.linspace(0.2, 0.3, n), "ceiling": np.linspace(0.8, 0.9, n)})
    rng = np.random.default_rng(0)
    held = pl.DataFrame({"p": rng.random(100), "correct": rng.integers(0, 2, 100)})
    fig = calibration(held, "t", irt_items=items, model="4pl-standard")
    picked = items.sort("difficulty")
    for q, line in zip((0.1, 0.3, 0.5, 0.7, 0.9), fig.axes[1].get_lines()):
        row = picked.row(int(q * n), named=True)
        x, y = line.get_xdata(), line.get_ydata()
        want = asymptotes(expit(1.5 * (x - row["difficulty"])), None, "4pl-standard", row["guess"], row["ceiling"])
        np.testing.assert_allclose(y, want)
        assert y.min() >= row["guess"] - 1e-12 and y.max() <= row["ceiling"] + 1e-12


def test_fast_1pl_c_sweep_and_torch_sweep_agree(monkeypatch):
    """The 1PL's fused C sweep and its torch fallback reach the same optimum."""
    from crossdiff.irt import fast

    Y, obs, truth = simulate("1pl", 150, 120, missing=0.3, seed=12)
    c = fast.fit(Y, obs, IrtSettings())
    monkeypatch.setenv("CROSSDIFF_IRT_KERNEL", "numpy")
    t = fast.fit(Y, obs, IrtSettings())
    assert c.info["kernel"] == "C" and t.info["kernel"] == "torch"
    assert c.info["converged"] and t.info["converged"]
    np.testing.assert_allclose(c.difficulty, t.difficulty, atol=2e-5)
    np.testing.assert_allclose(c.ability, t.ability, atol=2e-5)
    assert c.info["objective"] == pytest.approx(t.info["objective"], rel=1e-7)
