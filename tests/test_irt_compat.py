"""``py-irt-compatible`` reproduces the installed py-irt for the same seed."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / py-irt are imported

import numpy as np
import pytest
from scipy.special import expit

from crossdiff.irt import compat
from crossdiff.irt.base import IrtSettings

pytest.importorskip("py_irt")


def simulate(M, N, missing, seed):
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=M), rng.normal(size=N)
    Y = (rng.random((M, N)) < expit(theta[:, None] - b)).astype(np.uint8)
    return Y, rng.random((M, N)) >= missing


def pyirt_fit(Y, observed, settings):
    try:
        from crossdiff.irt.pyirt_engine import fit
    except ImportError:
        pytest.skip("crossdiff.irt.pyirt_engine not available")
    return fit(Y, observed, settings)


@pytest.mark.parametrize("model,missing,atol", [("1pl", 0.0, 1e-4), ("1pl", 0.3, 1e-4), ("2pl", 0.3, 1e-3)])
def test_matches_pyirt(model, missing, atol):
    Y, observed = simulate(30, 40, missing, seed=11)
    settings = IrtSettings(model=model, epochs=200, seed=3)
    ref = pyirt_fit(Y, observed, settings)
    ours = compat.fit(Y, observed, settings)
    np.testing.assert_allclose(ours.difficulty, ref.difficulty, atol=atol)
    np.testing.assert_allclose(ours.ability, ref.ability, atol=atol)
    np.testing.assert_allclose(ours.difficulty_sd, ref.difficulty_sd, atol=atol, rtol=1e-4)
    if model == "2pl":
        np.testing.assert_allclose(ours.discrimination, ref.discrimination, atol=atol)
    # a different seed gives a visibly different replay: the match is not seed-independent
    other = compat.fit(Y, observed, IrtSettings(model=model, epochs=200, seed=4))
    assert np.abs(other.difficulty - ref.difficulty).max() > 100 * atol


def test_item_order_follows_first_appearance():
    observed = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]], bool)
    np.testing.assert_array_equal(compat.pyirt_item_order(observed), [1, 3, 0, 2])


def test_unsupported_is_explicit():
    Y, observed = simulate(5, 6, 0.0, seed=1)
    with pytest.raises(NotImplementedError, match="1pl/vague"):
        compat.fit(Y, observed, IrtSettings(priors="hierarchical"))
