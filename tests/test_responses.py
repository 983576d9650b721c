"""Importers and filters of the response-matrix stage, on good files and on each bad-input case."""

import json

import numpy as np
import polars as pl
import pytest

from crossdiff.items.synthetic import generate_items
from crossdiff.errors import CrossdiffError
from crossdiff.responses.build import build
from crossdiff.responses.simulate import simulate

from conftest import crossdiff_cli

NO_FILTERS = {"dedupe_models": False, "drop_constant_items": False}


def long_csv(tmp_path, rows, name="r.csv", header="model_id,item_id,correct"):
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return p


def test_long_table(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "q2", 0), ("m2", "q1", 0), ("m2", "q2", 1), ("m2", "q2", 1)])
    df, dropped, stats = build("table", p, {}, NO_FILTERS)
    assert df.shape == (4, 3) and df.schema["correct"] == pl.Int8
    assert stats["duplicate_rows_collapsed"] == 1
    assert df.filter((pl.col("model_id") == "m2") & (pl.col("item_id") == "q2"))["correct"].item() == 1


def test_long_table_custom_columns_and_booleans(tmp_path):
    p = long_csv(tmp_path, [("a", 1, "true"), ("a", 2, "false"), ("b", 1, "")], header="model,doc,ok")
    df, _, _ = build("table", p, {"model_column": "model", "item_column": "doc", "correct_column": "ok"}, NO_FILTERS)
    assert sorted(df.rows()) == [("a", "1", 1), ("a", "2", 0)]  # empty cell = missing


def test_wide_table_with_missing(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_text("model,q1,q2,q3\nm1,1,0,\nm2,0,1,1\n")
    df, _, _ = build("table", p, {}, NO_FILTERS)
    assert df.height == 5 and set(df["item_id"]) == {"q1", "q2", "q3"}


def test_parquet_table(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"model_id": ["m", "m"], "item_id": ["a", "b"], "correct": [True, False]}).write_parquet(p)
    df, _, _ = build("table", p, {}, NO_FILTERS)
    assert df["correct"].to_list() == [1, 0]


def test_missing_file(tmp_path):
    with pytest.raises(CrossdiffError, match=r"nope\.csv: response table not found"):
        build("table", tmp_path / "nope.csv", {}, {})


def test_unreadable_table(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"this is not parquet")
    with pytest.raises(CrossdiffError, match=r"broken\.parquet: cannot read response table"):
        build("table", p, {}, {})


def test_unknown_extension(tmp_path):
    p = tmp_path / "r.xlsx"
    p.write_text("x")
    with pytest.raises(CrossdiffError, match=r"r\.xlsx: unknown response table format '\.xlsx'"):
        build("table", p, {}, {})


def test_non_binary_value_names_row(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "q2", 0.5)])
    with pytest.raises(CrossdiffError, match=r"r\.csv: row 3: correct = 0\.5 is not binary"):
        build("table", p, {}, {})
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "q2", "yes")], name="s.csv")
    with pytest.raises(CrossdiffError, match=r"s\.csv: row 3: correct = 'yes' is not a correctness value"):
        build("table", p, {}, {})


def test_non_binary_value_in_wide_table_names_model_and_item(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_text("model,q1,q2\nm1,1,0\nm2,0,2\n")
    with pytest.raises(CrossdiffError, match=r"wide\.csv: row 3 \(model 'm2'\), item column 'q2': 2 is not binary"):
        build("table", p, {}, {})


def test_conflicting_duplicate_pair(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "q1", 0), ("m2", "q1", 1)])
    with pytest.raises(CrossdiffError, match=r"model 'm1', item 'q1' appears 2 times with conflicting correctness"):
        build("table", p, {}, {})


def test_missing_column_is_named(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1)], header="model_id,item_id,score")
    with pytest.raises(CrossdiffError, match=r"lacks column\(s\) 'correct'"):
        build("table", p, {"format": "long"}, {})


def test_unknown_item_ids(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,question,answer\nq1,a,1\n")
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "zz", 0)])
    with pytest.raises(CrossdiffError, match=r"1 item id\(s\) not in the item table .*items\.csv \(e\.g\. 'zz'\)"):
        build("table", p, {}, {}, items_path=items)


