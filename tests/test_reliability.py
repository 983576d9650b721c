"""Bad and hostile input found by the reliability sweep (issue 13, items 3 and 5): each stops with a
message naming the file, the row (or line) and what was expected, instead of a silent guess or a
raw traceback."""

import json

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.responses.build import build
from crossdiff.responses.importers import task_of

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
