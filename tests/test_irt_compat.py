"""``py-irt-compatible`` reproduces the installed py-irt for the same seed."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / py-irt are imported

import numpy as np
import pytest
from scipy.special import expit

from crossdiff.irt import compat
from crossdiff.irt.base import IrtSettings


def simulate(M, N, missing, seed):
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    Y = (rng.random((M, N)) < expit(theta[:, None] - b)).astype(np.uint8)
    return Y, rng.random((M, N)) >= missing


def pyirt_fit(Y, observed, settings):
    pytest.importorskip("py_irt")
    try:
        from crossdiff.irt.pyirt_engine import fit
    except ImportError:
        pytest.skip("crossdiff.irt.pyirt_engine not available")
    return fit(Y, observed, settings)


# Tolerances: the 1PL replay agrees with py-irt to ~1e-6 (float32 rounding only); asserted at 1e-4.
# The 2PL agrees to ~2e-4 (discrimination; abilities/difficulties ~1e-5): its slope scale starts at
# 1e-6, where float32 rounding inside pyro's log-densities is relatively large. Asserted at 1e-3.
@pytest.mark.parametrize("model,M,N,missing,epochs,atol", [
    ("1pl", 30, 40, 0.0, 200, 1e-4),
    ("1pl", 30, 40, 0.3, 200, 1e-4),
    ("1pl", 80, 200, 0.3, 400, 1e-4),  # difficulty scale still large: capped logits, halvings, excess
    ("2pl", 30, 40, 0.0, 200, 1e-3),
    ("2pl", 30, 40, 0.3, 200, 1e-3),
])
def test_matches_pyirt(model, M, N, missing, epochs, atol):
    Y, observed = simulate(M, N, missing, seed=11)
    settings = IrtSettings(model=model, epochs=epochs, seed=3)
    ref = pyirt_fit(Y, observed, settings)
    ours = compat.fit(Y, observed, settings)
    np.testing.assert_allclose(ours.difficulty, ref.difficulty, atol=atol)
    np.testing.assert_allclose(ours.ability, ref.ability, atol=atol)
    np.testing.assert_allclose(ours.difficulty_sd, ref.difficulty_sd, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(ours.ability_sd, ref.ability_sd, atol=atol, rtol=1e-4)
    if model == "2pl":
        np.testing.assert_allclose(ours.discrimination, ref.discrimination, atol=atol)
    # a different seed gives a visibly different replay: the match is not seed-independent
    other = compat.fit(Y, observed, IrtSettings(model=model, epochs=epochs, seed=4))
    assert np.abs(other.difficulty - ref.difficulty).max() > 100 * atol


@pytest.mark.parametrize("two_pl", [False, True])
@pytest.mark.parametrize("missing", [0.0, 0.3])
@pytest.mark.parametrize("scale", [1.0, 8.0, 60.0, 3000.0, "stable"])
def test_likelihood_matches_float64(two_pl, missing, scale):
    """NLL and gradient of every path (plain, capped with excess, stable) against float64 autograd-free sums."""
    torch = pytest.importorskip("torch")
    M, N = 70, 130
    Y, observed = simulate(M, N, missing, seed=5)
    lik = compat._DenseBernoulli(Y, observed, two_pl, torch.device("cpu"), torch)
    gen = torch.Generator().manual_seed(1)
    if scale == "stable":  # |theta| > SAFE_ABILITY
        theta, b = torch.randn(M, generator=gen) * 40, torch.randn(N, generator=gen) * 5
    else:
        theta, b = torch.randn(M, generator=gen) * 2, torch.randn(N, generator=gen) * scale
    log_a = torch.randn(N, generator=gen) * 0.3
    z = torch.cat([theta, b] + ([log_a] if two_pl else []))
    g = torch.empty_like(z)
    nll = lik.evaluate(z, g)
    assert lik.stable_epochs == (1 if scale == "stable" else 0)

    a = log_a.double().exp() if two_pl else torch.ones(N, dtype=torch.float64)
    d = theta.double()[:, None] - b.double()[None, :]
    x = a * d
    y, o = torch.from_numpy(Y).double(), torch.from_numpy(observed).double()
    ref = float(((torch.nn.functional.softplus(x) - y * x) * o).sum())
    r = (torch.sigmoid(x) - y) * o
    assert abs(nll - ref) <= 1e-7 * ref
    np.testing.assert_allclose(g[:M].double(), (r * a).sum(1), atol=1e-4)
    np.testing.assert_allclose(g[M:M + N].double(), -(r * a).sum(0), atol=1e-4)
    if two_pl:
        np.testing.assert_allclose(g[M + N:].double(), (r * d).sum(0) * a, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_item_order_follows_first_appearance():
    observed = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]], bool)
    np.testing.assert_array_equal(compat.pyirt_item_order(observed), [1, 3, 0, 2])


def test_unsupported_is_explicit():
    Y, observed = simulate(5, 6, 0.0, seed=1)
    with pytest.raises(NotImplementedError, match="1pl/vague"):
        compat.fit(Y, observed, IrtSettings(priors="hierarchical"))


def test_empty_rows_and_columns_are_refused():
    Y, observed = simulate(5, 6, 0.0, seed=1)
    observed[:, 2] = False
    with pytest.raises(ValueError, match="items"):
        compat.fit(Y, observed, IrtSettings(epochs=2))
    observed[:, 2] = True
    observed[3] = False
    with pytest.raises(ValueError, match="models"):
        compat.fit(Y, observed, IrtSettings(epochs=2))
