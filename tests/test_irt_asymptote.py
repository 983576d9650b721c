"""3PL / 4PL (irt.model: 3pl | 4pl): the fast engine's MAP, py-irt's own models, fit tables.

The paper-scale figure (2000 models x 1000 items) is measured by benchmarks/irt_asymptote_recovery.py;
here a smaller matrix keeps the test within seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from crossdiff.errors import CrossdiffError
from crossdiff.irt.base import IrtSettings, asymptotes
from crossdiff.irt.engines import fit_engine
from crossdiff.irt.fit import fit_dataset


def simulate(model: str, M: int, N: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    theta, b, a = rng.normal(size=M), rng.normal(size=N), np.exp(rng.normal(0, 0.3, size=N))
    lam = rng.uniform(0, 0.3, N) if model == "3pl" else rng.uniform(0.7, 1.0, N)
    p = asymptotes(1 / (1 + np.exp(-a * (theta[:, None] - b))), lam, model)
    return (rng.random((M, N)) < p).astype(np.uint8), {"theta": theta, "b": b, "lambdas": lam}


@pytest.mark.parametrize("model", ["3pl", "4pl"])
def test_fast_recovers_difficulty_and_asymptote(model):
    Y, truth = simulate(model, 600, 150)
    observed = np.ones(Y.shape, bool)
    observed[np.random.default_rng(1).random(Y.shape) < 0.1] = False  # 10% missing cells
    r = fit_engine(Y, observed, IrtSettings(engine="fast", model=model))
    assert r.info["converged"], r.info
    assert r.model == model and r.lambdas.shape == (150,)
    assert np.all((r.lambdas > 0) & (r.lambdas < 1))
    rho_b = spearmanr(r.difficulty, truth["b"]).statistic
    rho_theta = spearmanr(r.ability, truth["theta"]).statistic
    rho_lam = spearmanr(r.lambdas, truth["lambdas"]).statistic
    assert rho_b >= 0.9, rho_b
    assert rho_theta >= 0.95, rho_theta
    assert rho_lam >= 0.2, rho_lam  # the weakest-identified parameter (600 models: 0.25-0.3; 2000 x 1000: 0.45)
    # a 3PL's predicted probability never falls below its floor; a 4PL's never exceeds its ceiling
    rows, cols = np.nonzero(observed)
    p = r.probability(rows, cols)
    if model == "3pl":
        assert np.all(p >= r.lambdas[cols] - 1e-12)
    else:
        assert np.all(p <= r.lambdas[cols] + 1e-12)


def test_fast_agrees_with_pyirt_4pl_on_the_same_matrix():
    pytest.importorskip("py_irt")
    Y, truth = simulate("4pl", 200, 60, seed=3)
    observed = np.ones(Y.shape, bool)
    fast = fit_engine(Y, observed, IrtSettings(engine="fast", model="4pl"))
    ref = fit_engine(Y, observed, IrtSettings(engine="py-irt", model="4pl", epochs=500))
    assert ref.lambdas is not None and ref.model == "4pl"
    rho = spearmanr(fast.difficulty, ref.difficulty).statistic
    assert rho >= 0.85, rho


def test_fit_tables_record_the_model_and_lambdas():
    Y, _ = simulate("3pl", 300, 80, seed=5)
    m, n = np.nonzero(np.ones_like(Y))
    df = pl.DataFrame({"model_id": [f"m{i:03d}" for i in m], "item_id": [f"i{j:03d}" for j in n],
                       "correct": Y[m, n].astype(np.int8)})
    items, _, held, summary = fit_dataset(df, IrtSettings(engine="fast", model="3pl"), 0.05)
    assert summary["model"] == "3pl" and summary["engine_info"]["converged"]
    assert "lambdas" in items.columns and items["lambdas"].is_between(0, 1).all()
    assert summary["heldout"]["n_cells"] > 0
    # held-out probabilities are the 3PL's: at least the item's floor
    floor = held.join(items.select("item_id", "lambdas"), on="item_id")
    assert (floor["p"] >= floor["lambdas"] - 1e-9).all()


def test_compatible_engine_refuses_3pl_by_name():
    Y, _ = simulate("3pl", 20, 10)
    with pytest.raises(CrossdiffError, match="3pl"):
        fit_engine(Y, np.ones(Y.shape, bool), IrtSettings(engine="py-irt-compatible", model="3pl"))


@pytest.mark.parametrize("model", ["3pl", "4pl", "1pl"])
def test_calibration_figure_draws_the_fitted_curves(model):
    """Issue 21: the calibration figure shows the fitted curves, floors (3PL) and ceilings (4PL) included."""
    import polars as pl

    from crossdiff.bins.figures import calibration

    rng = np.random.default_rng(0)
    n = 50
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(n)], "difficulty": np.linspace(-2, 2, n),
                          "discrimination": np.full(n, 1.5), "accuracy": np.full(n, 0.5)})
    if model != "1pl":
        items = items.with_columns(pl.Series("lambdas", np.linspace(0.2, 0.3, n) if model == "3pl" else np.linspace(0.7, 0.9, n)))
    held = pl.DataFrame({"p": rng.random(200), "correct": rng.integers(0, 2, 200)})
    fig = calibration(held, "t", irt_items=items, model=model)
    right = fig.axes[1]
    lines = right.get_lines()
    assert len(lines) == 5
    picked = items.sort("difficulty")
    for q, line in zip((0.1, 0.3, 0.5, 0.7, 0.9), lines):
        row = picked.row(int(q * n), named=True)
        x, y = line.get_xdata(), line.get_ydata()
        s = 1.0 / (1.0 + np.exp(-1.5 * (x - row["difficulty"])))
        if model == "3pl":  # the guessing floor lambdas: never below it, 1 at high ability
            assert np.allclose(y, row["lambdas"] + (1 - row["lambdas"]) * s) and y.min() >= row["lambdas"]
        elif model == "4pl":  # py-irt's 4PL: the upper asymptote lambdas, never above it
            assert np.allclose(y, row["lambdas"] * s) and y.max() <= row["lambdas"]
        else:
            assert np.allclose(y, s)
    assert len(calibration(held, "t").axes) == 1  # without a model: the calibration panel alone
