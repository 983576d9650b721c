"""Bad and hostile input found by the reliability sweep (issue 13, items 3 and 5): each stops with a
message naming the file, the row (or line) and what was expected, instead of a silent guess or a
raw traceback."""

import json

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.responses.build import build

NO_FILTERS = {"dedupe_models": False, "drop_constant_items": False}


def write_samples(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def sample(doc_id, acc):
    return {"doc_id": doc_id, "filter": "none", "metrics": ["acc"], "acc": acc}


# ---------------------------------------------------------------- item 3: lm-eval task mixing
def two_task_dir(root):
    """Two models, each with ARC-Easy and ARC-Challenge samples: the same doc ids, different questions."""
    for m in ("org__a", "org__b"):
        write_samples(root / m / "samples_arc_easy_2026-01-01T00-00-00.000001.jsonl", [sample(0, 1.0), sample(1, 1.0)])
        write_samples(root / m / "samples_arc_challenge_2026-01-02T00-00-00.000001.jsonl", [sample(0, 0.0), sample(1, 0.0)])
    return root


def test_task_is_read_from_lm_eval_file_names(tmp_path):
    from crossdiff.responses.importers import task_of

    assert task_of(tmp_path / "samples_arc_easy_2026-01-01T00-00-00.000001.jsonl") == "arc_easy"
    assert task_of(tmp_path / "samples_leaderboard_bbh_navigate_2024-06-26T19-22-21.521446.jsonl") == "leaderboard_bbh_navigate"
    assert task_of(tmp_path / "samples_arc.jsonl") is None


def test_unset_task_with_several_tasks_stops_and_lists_them(tmp_path):
    root = two_task_dir(tmp_path / "logs")
    with pytest.raises(CrossdiffError, match=r"logs: sample files of several lm-eval tasks: arc_challenge \(2 model\(s\)\), "
                                             r"arc_easy \(2 model\(s\)\); set responses.task to one of them"):
        build("lm_eval_samples", root, {}, NO_FILTERS)


def test_task_matches_exactly(tmp_path):
    root = two_task_dir(tmp_path / "logs")
    df, _, _ = build("lm_eval_samples", root, {"task": "arc_easy"}, NO_FILTERS)
    assert df["correct"].to_list() == [1, 1, 1, 1]  # only ARC-Easy, although arc_challenge's files are newer
    df, _, _ = build("lm_eval_samples", root, {"task": "arc_challenge"}, NO_FILTERS)
    assert df["correct"].to_list() == [0, 0, 0, 0]
    with pytest.raises(CrossdiffError, match=r"no lm-eval sample files of task 'arc' .*must match exactly\); "
                                             r"tasks found: arc_challenge \(2 model\(s\)\), arc_easy \(2 model\(s\)\)"):
        build("lm_eval_samples", root, {"task": "arc"}, NO_FILTERS)


def test_unset_task_with_one_task_imports_it(tmp_path):
    root = tmp_path / "logs"
    write_samples(root / "org__a" / "samples_gsm8k_2026-01-01T00-00-00.000001.jsonl", [sample(0, 1.0), sample(1, 0.0)])
    write_samples(root / "org__b" / "samples_gsm8k_2026-01-03T00-00-00.000001.jsonl", [sample(0, 0.0), sample(1, 0.0)])
    df, _, _ = build("lm_eval_samples", root, {}, NO_FILTERS)
    assert sorted(df.rows()) == [("org__a", "0", 1), ("org__a", "1", 0), ("org__b", "0", 0), ("org__b", "1", 0)]


# ---------------------------------------------------------------- item 5: table and sample files
def test_wide_table_with_an_empty_model_id_stops_at_its_row(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_text("model,q1,q2\nm1,1,0\n,0,1\nm3,1,1\n")
    with pytest.raises(CrossdiffError, match=r"wide\.csv: row 3: empty model id \(column 'model'\); every row needs a model id"):
        build("table", p, {"format": "wide"}, NO_FILTERS)


@pytest.mark.parametrize("bad", ["m\nx", "m\tx"])
def test_model_id_with_a_line_break_or_tab_is_refused(tmp_path, bad):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"model_id": ["m1", bad], "item_id": ["q1", "q1"], "correct": [1, 0]}).write_parquet(p)
    with pytest.raises(CrossdiffError, match=r"r\.parquet: row 2: model id \(column 'model_id'\) .* holds a control character"):
        build("table", p, {}, NO_FILTERS)


