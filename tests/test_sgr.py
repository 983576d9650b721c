"""Supervision Gap Recovered (summary.sgr; crossdiff/results/sgr.py) against Hase et al.'s definition
(allenai/easy-to-hard-generalization @ ad8358e, analysis.Rmd:867 SGR = (Easy - Unsupervised) / (Hard - Unsupervised);
analysis.Rmd:1302 SGR_point over the item x run matrices; analysis.Rmd:1128-1180 bootstrapBminusAoverCminusA):
a hand computation on a fixed results table per test level, an interval that covers it, their bootstrap transcribed
line by line (the same draws: equal replicates; their own index draws: the same interval), shared-ICL bootstraps
and seeds as a cell's runs, the denominator's interval reported (no silent division), parse checks."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan
from crossdiff.results.sgr import compute, paired_bootstrap, read_runs, sgr

U2 = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # zero-shot on test bin 2: 0.1
E2 = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # trained on bin 0: 0.3
H2 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]  # trained on bin 2: 0.5
U0 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]  # test bin 0: zero-shot 0.5
E0 = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]  # 0.7
H0 = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]  # 0.5 = zero-shot: a zero gap
# shared-protocol ICL cells: 3 bootstraps, None where the item was a demonstration
IE2 = [[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1]] + [[0, 0, 0]] * 6  # item means: 2/3, 1/3, 0, 1/3 -> 4/3 / 10
IH2 = [[1, 1, 1], [1, 1, None], [1, 0, 1], [1, 1, 0], [0, 1, 0]] + [[1, 1, 1]] * 2 + [[0, 0, 0]] * 3


def _write(d, name, correct, runs=None):
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(correct):
        row = {"item_id": f"i{i}", "correct": c}
        if runs is not None:
            row["correct_by_bootstrap"] = runs[i]
        rows.append(row)
    (d / f"{name}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / f"{name}.json").write_text(json.dumps({"samples": f"{name}.samples.jsonl"}))
    return str(d / f"{name}.json")


def _table(tmp_path) -> pl.DataFrame:
    rows = []

    def add(method, train_bin, test_bin, correct, runs=None):
        if runs is not None:
            correct = [float(np.mean([v for v in r if v is not None])) for r in runs]
        path = _write(tmp_path / method / f"train{train_bin}", f"bin{test_bin}", correct, runs)
        rows.append({"model": "m", "dataset": "d", "method": method,
                     "train_bin": "zero-shot" if method == "zero-shot" else str(train_bin),
                     "train_bin_index": None if method == "zero-shot" else train_bin, "test_bin": test_bin,
                     "value": float(np.mean(correct)), "result": path, "train_set": None, "train_size": None})

    add("zero-shot", None, 2, U2)
    add("zero-shot", None, 0, U0)
    add("sft", 0, 2, E2)
    add("sft", 2, 2, H2)
    add("sft", 0, 0, E0)
    add("sft", 2, 0, H0)
    add("sft", 1, 2, [0] * 10)  # the middle bin plays no part
    add("icl-k2", 0, 2, None, IE2)
    add("icl-k2", 2, 2, None, IH2)
    add("icl-k2", 0, 0, E0)
    add("icl-k2", 2, 0, H0)
    return pl.DataFrame(rows, schema_overrides={"train_bin_index": pl.Int64, "train_set": pl.Utf8, "train_size": pl.Int64})


def test_sgr_equals_a_hand_computation_and_its_interval_covers_it(tmp_path):
    out = compute(_table(tmp_path), {"easy": 0, "hard": -1, "n_boot": 2000, "seed": 1}, n_bins=3)
    assert out.height == 4 and out["method"].to_list() == ["sft", "sft", "icl-k2", "icl-k2"]
    r = out.filter((pl.col("method") == "sft") & (pl.col("test_bin") == 2)).row(0, named=True)
    assert (r["easy_bin"], r["hard_bin"]) == (0, 2)
    assert (r["unsupervised"], r["easy"], r["hard"]) == pytest.approx((0.1, 0.3, 0.5))
    assert r["sgr"] == pytest.approx((0.3 - 0.1) / (0.5 - 0.1)) == pytest.approx(0.5)
    assert r["easy_gain"] == pytest.approx(0.2) and r["gap"] == pytest.approx(0.4)
    assert r["sgr_status"] == "ok" and r["gap_lo"] > 0
    assert r["sgr_lo"] <= r["sgr"] <= r["sgr_hi"] and r["sgr_hi"] - r["sgr_lo"] > 0.1
    assert r["n_items"] == 10 and r["n_runs_easy"] == r["n_runs_hard"] == 1 and r["n_finite"] > 1900
    # shared ICL: their SGR_point (analysis.Rmd:1302) = mean over the known (item, bootstrap) cells, 3 runs per cell
    i = out.filter((pl.col("method") == "icl-k2") & (pl.col("test_bin") == 2)).row(0, named=True)
    easy = 4 / 30  # IE2: 4 ones in 30 cells
    hard = 16 / 29  # IH2: 16 ones in 29 known cells (one item was a demonstration in bootstrap 2)
    assert (i["easy"], i["hard"]) == pytest.approx((easy, hard))
    assert i["sgr"] == pytest.approx((easy - 0.1) / (hard - 0.1)) and i["n_runs_easy"] == 3
    assert i["sgr_status"] == "ok" and i["sgr_lo"] <= i["sgr"] <= i["sgr_hi"]
    # hard = zero-shot on test bin 0: no ratio, said so; nothing divided
    z = out.filter((pl.col("method") == "sft") & (pl.col("test_bin") == 0)).row(0, named=True)
    assert z["gap"] == 0 and z["sgr_status"] == "zero_gap" and z["sgr"] is None and z["sgr_lo"] is None
    assert np.isnan(sgr(0.7, 0.5, 0.5)) and sgr(0.3, 0.5, 0.1) == pytest.approx(0.5)
    # the same seed gives the same table
    assert compute(_table(tmp_path), {"easy": 0, "hard": 2, "n_boot": 2000, "seed": 1}, n_bins=3).equals(out)


def test_a_gap_whose_interval_includes_zero_gets_no_sgr_interval(tmp_path):
    table = _table(tmp_path)
    # hard 0.2 vs zero-shot 0.1 on 10 items: the gap's interval includes 0
    path = _write(tmp_path / "weak", "bin2", [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    table = table.with_columns(
        pl.when((pl.col("method") == "sft") & (pl.col("train_bin") == "2") & (pl.col("test_bin") == 2))
        .then(pl.lit(path)).otherwise(pl.col("result")).alias("result"),
        pl.when((pl.col("method") == "sft") & (pl.col("train_bin") == "2") & (pl.col("test_bin") == 2))
        .then(pl.lit(0.2)).otherwise(pl.col("value")).alias("value"))
    r = compute(table, {"n_boot": 2000}, n_bins=3).filter((pl.col("method") == "sft") & (pl.col("test_bin") == 2)).row(0, named=True)
    assert r["gap"] == pytest.approx(0.1) and r["gap_lo"] <= 0 <= r["gap_hi"]
    assert r["sgr"] == pytest.approx(2.0)  # the point value is still given ...
    assert r["sgr_status"] == "gap_interval_includes_0" and r["sgr_lo"] is None and r["sgr_hi"] is None  # ... no interval


def their_statistic(A, B, C, row_idx, a_cols, b_cols, c_cols):
    """One replicate of bootstrapBminusAoverCminusA transcribed (analysis.Rmd:1152-1159): A[row_idx, A_col_idx]
    etc.; a one-column A drops to a vector that R recycles down B's columns; mean(., na.rm=TRUE)."""
    a = A[np.ix_(row_idx, a_cols)]
    b, c = B[np.ix_(row_idx, b_cols)], C[np.ix_(row_idx, c_cols)]
    if a.shape[1] == 1:
        a = a[:, [0]]  # recycled
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean(b - a) / np.nanmean(c - a)


