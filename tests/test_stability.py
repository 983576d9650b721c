import numpy as np
import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.bins.stability import compare


def table(d):
    return pl.DataFrame({"item_id": [f"q{i:03d}" for i in range(len(d))], "difficulty": d})


def test_identical_fits_move_nothing():
    d = np.random.default_rng(0).normal(size=200)
    r = compare(table(d), table(d * 1.3 + 0.5), n_bins=10)  # a monotone rescaling keeps every bin
    assert r["share_changed_bin"] == 0.0 and r["max_bin_shift"] == 0
    assert r["spearman_difficulty"] == pytest.approx(1.0) and r["scale_ratio"] == pytest.approx(1.3)


def test_swapped_items_are_counted():
    d = np.arange(100, dtype=float)  # 10 bins of 10
    e = d.copy()
    e[[0, 99]] = e[[99, 0]]  # easiest and hardest swap: both move 9 bins
    e[[9, 10]] = e[[10, 9]]  # neighbours across a bin edge: both move 1 bin
    r = compare(table(d), table(e), n_bins=10)
    assert r["share_changed_bin"] == pytest.approx(0.04)
    assert r["share_moved_2plus_bins"] == pytest.approx(0.02) and r["max_bin_shift"] == 9


def test_different_items_rejected():
    with pytest.raises(CrossdiffError, match="replicate fit has 5 of the reference's 6 items"):
        compare(table(np.arange(6.0)), table(np.arange(5.0)), n_bins=2)
