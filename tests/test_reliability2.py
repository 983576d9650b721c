"""Reliability sweep, round 2 (issue 20): unit-level checks of the smaller items."""

import numpy as np
import polars as pl
import pytest

from crossdiff.errors import CrossdiffError


# ------------------------------------------------------------------ item 4: curricula over zero-shot bins
@pytest.mark.parametrize("order", ["easy_to_hard", "hard_to_easy"])
def test_curriculum_over_zero_shot_bins_follows_the_bins(order):
    """Zero-shot bins cut a 0/1 measure with ties by IRT difficulty: the curriculum's bin sequence is
    monotone (before: sorted by (measure, item_id), the bins interleaved)."""
    from crossdiff.bins.make import _bins_by
    from crossdiff.study.designs import select_training_items

    rng = np.random.default_rng(3)
    n = 60
    items = pl.DataFrame({"item_id": [f"q{i:02d}" for i in range(n)], "difficulty": rng.normal(size=n),
                          "measure": rng.integers(0, 2, size=n).astype(float)})
    table, _ = _bins_by(items, 3, "irt", "measure", ("difficulty",))
    chosen = select_training_items(table, [0, 1, 2], order=order)
    seq = chosen["bin"].to_list()
    assert seq == sorted(seq, reverse=order == "hard_to_easy"), seq
    within = chosen.filter(pl.col("bin") == 1)
    m, d = within["measure"].to_list(), within["difficulty"].to_list()
    pairs = list(zip(m, d))
    assert pairs == sorted(pairs, reverse=order == "hard_to_easy")
