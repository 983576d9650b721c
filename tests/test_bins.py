import numpy as np
import polars as pl
import pytest

from crossdiff.bins.make import bin_sizes, make_bins
from crossdiff.errors import CrossdiffError

from conftest import crossdiff_cli


def items(n, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    d = np.round(rng.normal(size=n), 1) if ties else rng.normal(size=n)
    return pl.DataFrame({"item_id": [f"q{i:04d}" for i in rng.permutation(n)], "difficulty": d, "accuracy": rng.random(n)})


@pytest.mark.parametrize("n, k", [(1000, 10), (1003, 10), (997, 10), (25, 3), (10, 10)])
def test_exact_equal_sizes(n, k):
    table, summary = make_bins(items(n), k)
    sizes = summary["size"].to_list()
    assert sum(sizes) == n and len(sizes) == k and max(sizes) - min(sizes) <= (0 if n % k == 0 else 1)
    assert sizes == bin_sizes(n, k) == sorted(sizes, reverse=True)
    assert table["item_id"].n_unique() == n


def test_monotone_ranges_and_bin0_easiest():
    table, summary = make_bins(items(1000, seed=3), 10)
    mins, maxs = summary["difficulty_min"].to_numpy(), summary["difficulty_max"].to_numpy()
    assert np.all(mins[1:] >= maxs[:-1]) and np.all(maxs >= mins)
    assert table.filter(pl.col("bin") == 0)["difficulty"].max() <= table.filter(pl.col("bin") == 9)["difficulty"].min()


def test_ties_broken_by_item_id():
    df = pl.DataFrame({"item_id": ["c", "a", "d", "b"], "difficulty": [0.0, 0.0, 0.0, 0.0]})
    table, _ = make_bins(df, 2)
    assert table.filter(pl.col("bin") == 0)["item_id"].to_list() == ["a", "b"]


def test_deterministic_byte_identical(tmp_path):
    src = tmp_path / "irt.parquet"
    items(1000, seed=5, ties=True).write_parquet(src)
    outs = []
    for run in (1, 2):
        out = tmp_path / f"bins{run}.parquet"
        proc = crossdiff_cli("make-bins", "--items", str(src), "--n-bins", "10", "--output", str(out),
                             "--summary", str(tmp_path / f"summary{run}.csv"))
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert (tmp_path / "summary1.csv").read_bytes() == (tmp_path / "summary2.csv").read_bytes()


def test_too_few_items_and_missing_difficulty():
    with pytest.raises(CrossdiffError, match="5 items cannot fill 10 bins"):
        make_bins(items(5), 10)
    bad = items(20).with_columns(pl.when(pl.col("item_id") == "q0003").then(None).otherwise(pl.col("difficulty")).alias("difficulty"))
    with pytest.raises(CrossdiffError, match="item 'q0003' has no difficulty"):
        make_bins(bad, 4)
