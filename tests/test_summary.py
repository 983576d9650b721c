"""The summary statistics recover a known slope and asymmetry from constructed result tables.

Construction: N bins, n items per bin, item i of a bin has a latent u_i in (0, 1). The zero-shot
model answers it correctly when u_i < P0, the checkpoint trained on bin b when u_i < P0 + G(b, t)
with the true gain G(b, t) = A + S*|b - t| + C/2 (b < t: easy-to-hard) or - C/2 (b > t). In a
full grid the +-C/2 term cancels at every |gap|, so the truth is: slope S, asymmetry C,
easy-to-hard mean = mean over b < t of A + S*|gap| + C/2.
"""

import json
import math

import numpy as np
import polars as pl
import pytest

from crossdiff.results.aggregate import aggregate
from crossdiff.errors import CrossdiffError
from crossdiff.results.summary import summarize
from crossdiff.results.summary_report import text_rst

A, S, C, P0 = 0.20, -0.04, 0.06, 0.30
N_BINS = 6


def true_gain(b, t):
    return A + S * abs(b - t) + (C / 2 if b < t else -C / 2 if b > t else 0.0)


def truth(diagonal=False):
    cells = [(b, t) for b in range(N_BINS) for t in range(N_BINS) if diagonal or b != t]
    g = {c: true_gain(*c) for c in cells}
    e2h = np.mean([v for (b, t), v in g.items() if b < t])
    h2e = np.mean([v for (b, t), v in g.items() if b > t])
    near = np.mean([v for (b, t), v in g.items() if abs(b - t) <= 1])
    return {"slope": S, "asymmetry": C, "easy_to_hard": e2h, "hard_to_easy": h2e, "near_gain": near}


def construct(n_items=400, seed=None, diagonal_rows=True, model="m", dataset="d"):
    """(results table, per-item scores keyed by the table's result path)."""
    rng = np.random.default_rng(seed)
    rows, scores = [], {}
    for t in range(N_BINS):
        u = (np.arange(n_items) + 0.5) / n_items if seed is None else rng.random(n_items)
        ids = [f"{dataset}-{t}-{i}" for i in range(n_items)]
        z = (u < P0).astype(float)
        key = f"{model}/{dataset}/zero-shot/bin{t}.json"
        scores[key] = dict(zip(ids, z))
        rows.append({"train_bin": "zero-shot", "test_bin": t, "value": z.mean(), "gain": None, "result": key})
        for b in range(N_BINS):
            if b == t and not diagonal_rows:
                continue
            y = (u < P0 + true_gain(b, t)).astype(float)
            key = f"{model}/{dataset}/train{b}/bin{t}.json"
            scores[key] = dict(zip(ids, y))
            rows.append({"train_bin": str(b), "test_bin": t, "value": y.mean(), "gain": y.mean() - z.mean(),
                         "result": key})
    df = pl.DataFrame(rows, schema_overrides={"gain": pl.Float64}).with_columns(
        pl.lit(model).alias("model"), pl.lit(dataset).alias("dataset"))
    return df, scores


def test_exact_construction_recovers_slope_and_asymmetry():
    df, scores = construct()
    summary, best = summarize(df, {"n_boot": 300}, scores=scores)
    row = summary.row(0, named=True)
    for key, value in truth().items():
        assert row[key] == pytest.approx(value, abs=1e-9), key
        assert row[f"{key}_lo"] <= value <= row[f"{key}_hi"], key
        assert row[f"{key}_hi"] - row[f"{key}_lo"] > 0.001, f"{key}: degenerate interval"
    assert row["n_cells"] == N_BINS * (N_BINS - 1) and row["diagonal"] == "excluded"
    # with the diagonal out, each test bin's best train bin is the easier neighbour (t - 1; bin 1 for t = 0)
    assert best.sort("test_bin")["best_train_bin"].to_list() == [1, 0, 1, 2, 3, 4]
    assert row["best_within_near_gap"] == N_BINS
    assert (best["best_share"] > 0.5).all()