def _cells(seed=0, n=40):
    rng = np.random.default_rng(seed)
    u = (rng.random((n, 1)) < 0.3).astype(float)
    e = (rng.random((n, 3)) < 0.45).astype(float)
    h = (rng.random((n, 4)) < 0.6).astype(float)
    h[:5, 0] = np.nan  # bootstrap 1's demonstrations (shared ICL on its own bin): not tested there
    h[5:10, 2] = np.nan
    return u, e, h


def test_paired_bootstrap_equals_their_statistic_on_the_same_draws():
    u, e, h = _cells()
    mu, me, mh, e_u, h_u = paired_bootstrap(u, e, h, 200, np.random.default_rng(5))
    # the same draws, one replicate at a time: items with replacement (shared), each matrix's runs apart
    draws = np.random.default_rng(5)
    items = draws.multinomial(40, np.full(40, 1 / 40), size=200)
    cols = {1: draws.multinomial(3, np.full(3, 1 / 3), size=200), 2: draws.multinomial(4, np.full(4, 1 / 4), size=200)}
    for b in range(200):
        rows = np.repeat(np.arange(40), items[b])
        ec, hc = np.repeat(np.arange(3), cols[1][b]), np.repeat(np.arange(4), cols[2][b])
        assert e_u[b] / h_u[b] == pytest.approx(their_statistic(u, e, h, rows, [0], ec, hc))
        assert h_u[b] == pytest.approx(np.nanmean(h[np.ix_(rows, hc)] - u[rows]))
        assert (mu[b], me[b], mh[b]) == pytest.approx(
            (u[rows].mean(), e[np.ix_(rows, ec)].mean(), np.nanmean(h[np.ix_(rows, hc)])))
    # mean(H* - U*, na.rm) is not mean(H*) - mean(U*) when H has holes: theirs is the former
    assert not np.allclose(h_u, mh - mu)
    # equal run counts: column k against column k (R's elementwise subtraction), still their statistic
    u4 = np.repeat(u, 4, axis=1)
    u4[::3, 1] = 1 - u4[::3, 1]
    e4 = (np.random.default_rng(9).random((40, 4)) < 0.5).astype(float)
    *_, e_u4, h_u4 = paired_bootstrap(u4, e4, h, 30, np.random.default_rng(2))
    draws = np.random.default_rng(2)
    items = draws.multinomial(40, np.full(40, 1 / 40), size=30)
    cu, ce, ch = (draws.multinomial(4, np.full(4, 1 / 4), size=30) for _ in range(3))
    ue = uh = [draws.permutation(np.repeat(np.arange(4), cu[b])) for b in range(30)]  # A_col_idx, one per replicate
    for b in range(30):
        rows = np.repeat(np.arange(40), items[b])
        ec, hc = np.repeat(np.arange(4), ce[b]), np.repeat(np.arange(4), ch[b])
        assert e_u4[b] == pytest.approx(np.nanmean(e4[np.ix_(rows, ec)] - u4[np.ix_(rows, ue[b])]))
        assert h_u4[b] == pytest.approx(np.nanmean(h[np.ix_(rows, hc)] - u4[np.ix_(rows, uh[b])]))
    with pytest.raises(CrossdiffError, match="not conformable"):
        paired_bootstrap(u4, e, h, 10, np.random.default_rng(0))