def test_item_text_with_line_breaks_is_still_an_item_id(tmp_path):
    """v1 leaderboard rows name items by their (multi-line) text until match_items_on maps them."""
    p = tmp_path / "r.parquet"
    pl.DataFrame({"model_id": ["m1", "m2"], "item_id": ["Q:\n1+1", "Q:\n1+1"], "correct": [1, 0]}).write_parquet(p)
    df, _, _ = build("table", p, {}, NO_FILTERS)
    assert df["item_id"].to_list() == ["Q:\n1+1", "Q:\n1+1"]


def test_parquet_rows_are_counted_from_one(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"model_id": ["m1", "m1", "m2"], "item_id": ["q1", "q2", "q1"], "correct": [1, 0, 7]}).write_parquet(p)
    with pytest.raises(CrossdiffError, match=r"r\.parquet: row 3: correct = 7 is not binary"):
        build("table", p, {}, NO_FILTERS)
    q = tmp_path / "r.csv"  # the same rows as CSV: row 4 is the file's line 4 (under the header)
    pl.read_parquet(p).write_csv(q)
    with pytest.raises(CrossdiffError, match=r"r\.csv: row 4: correct = 7 is not binary"):
        build("table", q, {}, NO_FILTERS)
    w = tmp_path / "w.parquet"
    pl.DataFrame({"model": ["m1", "m2"], "q1": [1, 0], "q2": [0, 2]}).write_parquet(w)
    with pytest.raises(CrossdiffError, match=r"w\.parquet: row 2 \(model 'm2'\), item column 'q2': 2 is not binary"):
        build("table", w, {"format": "wide"}, NO_FILTERS)


def test_jsonl_table_errors_name_the_line(tmp_path):
    good = json.dumps({"model_id": "m1", "item_id": "q1", "correct": 1})
    p = tmp_path / "r.jsonl"
    p.write_text(good + "\n\n" + json.dumps({"model_id": "m2", "item_id": "q1", "correct": 0}) + "\n{broken\n")
    with pytest.raises(CrossdiffError, match=r"r\.jsonl: line 4: not valid JSON"):
        build("table", p, {}, NO_FILTERS)
    p.write_text(good + "\n[1, 2]\n")
    with pytest.raises(CrossdiffError, match=r"r\.jsonl: line 2: expected a JSON object \(one response table row\), got list"):
        build("table", p, {}, NO_FILTERS)
    p.write_text(good + "\n\n" + json.dumps({"model_id": "m2", "item_id": "q1", "correct": 5}) + "\n")
    with pytest.raises(CrossdiffError, match=r"r\.jsonl: line 3: correct = 5 is not binary"):  # the blank line counts
        build("table", p, {}, NO_FILTERS)


@pytest.mark.parametrize("line", ["[1, 2]", "7", '"text"', "null"])
def test_lm_eval_sample_line_that_is_not_an_object(tmp_path, line):
    f = tmp_path / "logs" / "m" / "samples_arc_easy_2026-01-01T00-00-00.000001.jsonl"
    write_samples(f, [sample(0, 1.0), line])
    with pytest.raises(CrossdiffError, match=r"samples_arc_easy_.*\.jsonl: line 2: expected a JSON object \(one lm-eval sample\)"):
        build("lm_eval_samples", tmp_path / "logs", {}, NO_FILTERS)


@pytest.mark.parametrize("bad", ["org/m\nx", "org/m\tx"])
def test_config_model_id_with_a_line_break_or_tab_is_refused(bad):
    from crossdiff.config import validate

    config = {"datasets": {"d": {"items": {"source": "synthetic"}, "responses": {"source": "simulated"}}},
              "models": [{"id": "org/ok"}, {"id": bad}]}
    with pytest.raises(CrossdiffError, match=r"models\.1\.id: .* holds a control character"):
        validate(config)


def test_register_models_refuses_a_multi_line_id_and_keeps_the_table(tmp_path):
    from crossdiff.slugs import read_slug_table, write_slug_table

    out = tmp_path / "models.tsv"
    write_slug_table(["org/a"], out)
    with pytest.raises(CrossdiffError, match=r"models\.tsv: model id 'org/b\\nx' holds a control character"):
        write_slug_table(["org/b\nx"], out)
    assert list(read_slug_table(out).values()) == ["org/a"]  # the table is unchanged and still readable