@pytest.mark.parametrize("diagonal_rows", [True, False])
def test_diagonal_included_or_absent(diagonal_rows):
    """``diagonal: include`` uses b = t cells when the table has them; a table without them works too."""
    df, scores = construct(diagonal_rows=diagonal_rows)
    summary, best = summarize(df, {"n_boot": 200, "diagonal": "include"}, scores=scores)
    row = summary.row(0, named=True)
    assert row["slope"] == pytest.approx(S, abs=1e-9)
    assert row["n_cells"] == N_BINS * N_BINS - (0 if diagonal_rows else N_BINS)
    if diagonal_rows:  # the diagonal's gain A is the largest: it is every test bin's best
        assert best.sort("test_bin")["best_train_bin"].to_list() == list(range(N_BINS))
        assert row["near_gain"] == pytest.approx(truth(diagonal=True)["near_gain"], abs=1e-9)


def test_noisy_construction_intervals_cover_the_truth():
    """Random latent draws: one seeded table's intervals cover the truth, and over 40 tables the 95%
    intervals of the slope and the asymmetry cover it in at least 85% of them."""
    df, scores = construct(n_items=300, seed=7)
    row = summarize(df, {"n_boot": 400}, scores=scores)[0].row(0, named=True)
    for key, value in truth().items():
        assert row[f"{key}_lo"] <= value <= row[f"{key}_hi"], (key, row[key], row[f"{key}_lo"], row[f"{key}_hi"])
    assert row["slope_hi"] < 0  # the fading is detected
    covered = {"slope": 0, "asymmetry": 0}
    for seed in range(40):
        df, scores = construct(n_items=150, seed=100 + seed)
        r = summarize(df, {"n_boot": 200, "seed": seed}, scores=scores)[0].row(0, named=True)
        for key in covered:
            covered[key] += r[f"{key}_lo"] <= truth()[key] <= r[f"{key}_hi"]
    assert min(covered.values()) >= 34, covered


def test_cell_resampling_needs_no_item_logs():
    df, _ = construct()
    row = summarize(df.drop("result"), {"n_boot": 500, "resample": "cells"})[0].row(0, named=True)
    assert row["slope"] == pytest.approx(S, abs=1e-9)
    assert row["slope_lo"] <= S <= row["slope_hi"] and row["slope_hi"] < 0
    assert row["asymmetry_lo"] <= C <= row["asymmetry_hi"]


def test_groups_are_summarized_separately():
    a, sa = construct(model="m1")
    b, sb = construct(model="m2", dataset="other")
    b = b.with_columns(pl.when(pl.col("train_bin") != "zero-shot").then(pl.col("gain") * 2).otherwise(None).alias("gain"))
    summary, best = summarize(pl.concat([a, b]), {"n_boot": 50, "resample": "cells"})
    assert summary.select("model", "dataset").rows() == [("m1", "d"), ("m2", "other")]
    assert summary["slope"].to_list() == pytest.approx([S, 2 * S], abs=1e-9)
    assert best.height == 2 * N_BINS


def test_loud_errors():
    df, scores = construct()
    with pytest.raises(CrossdiffError, match="unknown key"):
        summarize(df, {"nboot": 10}, scores=scores)
    with pytest.raises(CrossdiffError, match="several cells for train bin"):
        summarize(pl.concat([df, df]), {"n_boot": 10, "resample": "cells"})
    bad = dict(scores)
    key = "m/d/train1/bin0.json"
    bad[key] = {k: 1.0 - v for k, v in bad[key].items()}
    with pytest.raises(CrossdiffError, match="results table says"):
        summarize(df, {"n_boot": 10}, scores=bad)
    with pytest.raises(CrossdiffError, match="lacks column"):
        summarize(df.drop("gain"), {})


def test_generated_paragraph_states_the_numbers():
    df, scores = construct()
    s = {"n_boot": 200, "confidence": 0.95, "near_gap": 1}
    summary, _ = summarize(df, s, scores=scores)
    text = text_rst(summary, {**summary.row(0, named=True), **s, "group_by": []})
    assert "-0.040 (95% CI" in text and "gains fade as the gap grows" in text
    assert "+0.060" in text and "easy-to-hard transfers better" in text
    assert "within 1 bin(s) of the test bin for 6 of 6 test bins" in text