def test_responses_of_subtasks_the_item_table_leaves_out_are_dropped_per_subtask(tmp_path):
    """BBH's default 21 subtasks against a table holding the leaderboard's 24: the other subtasks' responses
    go to dropped.csv (one row per subtask, with counts); an unknown id inside a kept subtask still stops."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,question,answer\nnavigate/0,a,1\nnavigate/1,b,1\nweb_of_lies/0,c,1\n")
    rows = [(m, i, int(m == "m1") ^ (k % 2)) for m in ("m1", "m2", "m3") for k, i in
            enumerate(["navigate/0", "navigate/1", "web_of_lies/0", "snarks/0", "snarks/1", "causal_judgement/3"])]
    df, dropped, stats = build("table", long_csv(tmp_path, rows), {}, NO_FILTERS, items_path=items)
    assert set(df["item_id"]) == {"navigate/0", "navigate/1", "web_of_lies/0"} and df.height == 9
    got = {r["id"]: r for r in dropped.iter_rows(named=True)}
    assert set(got) == {"snarks", "causal_judgement"}
    assert got["snarks"]["kind"] == "subtask" and got["snarks"]["reason"] == "subtask_not_in_items"
    assert got["snarks"]["detail"].startswith("6 responses of 3 model(s) to 2 item(s)")
    assert "items.subtasks" in got["causal_judgement"]["detail"]
    assert stats["dropped"] == {"subtask:subtask_not_in_items": 2} and stats["items_before"] == 3
    # the CLI says so and writes the rows to dropped.csv
    out = tmp_path / "out"
    res = crossdiff_cli("import-responses", "--source", "table", "--input", str(tmp_path / "r.csv"), "--items", str(items),
                        "--filters", json.dumps(NO_FILTERS), "--output", str(out / "m.parquet"),
                        "--dropped", str(out / "d.csv"))
    assert res.returncode == 0, res.stderr
    assert "2 subtask(s) the item table leaves out dropped: causal_judgement, snarks" in res.stdout
    assert pl.read_csv(out / "d.csv")["reason"].to_list() == ["subtask_not_in_items"] * 2
    # an index beyond a kept subtask's items is a mismatch, not a choice
    p = long_csv(tmp_path, rows + [("m1", "navigate/7", 1)], name="r2.csv")
    with pytest.raises(CrossdiffError, match=r"1 item id\(s\) not in the item table .*\(e\.g\. 'navigate/7'\)"):
        build("table", p, {}, NO_FILTERS, items_path=items)
    # nothing left: say which subtasks to add
    p = long_csv(tmp_path, [("m1", "snarks/0", 1)], name="r3.csv")
    with pytest.raises(CrossdiffError, match=r"every response is to a subtask .* leaves out \(snarks\); add them"):
        build("table", p, {}, NO_FILTERS, items_path=items)


def test_empty_after_filtering_explains(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m2", "q1", 1), ("m1", "q2", 0), ("m2", "q2", 0)])
    with pytest.raises(CrossdiffError, match=r"empty after filtering \(1 item\(s\) all_correct; 1 item\(s\) all_wrong"):
        build("table", p, {}, {"drop_constant_items": True})


def test_filters_record_what_and_why(tmp_path):
    items = generate_items(200, seed=3)
    raw, _, _ = simulate(items, n_models=60, missing_rate=0.3, n_duplicates=3, seed=4)
    # an item nobody answers right, an item everybody answers right, a model with 5 responses
    models = sorted(raw["model_id"].unique())
    extra = pl.DataFrame({
        "model_id": models * 2 + ["tiny"] * 5,
        "item_id": ["hard"] * len(models) + ["easy"] * len(models) + [f"arith-{i:03d}" for i in range(5)],
        "correct": [0] * len(models) + [1] * len(models) + [1, 0, 1, 0, 1],
    }, schema=raw.schema)
    p = tmp_path / "r.parquet"
    pl.concat([raw, extra]).write_parquet(p)
    df, dropped, stats = build("table", p, {}, {"min_responses_per_model": 20, "min_responses_per_item": 5})
    d = {(r["kind"], r["id"]): r["reason"] for r in dropped.iter_rows(named=True)}
    assert d[("item", "hard")] == "all_wrong" and d[("item", "easy")] == "all_correct"
    assert d[("model", "tiny")] == "fewer_than_20_responses"
    assert sum(1 for (k, _), r in d.items() if r == "duplicate_model") == 3
    kept = set(df["model_id"])
    assert "tiny" not in kept and not any(m.endswith("-reupload") for m in kept)
    assert not ({"hard", "easy"} & set(df["item_id"]))
    # nothing else was lost
    assert stats["models"] == 60 and df.height == raw.height - raw.filter(pl.col("model_id").str.ends_with("-reupload")).height


def write_samples(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def sample(doc_id, acc, filt="none", **extra):
    return {"doc_id": doc_id, "doc": {"id": f"d{doc_id}"}, "filter": filt, "metrics": ["acc", "acc_norm"],
            "acc": acc, "acc_norm": extra.pop("acc_norm", acc), **extra}


def test_lm_eval_samples_directory(tmp_path):
    root = tmp_path / "logs"
    # lm-eval layout: OUTPUT/<model>/samples_<task>_<timestamp>.jsonl; an older run is ignored
    write_samples(root / "org__model-a" / "samples_arc_2026-01-01T00-00-00.000.jsonl", [sample(0, 0.0), sample(1, 0.0)])
    write_samples(root / "org__model-a" / "samples_arc_2026-02-01T00-00-00.000.jsonl", [sample(0, 1.0), sample(1, 0.0)])
    write_samples(root / "org__model-b" / "samples_arc_2026-01-05T00-00-00.000.jsonl", [sample(0, 0.0, acc_norm=1.0), sample(1, 1.0)])
    write_samples(root / "org__model-b" / "samples_other_2026-01-05T00-00-00.000.jsonl", [sample(7, 1.0)])
    df, _, _ = build("lm_eval_samples", root, {"task": "arc", "metric": "acc"}, NO_FILTERS)
    assert sorted(df.rows()) == [("org__model-a", "0", 1), ("org__model-a", "1", 0), ("org__model-b", "0", 0), ("org__model-b", "1", 1)]
    df, _, _ = build("lm_eval_samples", root, {"task": "arc", "metric": "acc_norm", "item_key": "doc.id"}, NO_FILTERS)
    assert ("org__model-b", "d0", 1) in df.rows()


def test_lm_eval_samples_of_a_group_task_by_subtask(tmp_path):
    """lm-eval's own --log_samples run of leaderboard_bbh: one file per subtask; ids match the bbh adapter's,
    the subtasks its default leaves out (snarks) are dropped per subtask, the newest run per subtask wins."""
    from crossdiff.items.adapters import load_items

    from conftest import REPO

    items = load_items("bbh", {"path": str(REPO / "tests" / "fixtures" / "datasets" / "bbh")})
    items.write_parquet(tmp_path / "items.parquet")
    n = items.group_by("subtask").len().sort("subtask")["len"].to_list()  # boolean_expressions, date_understanding
    root = tmp_path / "logs"
    for m, model in enumerate(("org__a", "org__b")):
        d = root / model
        write_samples(d / "samples_leaderboard_bbh_boolean_expressions_2024-06-01T00-00-00.000.jsonl",
                      [sample(i, 0.0, exact_match=float((i + m) % 2)) for i in range(n[0])])
        write_samples(d / "samples_leaderboard_bbh_date_understanding_2024-06-01T00-00-00.000.jsonl",
                      [sample(i, 0.0, exact_match=0.0) for i in range(n[1])])
        write_samples(d / "samples_leaderboard_bbh_date_understanding_2024-07-01T00-00-00.000.jsonl",  # newer run
                      [sample(i, 1.0, exact_match=float(i != m)) for i in range(n[1])])
        write_samples(d / "samples_leaderboard_bbh_snarks_2024-06-01T00-00-00.000.jsonl", [sample(0, 1.0, exact_match=1.0)])
        write_samples(d / "samples_leaderboard_mmlu_pro_2024-06-01T00-00-00.000.jsonl", [sample(0, 1.0, exact_match=1.0)])
    settings = {"task": "leaderboard_bbh", "subtasks": True, "metric": "exact_match"}
    df, dropped, _ = build("lm_eval_samples", root, settings, NO_FILTERS, items_path=tmp_path / "items.parquet")
    assert set(df["item_id"]) == set(items["item_id"]) and df.height == 2 * items.height
    assert df.filter((pl.col("model_id") == "org__b") & (pl.col("item_id") == "date_understanding/1"))["correct"][0] == 0
    assert df.filter((pl.col("model_id") == "org__b") & (pl.col("item_id") == "date_understanding/0"))["correct"][0] == 1
    assert dropped.select("kind", "id", "reason").rows() == [("subtask", "snarks", "subtask_not_in_items")]
    with pytest.raises(CrossdiffError, match=r"subtasks: true needs responses.task"):
        build("lm_eval_samples", root, {"subtasks": True}, NO_FILTERS)
    with pytest.raises(CrossdiffError, match=r"no lm-eval sample files of subtasks of 'leaderboard_musr' .*tasks found: "
                                             r"leaderboard_bbh_boolean_expressions, leaderboard_bbh_date_understanding"):
        build("lm_eval_samples", root, {"task": "leaderboard_musr", "subtasks": True}, NO_FILTERS)


def test_lm_eval_threshold_and_filters(tmp_path):
    root = tmp_path / "logs"
    write_samples(root / "m" / "samples_gsm_2026.jsonl", [
        sample(0, 0.7, "strict-match"), sample(0, 0.2, "flexible-extract"),
        sample(1, 0.2, "strict-match"), sample(1, 0.9, "flexible-extract")])
    with pytest.raises(CrossdiffError, match=r"several lm-eval filters \(flexible-extract, strict-match\); name one with responses\.filter"):
        build("lm_eval_samples", root, {}, NO_FILTERS)
    df, _, _ = build("lm_eval_samples", root, {"filter": "strict-match", "threshold": 0.5}, NO_FILTERS)
    assert sorted(df.rows()) == [("m", "0", 1), ("m", "1", 0)]


def test_lm_eval_bad_metric_and_json(tmp_path):
    root = tmp_path / "logs"
    f = root / "m" / "samples_arc_1.jsonl"
    write_samples(f, [sample(0, 1.0)])
    with pytest.raises(CrossdiffError, match=r"samples_arc_1\.jsonl: line 1: metric 'exact_match' not in sample; available: acc, acc_norm"):
        build("lm_eval_samples", root, {"metric": "exact_match"}, NO_FILTERS)
    f.write_text(json.dumps(sample(0, 1.0)) + "\n{broken\n")
    with pytest.raises(CrossdiffError, match=r"samples_arc_1\.jsonl: line 2: not valid JSON"):
        build("lm_eval_samples", root, {}, NO_FILTERS)
    with pytest.raises(CrossdiffError, match=r"nowhere: lm-eval samples directory not found"):
        build("lm_eval_samples", tmp_path / "nowhere", {}, NO_FILTERS)


def test_cli_reports_error_and_writes_nothing(tmp_path):
    p = long_csv(tmp_path, [("m1", "q1", 1), ("m1", "q1", 0)])
    out = tmp_path / "out" / "matrix.parquet"
    proc = crossdiff_cli("import-responses", "--source", "table", "--input", str(p), "--output", str(out),
                         "--dropped", str(tmp_path / "out" / "dropped.csv"))
    assert proc.returncode == 2
    assert "conflicting correctness" in proc.stderr and str(p) in proc.stderr
    assert not out.exists() and not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_simulation_is_seeded():
    items = generate_items(50, seed=1)
    a, ta, _ = simulate(items, 20, 0.1, 2, seed=5)
    b, tb, _ = simulate(items, 20, 0.1, 2, seed=5)
    c, _, _ = simulate(items, 20, 0.1, 2, seed=6)
    assert a.equals(b) and ta.equals(tb) and not a.equals(c)
    assert np.isclose(ta["difficulty"].mean(), 0.0)


def test_match_items_by_text(tmp_path):
    """v1 leaderboard rows keyed by their (templated) text map to the item whose question they contain."""
    items = tmp_path / "items.csv"
    items.write_text('item_id,question\n0,"Which gas do plants absorb?"\n1,"Which gas do plants absorb from the air at night?"\n2,"What is 2+2?"\n')
    rows = [("m1", "Question: Which gas do plants  absorb?\\nAnswer:", 1),
            ("m1", "Question: Which gas do plants absorb from the air at night?\\nAnswer:", 0),
            ("m1", "Question: What is 2+2?\\nAnswer:", 1),
            ("m2", "Question: What is 2+2?\\nAnswer:", 0)]
    p = tmp_path / "r.parquet"
    pl.DataFrame(rows, schema=["model_id", "item_id", "correct"], orient="row").write_parquet(p)
    df, _, _ = build("table", p, {"match_items_on": "question"}, NO_FILTERS, items_path=items)
    # the longer, more specific question wins for row 2; whitespace differences do not matter
    assert sorted(df.rows()) == [("m1", "0", 1), ("m1", "1", 0), ("m1", "2", 1), ("m2", "2", 0)]
    pl.DataFrame([("m1", "Question: Who wrote Hamlet?", 1)], schema=["model_id", "item_id", "correct"],
                 orient="row").write_parquet(p)
    with pytest.raises(CrossdiffError, match=r"1 response item\(s\) contain no item's 'question' \(e\.g\. 'Question: Who wrote Hamlet\?'\)"):
        build("table", p, {"match_items_on": "question"}, NO_FILTERS, items_path=items)
    with pytest.raises(CrossdiffError, match="match_items_on = 'question' needs an item table"):
        build("table", p, {"match_items_on": "question"}, NO_FILTERS)
