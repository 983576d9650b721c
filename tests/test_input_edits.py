"""Every local file a rule reads is a Snakemake input: editing it plans its jobs again (issue 20, item 2).

No job runs: each rule's outputs are stand-ins written after its inputs, so a dry run has nothing
to do; then one local input is edited (content and mtime) and the dry run must plan that rule again.
A folder source (MATH item files, lm-eval samples) counts each file in it: a folder's own mtime does
not change when a file inside is edited.
"""

import json
import os
import shutil
import time

import polars as pl
import pytest

from conftest import REPO, make_workdir, snakemake


def _config(data):
    return {
        "datasets": {
            "m": {"items": {"source": "hub", "adapter": "math", "path": str(data / "math"),
                            "subtasks": ["algebra", "number_theory"],
                            "solutions": {"path": str(data / "solutions.jsonl")}},
                  "responses": {"source": "table", "path": str(data / "responses.csv")}},
            "s": {"items": {"source": "none"},
                  "responses": {"source": "lm_eval_samples", "path": str(data / "samples"), "task": "arc_easy"}},
            "lb": {"items": {"source": "none"},
                   "responses": {"source": "leaderboard", "version": "v2", "task": "leaderboard_gpqa",
                                 "models_list": str(data / "models.txt")}},
        },
        "models": [],
    }


OUTPUTS = {
    "prepare_items": ["results/items/m.parquet"],
    "import_responses": [f"results/responses/{d}.{ext}" for d in ("m", "s") for ext in ("parquet", "dropped.csv", "stats.json")],
    "collect_leaderboard": ["results/leaderboard/lb.parquet", "results/leaderboard/lb.report.json",
                            "results/leaderboard/lb.summary.csv"],
}


@pytest.fixture
def workdir(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO / "tests/fixtures/datasets/math", data / "math")
    (data / "solutions.jsonl").write_text(json.dumps({"item_id": "algebra_hard/0", "model_solution": "x"}) + "\n")
    pl.DataFrame({"model_id": ["a"], "item_id": ["i"], "correct": [1]}).write_csv(data / "responses.csv")
    (data / "samples" / "org__m").mkdir(parents=True)
    (data / "samples" / "org__m" / "samples_arc_easy_2026.jsonl").write_text('{"doc_id": 0, "acc": 1}\n')
    (data / "models.txt").write_text("org/m\n")
    wd = make_workdir(tmp_path / "wd", json.dumps(_config(data)))
    time.sleep(0.05)
    for files in OUTPUTS.values():
        for f in files:
            (wd / f).parent.mkdir(parents=True, exist_ok=True)
            (wd / f).write_text("stand-in")
    return wd, data


def _planned(wd, *targets):
    proc = snakemake(wd, "-n", "--cores", "1", *targets)
    return proc.stdout + proc.stderr


TARGETS = [f for files in OUTPUTS.values() for f in files]


@pytest.mark.parametrize("edited,rule", [
    ("math/algebra.jsonl", "prepare_items"),
    ("solutions.jsonl", "prepare_items"),
    ("responses.csv", "import_responses"),
    ("samples/org__m/samples_arc_easy_2026.jsonl", "import_responses"),
    ("models.txt", "collect_leaderboard"),
])
def test_editing_a_local_input_plans_its_jobs_again(workdir, edited, rule):
    wd, data = workdir
    assert "Nothing to be done" in _planned(wd, *TARGETS)
    path = data / edited
    assert path.is_file(), path
    time.sleep(0.05)
    with path.open("a") as f:
        f.write("\n")
    later = time.time() + 5
    os.utime(path, (later, later))
    out = _planned(wd, *TARGETS)
    assert "Nothing to be done" not in out
    assert f"rule {rule}:" in out, out[-3000:]
    assert str(path) in out  # the reason names the edited file ("updated input files")