def test_item_resampling_reads_aggregate_output(tmp_path):
    """From real result JSONs + per-sample logs through ``aggregate`` to the summary."""
    df, scores = construct(n_items=100, seed=3)
    paths = []
    for row in df.iter_rows(named=True):
        train = row["train_bin"]
        p = tmp_path / row["result"]
        p.parent.mkdir(parents=True, exist_ok=True)
        items = scores[row["result"]]
        p.write_text(json.dumps({"model": "m", "dataset": "d", "train_bin": train, "test_bin": row["test_bin"],
                                 "metric": "exact_match", "value": row["value"], "n_items": len(items)}))
        p.with_name(p.stem + ".samples.jsonl").write_text(
            "".join(json.dumps({"item_id": k, "correct": v}) + "\n" for k, v in items.items()))
        paths.append(p)
    table = aggregate(paths, {"n_boot": 50})
    summary, best = summarize(table, {"n_boot": 200})
    direct, _ = summarize(df, {"n_boot": 200}, scores=scores)
    assert summary["slope"][0] == pytest.approx(direct["slope"][0], abs=1e-12)
    assert best["significant"].dtype == pl.Boolean
    assert math.isfinite(summary["slope_lo"][0])



def _with_design_columns(df, size=None, train_set=None):
    return df.with_columns(
        pl.when(pl.col("train_bin") == "zero-shot").then(None).otherwise(pl.col("train_bin").cast(pl.Int64, strict=False))
        .alias("train_bin_index"),
        pl.lit(train_set, dtype=pl.Utf8).alias("train_set"),
        pl.when(pl.col("train_bin") == "zero-shot").then(None).otherwise(pl.lit(size, dtype=pl.Int64)).alias("train_size"))


def test_study_design_rows_sizes_sets_and_seeds():
    """Results of study designs (crossdiff.study.designs): one summary per train size against the shared zero-shot,
    train sets left out of the gap statistics, seed-averaged cells resampled from their seeds' mean."""
    df, scores = construct()
    full = _with_design_columns(df)
    tuned = full.filter(pl.col("train_bin") != "zero-shot")
    # a subsample size whose gains are half the full run's: its slope and asymmetry are halved
    half = tuned.with_columns((pl.col("gain") / 2).alias("gain"), (pl.col("train_bin") + "-n50").alias("train_bin"),
                              pl.lit(50, dtype=pl.Int64).alias("train_size"))
    sets = tuned.filter(pl.col("train_bin") == "0").with_columns(
        pl.lit("set-easy").alias("train_bin"), pl.lit(None, dtype=pl.Int64).alias("train_bin_index"),
        pl.lit("easy").alias("train_set"), pl.lit(5.0).alias("gain"))
    table = pl.concat([full, half, sets], how="vertical_relaxed")
    summary, best = summarize(table, {"n_boot": 100, "resample": "cells"})
    assert summary["train_size"].to_list() == [50, None]
    by_size = {r["train_size"]: r for r in summary.iter_rows(named=True)}
    assert by_size[None]["slope"] == pytest.approx(S, abs=1e-9)  # the set's huge gain took no part
    assert by_size[50]["slope"] == pytest.approx(S / 2, abs=1e-9)
    assert by_size[50]["asymmetry"] == pytest.approx(C / 2, abs=1e-9)
    assert best.height == 2 * N_BINS

    # seeds: a cell names both seeds' results; their per-item mean is the cell's score (the check that the
    # per-item scores give the table's gain would stop the run otherwise)
    rows, seeded = [], dict(scores)
    for r in df.iter_rows(named=True):
        if r["train_bin"] != "zero-shot":
            a, b = r["result"] + ".seed1", r["result"] + ".seed2"
            items = scores[r["result"]]
            flip = next(k for k, v in items.items() if v == 1.0)  # seed 1 misses one item seed 2 gets
            seeded[a], seeded[b] = {**items, flip: 0.0}, items
            shift = 0.5 / len(items)
            r = {**r, "result": f"{a};{b}", "value": r["value"] - shift, "gain": r["gain"] - shift}
        rows.append(r)
    two = pl.DataFrame(rows, schema=df.schema)
    got, _ = summarize(two, {"n_boot": 100}, scores=seeded)
    want, _ = summarize(df, {"n_boot": 100}, scores=scores)
    assert got["slope"][0] == pytest.approx(want["slope"][0], abs=1e-12)  # a uniform shift keeps the slope
    assert got["near_gain"][0] == pytest.approx(want["near_gain"][0] - 0.5 / 400, abs=1e-12)
    with pytest.raises(CrossdiffError, match="different items"):
        fresh = {k: v for k, v in seeded.items() if ";" not in k}  # summarize caches the averaged cells
        summarize(two, {"n_boot": 10}, scores={**fresh, rows[2]["result"].split(";")[1]: {"x": 1.0}})
