"""The optimum per n (crossdiff.results.optimum) and cross-dataset cells in the results and summary tables, on a
fixed set of result files whose per-item scores are chosen by hand (issue 28)."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from crossdiff.results.aggregate import aggregate
from crossdiff.results.optimum import expected_best, optimum_from_results, result_paths
from crossdiff.results.summary_stats import summarize

N_ITEMS = 40  # per test bin
# overall accuracy of (method, train bin, n) on the test dataset: at n=10 bin 0 is best, at n=40 bin 1, with
# all items (full) bin 2 (Liu et al.'s pattern); dft ties bins 0 and 1 at n=10 and prefers bin 0 later
ACC = {
    ("sft", 10): [0.70, 0.40, 0.20], ("sft", 40): [0.30, 0.75, 0.40], ("sft", None): [0.20, 0.45, 0.80],
    ("dft", 10): [0.60, 0.60, 0.10], ("dft", 40): [0.80, 0.50, 0.20], ("dft", None): [0.85, 0.30, 0.30],
}


def _scores(acc: float, t: int) -> list[int]:
    k = int(round(acc * N_ITEMS))
    return [1] * k + [0] * (N_ITEMS - k)


def _write(root, model, train_ds, test_ds, train_bin, t, scores):
    folder = root / f"{train_bin}" / (f"on-{test_ds}" if train_ds != test_ds else "own")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bin{t}.json"
    rec = {"model": model, "dataset": test_ds, "train_bin": train_bin, "test_bin": t, "metric": "exact_match",
           "value": float(np.mean(scores)), "n_items": len(scores), "samples": f"bin{t}.samples.jsonl"}
    if train_ds != test_ds:
        rec["train_dataset"] = train_ds
    path.write_text(json.dumps(rec))
    (folder / f"bin{t}.samples.jsonl").write_text(
        "".join(json.dumps({"item_id": f"{test_ds}-{t}-{i}", "correct": s}) + "\n" for i, s in enumerate(scores)))
    return str(path)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Checkpoints of dataset A (3 bins x n in {10, 40, full} x {sft, dft}) scored on A's and on B's bins."""
    root = tmp_path_factory.mktemp("opt")
    paths = []
    for t in range(3):
        paths.append(_write(root / "zsB", "m", "B", "B", "zero-shot", t, _scores(0.1, t)))
        paths.append(_write(root / "zsA", "m", "A", "A", "zero-shot", t, _scores(0.2, t)))
    for (method, n), accs in ACC.items():
        for b, acc in enumerate(accs):
            label = ("" if method == "sft" else "dft-") + str(b) + (f"-n{n}" if n else "")
            for t in range(3):  # the same accuracy on every test bin of B: overall = acc
                paths.append(_write(root / "B", "m", "A", "B", label, t, _scores(acc, t)))
                paths.append(_write(root / "A", "m", "A", "A", label, t, _scores(0.5, t)))
    bins = pl.DataFrame({"item_id": [f"a{i}" for i in range(300)], "bin": [i // 100 for i in range(300)],
                         "heldout": [i % 100 >= 80 for i in range(300)]})  # 80 training items per bin
    bins.write_parquet(root / "bins.parquet")
    table = aggregate(paths, {"n_boot": 200})
    table.write_parquet(root / "results.parquet")
    return root, table


def test_results_table_carries_test_dataset_and_the_test_datasets_zero_shot_baseline(results):
    _, table = results
    assert "test_dataset" in table.columns
    cross = table.filter(pl.col("test_dataset") != pl.col("dataset"))
    assert set(cross["dataset"]) == {"A"} and set(cross["test_dataset"]) == {"B"}
    assert cross.height == 2 * 3 * 3 * 3  # methods x train bins x sizes x test bins
    # the gain of a cross-dataset cell is over B's zero-shot cell (0.1), not A's (0.2)
    assert (cross["zero_shot"] - 0.1).abs().max() < 1e-12
    one = cross.filter((pl.col("train_bin") == "2") & (pl.col("method") == "sft") & (pl.col("test_bin") == 1)).row(0, named=True)
    assert one["value"] == pytest.approx(0.8) and one["gain"] == pytest.approx(0.7)
    own = table.filter(pl.col("test_dataset") == pl.col("dataset"))
    assert set(own["dataset"]) == {"A", "B"}  # B: its zero-shot row only
    assert own.filter(pl.col("dataset") == "B")["train_bin"].unique().to_list() == ["zero-shot"]


def test_summary_has_one_row_per_test_dataset(results):
    _, table = results
    summary, best = summarize(table, {"n_boot": 50})
    assert "test_dataset" in summary.columns and "test_dataset" in best.columns
    pairs = set(summary.select("dataset", "test_dataset", "method").iter_rows())
    assert {("A", "A", "sft"), ("A", "B", "sft"), ("A", "A", "dft"), ("A", "B", "dft")} <= pairs
    assert not summary.filter(pl.col("dataset") == "B").height  # B alone trains nothing
    cross = summary.filter((pl.col("test_dataset") == "B") & (pl.col("method") == "sft") & pl.col("train_size").is_null())
    assert cross["diagonal"].to_list() == ["included"]  # bins of two datasets: never the same items
    assert cross["n_cells"].to_list() == [9]


def test_best_bucket_per_n_equals_a_hand_computation(results):
    root, _ = results
    per_n, shifts, acc = optimum_from_results(result_paths(root / "results.parquet"), {"A": root / "bins.parquet"},
                                              {"n_boot": 300, "seed": 1})
    cross = per_n.filter(pl.col("test_dataset") == "B")
    for (method, n), accs in ACC.items():
        row = cross.filter((pl.col("method") == method)
                           & (pl.col("train_size").is_null() if n is None else pl.col("train_size") == n)).row(0, named=True)
        top = [b for b, a in enumerate(accs) if a == max(accs)]
        assert row["best_accuracy"] == pytest.approx(max(accs))
        if len(top) == 1:
            assert row["best_train_bin"] == top[0]
        else:  # a tie is reported as one
            assert row["best_train_bin"] is None and row["tied_train_bins"] == " ".join(map(str, top))
        assert row["best_expected"] == pytest.approx(float(np.mean(top)))
        assert row["n_train"] == (80.0 if n is None else float(n))
        # 40 items per test bin and gaps of >= 0.25 in accuracy: every resample picks the same bin(s)
        if len(top) == 1:
            assert row["best_lo"] == row["best_hi"] == top[0] and row["best_share"] == pytest.approx(1.0)
    sft = shifts.filter((pl.col("test_dataset") == "B") & (pl.col("method") == "sft")).row(0, named=True)
    assert (sft["n_min"], sft["n_max"]) == (10.0, 80.0)
    assert sft["shift"] == pytest.approx(2.0) and sft["shift_lo"] == sft["shift_hi"] == pytest.approx(2.0)
    assert sft["share_harder"] == pytest.approx(1.0) and sft["verdict"] == "harder with n"
    x = np.log10([10, 40, 80])
    assert sft["slope_log10_n"] == pytest.approx(np.polyfit(x, [0, 1, 2], 1)[0])
    dft = shifts.filter((pl.col("test_dataset") == "B") & (pl.col("method") == "dft")).row(0, named=True)
    assert dft["best_at_n_min"] == pytest.approx(0.5) and dft["shift"] == pytest.approx(-0.5)
    assert dft["verdict"] == "easier with n"
    # the own-dataset groups: every bin scores 0.5, a three-way tie at every n, no shift
    own = shifts.filter((pl.col("test_dataset") == "A") & (pl.col("method") == "sft")).row(0, named=True)
    assert own["shift"] == 0 and own["verdict"] == "no clear shift"
    assert set(acc["train_size"].drop_nulls().to_list()) == {10, 40}


def test_expected_best_splits_ties():
    v = np.array([[0.1, 0.5, 0.5], [0.9, 0.2, 0.1], [0.3, 0.3, 0.3]])
    assert expected_best(v, [0, 1, 2]).tolist() == [1.5, 0.0, 1.0]


def test_the_report_paragraph_states_the_shift(results, tmp_path):
    from crossdiff.results.optimum import plot, text_rst

    root, _ = results
    per_n, shifts, acc = optimum_from_results(result_paths(root / "results.parquet"), {"A": root / "bins.parquet"},
                                              {"n_boot": 100})
    plot(per_n, shifts, acc, tmp_path / "opt.png", 0.95)
    assert (tmp_path / "opt.png").stat().st_size > 10_000
    text = text_rst(per_n, shifts, 0.95, str(tmp_path / "opt.png"))
    assert "**m** trained on **A**, tested on **B** (sft): the best train bin (0 = easiest) is bin 0 at n = 10" in text
    assert "bin 2 at n = all (80)" in text and "moves by +2.00 bins" in text
    assert "toward harder data as n grows" in text and "a tie of bins 0 1 at n = 10" in text
    assert "data:image/png;base64," in text
    assert not math.isnan(shifts["shift"][0])