def test_interval_equals_their_bootstrap_with_their_own_draws(tmp_path):
    """compute()'s SGR interval on a results table whose cells are _cells(), against a direct transcription of
    bootstrapBminusAoverCminusA with R's sample(..., replace=TRUE) index draws (analysis.Rmd:1152-1155): 20000
    replicates each, the 2.5/97.5% quantiles agree to Monte-Carlo error."""
    u, e, h = _cells(seed=3, n=60)
    rows = []
    for method, train_bin, m in (("zero-shot", None, u), ("icl-k2", 0, e), ("icl-k2", 2, h)):
        d = tmp_path / f"{method}{train_bin}"
        runs = [[None if np.isnan(v) else int(v) for v in r] for r in m] if m.shape[1] > 1 else None
        path = _write(d, "bin2", [float(np.nanmean(r)) for r in m], runs)
        rows.append({"model": "m", "dataset": "d", "method": method, "test_bin": 2,
                     "train_bin": "zero-shot" if train_bin is None else str(train_bin), "train_bin_index": train_bin,
                     "value": float(np.nanmean(m)), "result": path})
    table = pl.DataFrame(rows, schema_overrides={"train_bin_index": pl.Int64})
    r = compute(table, {"n_boot": 20000, "seed": 4}, n_bins=3).row(0, named=True)
    # the point: their SGR_point over the matrices' known cells (analysis.Rmd:1302)
    point = (np.nanmean(e) - np.nanmean(u)) / (np.nanmean(h) - np.nanmean(u))
    assert r["sgr"] == pytest.approx(point) and r["sgr_status"] == "ok"
    rng = np.random.default_rng(11)
    n = u.shape[0]
    stats = np.array([their_statistic(u, e, h, rng.integers(0, n, n), [0], rng.integers(0, 3, 3),
                                      rng.integers(0, 4, 4)) for _ in range(20000)])
    stats = stats[np.isfinite(stats)]
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert r["sgr_lo"] == pytest.approx(lo, abs=0.04) and r["sgr_hi"] == pytest.approx(hi, abs=0.06)
    assert r["sgr_lo"] < point < r["sgr_hi"]


