"""lm-eval --log_samples files in every layout lm-eval wrote: .jsonl, .json lines, .json array (May 2024)."""

import json

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.responses.importers import read_lm_eval_samples, read_samples_file


def records(n):
    return [{"doc_id": i, "filter": "none", "metrics": ["acc"], "acc": float(i % 2)} for i in range(n)]


def test_three_layouts_read_alike(tmp_path):
    recs = records(4)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "b.json").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "c.json").write_text(json.dumps(recs, indent=2))
    want = [(str(i), i % 2) for i in range(4)]
    for f in ("a.jsonl", "b.json", "c.json"):
        assert read_samples_file(tmp_path / f, "acc") == want, f
    (tmp_path / "d.json").write_text("[\n  {\"doc_id\": 0,\n")
    with pytest.raises(CrossdiffError, match="JSON array of samples that is not valid JSON"):
        read_samples_file(tmp_path / "d.json", "acc")
    (tmp_path / "e.json").write_text("[1, 2]")
    with pytest.raises(CrossdiffError, match="element 1 of the samples array is a int"):
        read_samples_file(tmp_path / "e.json", "acc")


def test_lm_eval_directory_finds_json_runs_and_keeps_the_newest(tmp_path):
    d = tmp_path / "org__m"
    d.mkdir()
    (d / "samples_arc_2024-05-20T10-00-00.000000.json").write_text(json.dumps(records(3), indent=2))
    (tmp_path / "org__n").mkdir()
    (tmp_path / "org__n" / "samples_arc_2024-05-20T10-00-00.000000.json").write_text(json.dumps(records(2), indent=2))
    (tmp_path / "org__n" / "samples_arc_2024-06-20T10-00-00.000000.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records(5)))
    (d / "results_2024-05-20T10-00-00.000000.json").write_text("{}")  # not a samples file
    df = read_lm_eval_samples(tmp_path, {"task": "arc", "metric": "acc"})
    assert df.group_by("model_id").len().sort("model_id").rows() == [("org__m", 3), ("org__n", 5)]
