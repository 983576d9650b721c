"""The ``fast`` engine: accuracy, exactness of the MAP, extremes, missing cells, determinism."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / py-irt are imported

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from scipy.stats import spearmanr

from crossdiff.irt import fast
from crossdiff.irt.base import IrtSettings


def simulate(M, N, missing=0.0, seed=0, two_pl=False):
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    a = np.exp(rng.normal(0, 0.3, N)) if two_pl else np.ones(N)
    Y = (rng.random((M, N)) < expit(a * (theta[:, None] - b))).astype(np.uint8)
    observed = rng.random((M, N)) >= missing
    return Y, observed, theta, b


def neg_log_posterior(params, Y, observed, model):
    """Independent objective: py-irt's vague priors, log a parameterisation for the 2PL."""
    M, N = Y.shape
    theta, b = params[:M], params[M:M + N]
    if model == "1pl":
        a, prior = np.ones(N), b @ b / 2e6
    else:
        eta = params[M + N:]
        a, prior = np.exp(eta), (b @ b + eta @ eta) / (2 * 0.01)
    x = a * (theta[:, None] - b)
    ll = np.where(Y == 1, log_expit(x), log_expit(-x))
    r = np.where(observed, expit(x) - Y, 0.0)  # d NLL / d x
    grad = [r @ a + theta, -(r.sum(0) * a) + (b / 1e6 if model == "1pl" else b / 0.01)]
    if model == "2pl":
        grad.append(a * (theta @ r - b * r.sum(0)) + eta / 0.01)
    return -ll[observed].sum() + theta @ theta / 2 + prior, np.concatenate(grad)


@pytest.mark.parametrize("model", ["1pl", "2pl"])
def test_matches_independent_lbfgs(model):
    Y, observed, _, _ = simulate(40, 30, missing=0.3, seed=1, two_pl=model == "2pl")
    res = fast.fit(Y, observed, IrtSettings(model=model))
    assert res.info["converged"]
    M, N = Y.shape
    x0 = np.zeros(M + N * (2 if model == "2pl" else 1))
    opt = minimize(neg_log_posterior, x0, args=(Y, observed, model), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-10, "ftol": 1e-15})
    np.testing.assert_allclose(res.ability, opt.x[:M], atol=1e-4)
    np.testing.assert_allclose(res.difficulty, opt.x[M:M + N], atol=1e-4)
    if model == "2pl":
        np.testing.assert_allclose(np.log(res.discrimination), opt.x[M + N:], atol=1e-4)
    assert res.info["objective"] == pytest.approx(opt.fun, rel=1e-6)


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_recovers_truth(missing):
    Y, observed, theta, b = simulate(300, 400, missing=missing, seed=2)
    res = fast.fit(Y, observed, IrtSettings())
    assert res.info["converged"] and res.info["iterations"] < 50
    assert spearmanr(res.difficulty, b)[0] > 0.98
    assert spearmanr(res.ability, theta)[0] > 0.98
    # Laplace sd: about 1 / sqrt(n * p (1 - p)), i.e. near 2 / sqrt(n observed per item)
    n = observed.sum(0)
    assert np.median(res.difficulty_sd * np.sqrt(n)) == pytest.approx(2.2, rel=0.15)


def test_missing_cells_are_ignored():
    Y, observed, _, _ = simulate(60, 50, missing=0.3, seed=3)
    flipped = np.where(observed, Y, 1 - Y).astype(np.uint8)  # change every missing cell's value
    a = fast.fit(Y, observed, IrtSettings())
    b = fast.fit(flipped, observed, IrtSettings())
    np.testing.assert_array_equal(a.difficulty, b.difficulty)
    # while treating them as observed does change the fit
    c = fast.fit(flipped, np.ones_like(observed), IrtSettings())
    assert np.abs(c.difficulty - a.difficulty).max() > 0.1


@pytest.mark.parametrize("model", ["1pl", "2pl"])
def test_extremes_are_finite_and_reported(model):
    Y, observed, _, _ = simulate(80, 60, missing=0.2, seed=4)
    Y[:, 0] = 1  # all-correct item
    Y[:, 1] = 0  # all-wrong item
    Y[5, :] = 1  # all-correct model
    Y[6, :] = 0  # all-wrong model
    Y[5, 1] = Y[6, 0] = 0  # keep items 0/1 extreme only where observed ...
    observed[5, 1] = observed[6, 0] = False  # ... by hiding the two cells that would break them
    res = fast.fit(Y, observed, IrtSettings(model=model))
    assert res.info["converged"]
    assert res.info["extreme_items"] == {"all_correct": [0], "all_wrong": [1]}
    assert res.info["extreme_models"] == {"all_correct": [5], "all_wrong": [6]}
    assert np.isfinite(res.difficulty).all() and np.isfinite(res.ability).all()
    assert np.isfinite(res.difficulty_sd).all()
    others = np.delete(res.difficulty, [0, 1])
    assert res.difficulty[0] < others.min() and res.difficulty[1] > others.max()
    others = np.delete(res.ability, [5, 6])
    assert res.ability[5] > others.max() and res.ability[6] < others.min()
    if model == "1pl":  # the vague N(0, 1000) prior alone holds them: far out but finite
        assert 5 < -res.difficulty[0] < 40 and 5 < res.difficulty[1] < 40


def test_extreme_item_is_the_prior_bounded_optimum():
    """The all-correct item's value is the exact minimum of its own 1-D objective."""
    Y, observed, _, _ = simulate(50, 20, seed=5)
    Y[:, 0] = 1
    res = fast.fit(Y, observed, IrtSettings())

    def objective(b0):
        return -log_expit(res.ability - b0).sum() + b0**2 / 2e6

    grid = res.difficulty[0] + np.array([-1e-3, 0.0, 1e-3])
    values = [objective(v) for v in grid]
    assert values[1] < values[0] and values[1] < values[2]


def test_hierarchical_converges():
    Y, observed, _, b = simulate(150, 120, missing=0.3, seed=6)
    res = fast.fit(Y, observed, IrtSettings(priors="hierarchical"))
    assert res.info["converged"]
    assert spearmanr(res.difficulty, b)[0] > 0.97
    assert abs(res.info["priors"]["mu_theta"] + res.info["priors"]["mu_b"]) < 1e-6
    with pytest.raises(ValueError, match="2pl/hierarchical"):
        fast.fit(Y, observed, IrtSettings(model="2pl", priors="hierarchical"))


def test_deterministic():
    Y, observed, _, _ = simulate(120, 90, missing=0.3, seed=7)
    r1 = fast.fit(Y, observed, IrtSettings(seed=1))
    r2 = fast.fit(Y, observed, IrtSettings(seed=2))
    np.testing.assert_array_equal(r1.difficulty, r2.difficulty)
    np.testing.assert_array_equal(r1.ability, r2.ability)


def _pyirt_fit(Y, observed, settings):
    try:
        from crossdiff.irt.pyirt_engine import fit
    except ImportError:
        pytest.skip("crossdiff.irt.pyirt_engine not available")
    return fit(Y, observed, settings)


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_at_least_as_accurate_as_pyirt(missing):
    pytest.importorskip("py_irt")
    Y, observed, _, b = simulate(200, 300, missing=missing, seed=8)
    ours = fast.fit(Y, observed, IrtSettings())
    ref = _pyirt_fit(Y, observed, IrtSettings(engine="py-irt", epochs=300, seed=0))
    assert spearmanr(ours.difficulty, b)[0] >= spearmanr(ref.difficulty, b)[0]
