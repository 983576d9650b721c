import json

import numpy as np
import polars as pl
import pytest

from crossdiff.results.aggregate import aggregate, paired_bootstrap
from crossdiff.errors import CrossdiffError
from crossdiff.results.heatmaps import _matrix, plot_all


def test_interval_covers_point_estimate():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 200)
    b = rng.integers(0, 2, 200)
    lo, hi = paired_bootstrap(a, b, n_boot=1000, seed=3)
    assert lo <= a.mean() - b.mean() <= hi
    assert paired_bootstrap(a, b, n_boot=1000, seed=3) == (lo, hi)  # seeded


def test_large_gain_excludes_zero_and_no_gain_includes_zero():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, 200)
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 40, replace=False)] = 1  # +0.2 on the same items
    lo, hi = paired_bootstrap(better, base, n_boot=1000, seed=0)
    assert lo > 0.1
    same = base.copy()
    same[np.flatnonzero(base == 0)[:3]] = 1
    same[np.flatnonzero(base == 1)[:3]] = 0  # no net gain
    lo, hi = paired_bootstrap(same, base, n_boot=1000, seed=0)
    assert lo < 0 < hi


def test_pairing_narrows_the_interval():
    # both models solve exactly the same items except 8 more for the checkpoint: paired CI excludes 0
    base = np.array([1] * 50 + [0] * 50)
    better = base.copy()
    better[50:58] = 1
    lo, _ = paired_bootstrap(better, base, n_boot=2000, seed=0)
    assert lo > 0
    # an unpaired bootstrap (independent resamples) of the same data would include 0
    rng = np.random.default_rng(0)
    diffs = [rng.choice(better, 100).mean() - rng.choice(base, 100).mean() for _ in range(2000)]
    assert np.quantile(diffs, 0.025) < 0


def _write(dirpath, model, train_bin, test_bin, correct, ids=None):
    ids = ids or [f"i{k}" for k in range(len(correct))]
    name = f"{train_bin}_bin{test_bin}"
    (dirpath / f"{name}.samples.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "correct": int(c), "prediction": "x"}) + "\n" for i, c in zip(ids, correct))
    )
    path = dirpath / f"{name}.json"
    path.write_text(json.dumps({"model": model, "dataset": "arith", "train_bin": train_bin, "test_bin": test_bin,
                                "metric": "exact_match", "value": float(np.mean(correct)), "stderr": 0.01,
                                "n_items": len(correct), "samples": f"{name}.samples.jsonl"}))
    return path


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    zs = {t: rng.integers(0, 2, 100) for t in range(3)}
    for t in range(3):
        paths.append(_write(tmp_path, "tiny", "zero-shot", t, zs[t]))
    for b in range(3):
        for t in range(3):
            c = zs[t].copy()
            if b == 0 and t == 1:  # big gain on one off-diagonal cell
                c[np.flatnonzero(c == 0)[:30]] = 1
            paths.append(_write(tmp_path, "tiny", str(b), t, c))
    return paths


def test_aggregate_table(results, tmp_path):
    df = aggregate(results, {"n_boot": 500})
    assert df.height == 12
    zs = df.filter(pl.col("train_bin") == "zero-shot")
    assert zs["gain"].to_list() == [0.0, 0.0, 0.0] and zs["gain_lo"].null_count() == 3
    cell = df.filter((pl.col("train_bin") == "0") & (pl.col("test_bin") == 1)).row(0, named=True)
    assert cell["gain"] == pytest.approx(0.30)
    assert cell["gain_lo"] > 0 and cell["significant"] and cell["bin_gap"] == -1
    others = df.filter((pl.col("train_bin") != "zero-shot") & ~((pl.col("train_bin") == "0") & (pl.col("test_bin") == 1)))
    assert others["gain"].to_list() == [0.0] * 8
    assert not others["significant"].any()

    figs = plot_all(df, tmp_path / "fig")
    assert len(figs) == 4
    for f in figs:
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "fig").glob(".*"))  # no temporary leftovers


def test_mismatched_items_are_an_error(tmp_path):
    paths = [_write(tmp_path, "m", "zero-shot", 0, [1, 0, 1]), _write(tmp_path, "m", "0", 0, [1, 1, 1], ids=["a", "b", "c"])]
    with pytest.raises(CrossdiffError, match="cannot pair"):
        aggregate(paths)


def test_matrix_layout():
    df = pl.DataFrame({"train_bin": ["zero-shot", "0", "1"], "test_bin": [1, 0, 1], "value": [0.5, 0.7, 0.9]})
    m = _matrix(df, "value", ["zero-shot", "0", "1"], [0, 1])
    assert np.isnan(m[0, 0]) and m[0, 1] == 0.5 and m[1, 0] == 0.7 and m[2, 1] == 0.9
