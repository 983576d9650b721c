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


# ------------------------------------------------------------------ item 5: seeds that change nothing
def test_seeds_with_a_full_fine_tune_curriculum_are_refused():
    from crossdiff.study.designs import check_seed_variance

    study = {"train_sets": {"up": {"bins": "all", "order": "easy_to_hard"}}, "seeds": [1, 2]}
    with pytest.raises(CrossdiffError, match=r"study.seeds.*\['up'\].*every seed repeats the same model"):
        check_seed_variance(study, {"lora": None})
    check_seed_variance(study, {"lora": {"r": 8}})  # LoRA: a seeded initialisation
    check_seed_variance({**study, "seeds": [1]}, {"lora": None})
    check_seed_variance({"train_sets": {"s": {"bins": [0]}}, "seeds": [1, 2]}, {"lora": None})  # shuffled


# ------------------------------------------------------------------ item 10: a bin listed twice
def test_train_bins_listing_a_bin_twice_is_refused():
    from crossdiff.study.designs import check_design

    with pytest.raises(CrossdiffError, match=r"study.train_bins: \[0, 0, 2\] lists a value twice"):
        check_design({"train_bins": [0, 0, 2]}, 3)