def test_runs_of_a_cell_seeds_and_bootstraps(tmp_path):
    a = _write(tmp_path / "s1", "bin0", [1, 0])
    b = _write(tmp_path / "s2", "bin0", [0, 0])
    assert read_runs(f"{a};{b}") == {"i0": [1.0, 0.0], "i1": [0.0, 0.0]}
    c = _write(tmp_path / "icl", "bin0", [0.5, 1.0], runs=[[1, 0], [None, 1]])
    runs = read_runs(c)
    assert runs["i0"] == [1.0, 0.0] and np.isnan(runs["i1"][0]) and runs["i1"][1] == 1.0
    # a probe cell (crossdiff/evaluate/probe.py): each bootstrap's probe a run
    d = tmp_path / "probe"
    d.mkdir()
    (d / "bin0.samples.jsonl").write_text(
        json.dumps({"item_id": "i0", "correct": 0.5, "by_bootstrap": [{"correct": 1, "p_gold": 0.7},
                                                                      {"correct": 0, "p_gold": 0.4}]}) + "\n")
    (d / "bin0.json").write_text(json.dumps({"samples": "bin0.samples.jsonl"}))
    assert read_runs(str(d / "bin0.json")) == {"i0": [1.0, 0.0]}


def test_missing_cells_and_the_cli(tmp_path):
    from crossdiff.cli import main

    table = _table(tmp_path)
    with pytest.raises(CrossdiffError, match=r"lacks the hard train bin's cell \(1\)"):
        compute(table.filter(pl.col("train_bin") != "1"), {"hard": 1, "n_boot": 100}, n_bins=3)
    table.write_parquet(tmp_path / "results.parquet")
    assert main(["sgr", "--table", str(tmp_path / "results.parquet"), "--csv", str(tmp_path / "sgr.csv"),
                 "--figure", str(tmp_path / "sgr.png"), "--text", str(tmp_path / "sgr.rst"), "--n-bins", "3",
                 "--settings", json.dumps({"n_boot": 200})]) == 0
    csv = pl.read_csv(tmp_path / "sgr.csv")
    assert csv.height == 4 and {"sgr", "sgr_lo", "sgr_hi", "easy", "hard", "unsupervised", "sgr_status"} <= set(csv.columns)
    assert csv.filter(pl.col("sgr_status") == "zero_gap")["sgr"].null_count() == 2  # empty cells, not NaN
    text = (tmp_path / "sgr.rst").read_text()
    assert "Supervision Gap Recovered (Hase et al. 2024)" in text and "data:image/png;base64," in text
    assert "hard = unsupervised: no SGR" in text and (tmp_path / "sgr.png").stat().st_size > 10_000


def _config(**over):
    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def test_summary_sgr_settings_resolve_and_are_checked_at_parse():
    assert Plan(_config()).sgr() is None
    s = Plan(_config(summary={"sgr": {}})).sgr()
    assert (s["easy"], s["hard"], s["n_boot"], s["confidence"]) == (0, 2, 10000, 0.95)
    assert "sgr" not in Plan(_config(summary={"sgr": {}})).summary()  # summarize never sees it
    assert Plan(_config(summary={"sgr": {"easy": -2, "hard": 2}})).sgr()["easy"] == 1
    assert any("summary.sgr.hard = 3: not a bin" in p for p in problems(Plan(_config(summary={"sgr": {"hard": 3}}))))
    assert any("easy and hard are the same bin" in p for p in problems(Plan(_config(summary={"sgr": {"hard": 0}}))))
    out = problems(Plan(_config(summary={"sgr": {}}, study={"train_bins": [0, 1]})))
    assert any("summary.sgr: hard = 2 is not among study.train_bins [0, 1]" in p for p in out), out
