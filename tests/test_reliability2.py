"""Reliability sweep, round 2 (issue 20): unit-level checks of the smaller items."""

import numpy as np
import polars as pl
import re

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
    from crossdiff.config import validate
    from crossdiff.plan.checks import problems
    from crossdiff.plan.settings import Plan

    def found(study, finetune):
        cfg = validate({"datasets": {"d": {"items": {"source": "synthetic", "n_items": 40},
                                           "responses": {"source": "simulated"}}},
                        "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
                        "study": study, "finetune": finetune})
        return [p for p in problems(Plan(cfg)) if "study.seeds" in p]

    study = {"train_sets": {"up": {"bins": "all", "order": "easy_to_hard"}}, "seeds": [1, 2]}
    assert any(re.search(r"study.seeds.*\['up'\].*every seed repeats the same model", p) for p in found(study, {}))
    assert not found(study, {"lora": {"r": 8}})  # LoRA: a seeded initialisation
    assert not found({**study, "seeds": [1]}, {})
    assert not found({"train_sets": {"s": {"bins": [0]}}, "seeds": [1, 2]}, {})  # shuffled


# ------------------------------------------------------------------ item 10: a bin listed twice
def test_train_bins_listing_a_bin_twice_is_refused():
    from crossdiff.study.designs import check_design

    with pytest.raises(CrossdiffError, match=r"study.train_bins: \[0, 0, 2\] lists a value twice"):
        check_design({"train_bins": [0, 0, 2]}, 3)


# ------------------------------------------------------------------ item 6: ties of the best train bin
def _write_result(d, train, test, correct):
    import json

    name = f"{train}_bin{test}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.samples.jsonl").write_text("".join(json.dumps({"item_id": f"i{k}", "correct": int(c)}) + "\n"
                                                     for k, c in enumerate(correct)))
    p = d / f"{name}.json"
    p.write_text(json.dumps({"model": "m", "dataset": "d", "train_bin": train, "test_bin": test, "metric": "acc",
                             "value": float(np.mean(correct)), "n_items": len(correct), "samples": f"{name}.samples.jsonl"}))
    return p


