"""IRT parameter recovery through the fitting stage on a simulated leaderboard (known 2PL truth)."""

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from crossdiff.items.synthetic import generate_items
from crossdiff.irt.base import IrtSettings
from crossdiff.irt.fit import fit_dataset, holdout_mask
from crossdiff.responses.simulate import simulate


@pytest.fixture(scope="module")
def leaderboard():
    items = generate_items(1000, seed=11)
    return simulate(items, n_models=300, missing_rate=0.05, n_duplicates=0, seed=12)


@pytest.mark.parametrize("engine", ["fast", "py-irt"])
def test_recovers_difficulty_and_ability(leaderboard, engine):
    responses, truth_items, truth_models = leaderboard
    items, models, held, summary = fit_dataset(responses, IrtSettings(engine=engine, seed=3), holdout_fraction=0.05)
    d = items.join(truth_items, on="item_id", suffix="_true")
    a = models.join(truth_models, on="model_id", suffix="_true")
    assert spearmanr(d["difficulty"], d["difficulty_true"]).statistic >= 0.95
    assert spearmanr(a["ability"], a["ability_true"]).statistic >= 0.95
    # the held-out 5% is predicted far better than the majority class
    h = summary["heldout"]
    assert h["n_cells"] == held.height > 0.04 * summary["n_responses"]
    assert h["accuracy"] > h["majority_baseline_accuracy"] + 0.15
    assert summary["n_train_responses"] + h["n_cells"] == summary["n_responses"]
    assert items["difficulty_sd"].is_not_nan().all() and (items["difficulty_sd"] > 0).all()


def test_holdout_is_seeded_and_keeps_every_row_and_column():
    rng = np.random.default_rng(0)
    observed = rng.random((40, 30)) < 0.5
    observed[0, :] = False
    observed[0, 0] = True  # a model with a single response must keep it
    a, b = holdout_mask(observed, 0.2, seed=1), holdout_mask(observed, 0.2, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, holdout_mask(observed, 0.2, seed=2))
    assert not (a & ~observed).any()
    train = observed & ~a
    assert (train.sum(0)[observed.sum(0) > 0] > 0).all() and (train.sum(1)[observed.sum(1) > 0] > 0).all()
    assert 0.15 < a.sum() / observed.sum() < 0.25


def test_same_seed_same_difficulties(leaderboard):
    responses = leaderboard[0].filter(pl.col("item_id") < "arith-200")
    one = fit_dataset(responses, IrtSettings(engine="fast", seed=7), 0.05)[0]
    two = fit_dataset(responses, IrtSettings(engine="fast", seed=7), 0.05)[0]
    assert one.equals(two)