def test_empty_after_filter_hint_names_the_filters_that_dropped_the_rows(tmp_path):
    p = tmp_path / "r.csv"
    # three identical models: two are dropped as duplicates, then every item is constant for the one left
    p.write_text("model_id,item_id,correct\n" + "".join(f"m{m},q{i},{i % 2}\n" for m in range(3) for i in range(4)))
    with pytest.raises(CrossdiffError, match=r"2 model\(s\) duplicate_model.*; relax filters\.dedupe_models / "
                                             r"filters\.drop_constant_items \(or the dataset's own") as err:
        build("table", p, {}, {"dedupe_models": True, "drop_constant_items": True})
    assert "min_responses" not in str(err.value)
    with pytest.raises(CrossdiffError, match=r"relax filters\.min_responses_per_model \(or"):
        build("table", p, {}, {"dedupe_models": False, "drop_constant_items": False, "min_responses_per_model": 5})


# ---------------------------------------------------------------- item 5: the Spearman figure on tiny tables
def _irt_items(difficulty, accuracy):
    n = len(difficulty)
    return pl.DataFrame({"item_id": [f"i{i}" for i in range(n)], "difficulty": difficulty, "accuracy": accuracy})


@pytest.mark.parametrize("case", ["one_varying_measure", "two_items", "one_item_with_features", "sparse_feature"])
def test_spearman_figure_is_drawn_for_tiny_tables(tmp_path, case):
    from crossdiff.bins import figures as plots

    items = None
    if case == "one_varying_measure":  # every item answered by half the models: accuracy is constant
        irt = _irt_items([0.1, -0.3, 0.5, 0.2, 0.0, 0.4], [0.5] * 6)
    elif case == "two_items":
        irt = _irt_items([0.1, -0.3], [0.4, 0.6])
        items = pl.DataFrame({"item_id": ["i0", "i1"], "length": [3, 9]})
    elif case == "one_item_with_features":
        irt = _irt_items([0.1], [0.4])
        items = pl.DataFrame({"item_id": ["i0"], "length": [3], "steps": [2]})
    else:  # a feature known for 2 of 8 items only: too few pairs for its correlations
        irt = _irt_items([0.1 * i for i in range(8)], [1 - 0.1 * i for i in range(8)])
        items = pl.DataFrame({"item_id": [f"i{i}" for i in range(8)], "steps": [1.0, 2.0] + [None] * 6})
    out = tmp_path / "spearman.png"
    from crossdiff.io import write_figure

    write_figure(plots.spearman(irt, items, "tiny"), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


def test_spearman_figure_correlations_are_pairwise_spearman():
    from crossdiff.bins import figures as plots

    irt = _irt_items([0.0, 1.0, 2.0, 3.0, 4.0], [0.9, 0.7, 0.8, 0.2, 0.1])
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(5)], "steps": [1, 2, 3, 4, None]})
    fig = plots.spearman(irt, items, "t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["IRT difficulty", "observed accuracy", "steps"]
    values = [float(t.get_text()) for t in ax.texts]  # the annotated 3 x 3 matrix, row by row
    assert values[1] == pytest.approx(-0.9, abs=0.005)  # difficulty vs accuracy: ranks 1..5 vs 5,3,4,2,1
    assert values[2] == pytest.approx(1.0, abs=0.005)  # difficulty vs steps on the 4 complete rows


def test_fit_irt_names_an_empty_model_id_row(tmp_path):
    from conftest import crossdiff_cli

    p = tmp_path / "responses.parquet"
    pl.DataFrame({"model_id": ["m1", None, "m2"], "item_id": ["q1", "q1", "q2"], "correct": [1, 0, 1]},
                 schema={"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": pl.Int8}).write_parquet(p)
    outs = [str(tmp_path / f) for f in ("i.parquet", "m.parquet", "h.parquet", "s.json")]
    proc = crossdiff_cli("fit-irt", "--responses", str(p), "--settings", '{"engine": "fast"}', "--items-out", outs[0],
                         "--models-out", outs[1], "--heldout-out", outs[2], "--summary-out", outs[3])
    assert proc.returncode == 2, proc.stderr
    assert "responses.parquet: row 2: empty model_id" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("model", ["no-such-org/no-such-model", "/nonexistent/dir/model"])
def test_evaluate_names_a_model_it_cannot_load(tmp_path, model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from crossdiff.evaluate.run import load_lm, resolve_settings

    with pytest.raises(CrossdiffError, match=rf"{model}: cannot load model/tokenizer: .*HF_HUB_OFFLINE=1"):
        load_lm(model, resolve_settings({"device": "cpu"}))


def test_leaderboard_collection_where_every_model_failed_exits_non_zero(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import FakeHub

    settings = {"source": "leaderboard", "version": "v2", "task": "leaderboard_bbh", "subtasks": True,
                "metric": "acc_norm", "backoff_base": 0.05, "max_retries": 1}
    (tmp_path / "models.txt").write_text("org/missing-a\norg/missing-b\n")
    with FakeHub({}) as hub:  # every repo answers 404
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run([str(Path(sys.executable).parent / "crossdiff"), "collect-leaderboard",
                               "--settings", json.dumps(settings), "--models-list", str(tmp_path / "models.txt"),
                               "--cache-dir", str(tmp_path / "cache"), "--manifest", str(tmp_path / "m.jsonl"),
                               "--output", str(tmp_path / "out.parquet"), "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no responses collected: 0 model(s) done, 2 failed, 0 pending" in proc.stderr
    assert "org/missing-a" in proc.stderr and "m.jsonl" in proc.stderr


# ---------------------------------------------------------------- item 5: the console shows a failed job's error
MAIN_LOG = """\
[Tue Dec  1 19:39:10 2026]
Error in rule import_responses:
    message: None
    jobid: 1
    input: r.csv
    output: results/responses/t.parquet, results/responses/t.dropped.csv, results/responses/t.stats.json
    log: logs/import_responses/t.log (check log file(s) for error details)
    shell:
        crossdiff import-responses --source table --input r.csv > logs/import_responses/t.log 2>&1
        (command exited with non-zero exit code)
Execute 1 jobs...
[Tue Dec  1 19:39:12 2026]
Error in rule fit_irt:
    message: None
    jobid: 4
    log: logs/fit_irt/t.log (check log file(s) for error details)
    shell:
        crossdiff fit-irt ...
Error in rule fit_irt:
    log: logs/fit_irt/t.log (check log file(s) for error details)
Exiting because a job execution failed. Look above for error messages
"""


def test_failed_jobs_and_their_error_lines(tmp_path):
    from crossdiff.runtime.failures import failed_jobs, summary

    jobs = failed_jobs(MAIN_LOG)
    assert [(j.rule, j.logs) for j in jobs] == [("import_responses", ["logs/import_responses/t.log"]),
                                               ("fit_irt", ["logs/fit_irt/t.log"])]  # the retry reported once
    (tmp_path / "logs/import_responses").mkdir(parents=True)
    (tmp_path / "logs/import_responses/t.log").write_text(
        "reading r.csv\ncrossdiff import-responses: error: r.csv: row 3: correct = 7 is not binary\n\n")
    (tmp_path / "logs/fit_irt").mkdir(parents=True)
    (tmp_path / "logs/fit_irt/t.log").write_text(
        "fitting\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\n"
        "TypeError: '<' not supported\n  (hint)\n")
    (tmp_path / "main.log").write_text(MAIN_LOG)
    text = summary([str(tmp_path / "main.log")], workdir=tmp_path)
    assert text.splitlines() == [
        "crossdiff: 2 job(s) failed:",
        "  import_responses: crossdiff import-responses: error: r.csv: row 3: correct = 7 is not binary",
        "      full log: logs/import_responses/t.log",
        "  fit_irt: TypeError: '<' not supported",
        "      full log: logs/fit_irt/t.log",
    ]
    (tmp_path / "logs/fit_irt/t.log").unlink()
    assert "fit_irt: (log not readable" in summary([str(tmp_path / "main.log")], workdir=tmp_path)
    assert summary([str(tmp_path / "nowhere.log")]) == ""


def test_console_shows_the_failed_jobs_error_line(tmp_path):
    from conftest import make_workdir, snakemake

    wd = make_workdir(tmp_path, "datasets:\n  t: {items: {source: none}, responses: {source: table, path: r.csv}}\n")
    (wd / "r.csv").write_text("model_id,item_id,correct\nm1,q1,1\nm1,q2,7\n")
    proc = snakemake(wd, "--cores", "1", check=False, timeout=300)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert ("crossdiff: 1 job(s) failed:\n  import_responses: crossdiff import-responses: error: r.csv: row 3: "
            "correct = 7 is not binary") in console
    assert "      full log: logs/import_responses/t.log" in console