def test_tied_best_train_bins_are_reported_as_a_tie(tmp_path):
    """Train bins 0 and 1 give identical answers at n=10: no winner is invented, the tie is listed and
    each resample's tie is split (their joint share 1.0, bin 2 none)."""
    from crossdiff.results.sizes import best_bins

    rng = np.random.default_rng(0)
    pl.DataFrame({"item_id": [f"t{i}" for i in range(90)], "difficulty": np.arange(90.0),
                  "bin": [i // 30 for i in range(90)]}).write_parquet(tmp_path / "bins.parquet")
    base = {t: rng.integers(0, 2, 50) for t in range(3)}

    def run(label, t, extra):
        c = base[t].copy()
        c[np.flatnonzero(c == 0)[:extra]] = 1
        return _write_result(tmp_path / label, label, t, c)

    paths = [run("zero-shot", t, 0) for t in range(3)]
    for b, g in {0: 10, 1: 10, 2: 2}.items():
        paths += [run(f"{b}-n10", t, g) for t in range(3)]
    best, _ = best_bins(paths, tmp_path / "bins.parquet", {"n_boot": 200})
    row = best.row(0, named=True)
    assert row["best_train_bin"] is None and row["tied_train_bins"] == "0 1"
    assert row["best_share"] == pytest.approx(1.0) and row["best_lo"] == 0 and row["best_hi"] == 1


def test_summary_reports_a_tie_of_train_bins():
    from crossdiff.results.summary import summarize

    rng = np.random.default_rng(1)
    rows, scores = [], {}
    for t in range(3):
        ids = [f"{t}-{i}" for i in range(40)]
        z = (rng.random(40) < 0.3).astype(float)
        scores[f"zs{t}"] = dict(zip(ids, z))
        rows.append({"train_bin": "zero-shot", "test_bin": t, "value": z.mean(), "gain": None, "result": f"zs{t}"})
        y = np.maximum(z, (rng.random(40) < 0.5).astype(float))
        for b in range(3):
            if b == t:
                continue
            scores[f"b{b}t{t}"] = dict(zip(ids, y))  # every train bin scores the same on test bin t
            rows.append({"train_bin": str(b), "test_bin": t, "value": y.mean(), "gain": y.mean() - z.mean(),
                         "result": f"b{b}t{t}"})
    df = pl.DataFrame(rows, schema_overrides={"gain": pl.Float64}).with_columns(
        pl.lit("m").alias("model"), pl.lit("d").alias("dataset"))
    _, best = summarize(df, {"n_boot": 100}, scores=scores)
    assert best["best_train_bin"].null_count() == 3 and best["gap"].null_count() == 3
    assert best.sort("test_bin")["tied_train_bins"].to_list() == ["1 2", "0 2", "0 1"]
    assert best["best_share"].to_list() == pytest.approx([1.0, 1.0, 1.0])


# ------------------------------------------------------------------ item 7: one paragraph per training size
def test_summary_paragraphs_name_the_training_size():
    from crossdiff.results.summary_report import paragraph

    row = {"model": "m", "dataset": "d", "diagonal": "excluded", "resample": "items", "n_cells": 6, "n_boot": 10,
           "best_within_near_gap": 2, "n_test_bins": 3}
    for k in ("slope", "near_gain", "far_gain", "easy_to_hard", "hard_to_easy", "asymmetry"):
        row.update({k: 0.1, f"{k}_lo": 0.0, f"{k}_hi": 0.2})
    texts = [paragraph({**row, "train_size": n}, 0.95, 1) for n in (5, None)]
    assert texts[0] != texts[1]
    assert "n=5 training items per bin" in texts[0] and "all training items of each bin" in texts[1]


# ------------------------------------------------------------------ items 9, 11: validated at parse time
MINIMAL = {"datasets": {"d": {"items": {"source": "none"}, "responses": {"source": "table", "path": "x.csv"}}}}


@pytest.mark.parametrize("patch,expected", [
    ({"evaluate": {"batch_size": "lots"}}, "evaluate.batch_size: 'lots' does not match"),
    ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size: 0 is less than the minimum of 1"),
    ({"evaluate": {"dtype": "float33"}}, "evaluate.dtype: 'float33' is not one of"),
    ({"datasets": {"d" * 300: MINIMAL["datasets"]["d"]}}, "is too long"),
    ({"study": {"train_sets": {"s" * 300: {"bins": [0]}}}}, "is too long"),
])
def test_bad_evaluate_settings_and_long_names_stop_at_validation(patch, expected):
    from crossdiff.config import validate

    with pytest.raises(CrossdiffError, match=expected):
        validate({**MINIMAL, **patch})
    ok = validate({**MINIMAL, "evaluate": {"batch_size": "auto:4", "dtype": "bfloat16"}})
    assert ok["evaluate"]["batch_size"] == "auto:4"


# ------------------------------------------------------------------ item 13: numeric solutions
def test_numeric_solutions_keep_zero_and_treat_nan_as_missing(tmp_path):
    from conftest import REPO
    from crossdiff.items.adapters import attach_solutions, load_items

    items = load_items("math", {"path": str(REPO / "tests/fixtures/datasets/math"), "subtasks": ["algebra"]})
    ids = items["item_id"].to_list()
    table = tmp_path / "sol.parquet"
    pl.DataFrame({"item_id": ids, "model_solution": [0.0] + [float(i) for i in range(1, len(ids))]}).write_parquet(table)
    out = attach_solutions(items, {"path": str(table)}, "m")
    assert out["model_solution"].to_list()[0] == "0.0"
    pl.DataFrame({"item_id": ids, "model_solution": [float("nan")] + [1.0] * (len(ids) - 1)}).write_parquet(table)
    with pytest.raises(CrossdiffError, match=rf"1 of {len(ids)} item\(s\) have no solution.*{ids[0]}"):
        attach_solutions(items, {"path": str(table)}, "m")


# ------------------------------------------------------------------ item 17: a job killed by a signal
def test_console_summary_says_a_job_was_killed(tmp_path):
    """A real snakemake main log of a job killed by SIGKILL: the summary names the signal, not the
    progress line the log happens to end with."""
    import subprocess
    import sys
    from pathlib import Path

    from crossdiff.runtime.failures import summary

    (tmp_path / "Snakefile").write_text(
        'rule a:\n    output: "out.txt"\n    log: "logs/a.log"\n'
        '    shell: "(echo \'fit_irt: no-op\'; python3 -c \'import os,signal; os.kill(os.getpid(), signal.SIGKILL)\')'
        ' > {log} 2>&1"\n')
    snakemake = Path(sys.executable).parent / "snakemake"
    proc = subprocess.run([str(snakemake), "--cores", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    main_logs = sorted((tmp_path / ".snakemake" / "log").glob("*.log"))
    text = summary(main_logs, tmp_path)
    assert "a: killed by SIGKILL (its log ends: fit_irt: no-op)" in text, text


# ------------------------------------------------------------------ item 18: records of older lm-eval runs
def test_metric_absent_lists_the_numeric_keys_of_records_without_metrics(tmp_path):
    import json

    from crossdiff.responses.details import extract_v2
    from crossdiff.responses.lb_settings import ModelFailed, parse_settings

    f = tmp_path / "samples_leaderboard_x_2024-01-01T00-00-00.jsonl"
    f.write_text("".join(json.dumps({"doc_id": i, "acc": 1.0, "target": "A", "resps": []}) + "\n" for i in range(3)))
    s = parse_settings({"version": "v2", "task": "leaderboard_x", "metric": "acc_norm"})
    with pytest.raises(ModelFailed, match=r"'acc_norm' absent.*numeric keys present: acc\)"):
        extract_v2(f, "", s)


def test_filter_of_a_file_without_filter_keys_is_refused_clearly(tmp_path):
    """Older lm-eval: a two-filter task written as two blocks of the same doc ids, no 'filter' key."""
    import json

    from crossdiff.responses.importers import read_samples_file

    f = tmp_path / "samples_gsm8k_2024.jsonl"
    rows = [{"doc_id": i, "exact_match": float(b)} for b in (1, 0) for i in range(4)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CrossdiffError, match=r"carry no 'filter' key.*repeat 4 doc id\(s\), one block per filter"):
        read_samples_file(f, "exact_match", want_filter="strict-match")


def test_lm_eval_samples_with_repeated_filter_blocks_are_refused(tmp_path):
    """No filter asked, no 'filter' key, every doc id twice: never mixed silently into one matrix."""
    import json

    from crossdiff.responses.importers import read_lm_eval_samples

    (tmp_path / "org__m").mkdir()
    rows = [{"doc_id": i, "exact_match": float(b)} for b in (1, 0) for i in range(4)]
    (tmp_path / "org__m" / "samples_gsm8k_2024-01-01T00-00-00.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CrossdiffError, match=r"doc id '0' occurs 2 times \(4 repeats in all\).*one block per filter"):
        read_lm_eval_samples(tmp_path, {"task": "gsm8k", "metric": "exact_match"})
