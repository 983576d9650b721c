"""Every file a config names is a rule input (crossdiff.plan.inputs), so an edit re-plans exactly the jobs
that read it (issue 26, section 1).

No job runs: a dry run's ``--detailed-summary`` lists every output with its rule; a stand-in is written for
each, newer than every input, so the workflow is up to date. Then one config-named file is edited and the
summary must mark exactly the outputs that depend on it "update pending": an lm-eval task's YAML or the
data file of ``items.overrides`` re-plans that dataset's items and everything after them (training text and
evaluation alike), a model's solutions file only that model's training on that dataset, a local base model's
directory only that model's fine-tunes and evaluations.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time

import pytest

from conftest import REPO, make_workdir, snakemake

DIRECTORY_RULES = {"make_task", "build_base_model", "finetune"}


def _config(data):
    return {
        "datasets": {
            "mytask": {"items": {"source": "lm_eval_task", "task": "sums_shared", "include_path": str(data / "tasks"),
                                 "overrides": {"dataset_kwargs": {"data_files": {"test": str(data / "sums.jsonl")}}},
                                 "metric": "acc"},
                       "responses": {"source": "simulated", "n_models": 40, "missing_rate": 0.0, "n_duplicates": 0}},
            "sums": {"items": {"source": "file", "path": str(data / "items.csv")},
                     "responses": {"source": "table", "path": str(data / "responses.csv")},
                     "prompt": {"target": " {model_solution}"}},
        },
        "bins": {"n_bins": 2},
        "irt": {"stability": {"seeds": []}},
        "models": [
            {"id": "tiny", "build": "tiny", "warmup_dataset": "sums",
             "solutions": {"sums": {"path": str(data / "sol_tiny.csv")}}},
            {"id": str(data / "local_model"), "solutions": {"sums": {"path": str(data / "sol_local.csv")}}},
        ],
        "study": {"methods": ["sft", "icl"], "icl": {"k": 1}},
        "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}},
    }


def _summary(wd) -> list[dict]:
    out = snakemake(wd, "--detailed-summary", "--cores", "1").stdout
    return list(csv.DictReader(io.StringIO(out[out.index("output_file"):]), delimiter="\t"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracked")
    data = base / "data"
    (data / "tasks").mkdir(parents=True)
    # the task YAML includes a template OUTSIDE include_path, which calls a function of a module beside it
    (data / "tasks" / "sums_shared.yaml").write_text("include: ../templates/base.yaml\ntask: sums_shared\n")
    (data / "templates").mkdir()
    (data / "templates" / "base.yaml").write_text(
        (REPO / "tests/fixtures/lm_eval_tasks/sums_mc.yaml").read_text().replace("task: sums_mc\n", "")
        + "process_docs: !function utils.keep\n")
    (data / "templates" / "utils.py").write_text("def keep(dataset):\n    return dataset\n")
    shutil.copy(REPO / "tests/fixtures/lm_eval_tasks/sums.jsonl", data / "sums.jsonl")
    (data / "items.csv").write_text("item_id,question,answer\n" + "".join(f"i{i},{i}+1,{i + 1}\n" for i in range(8)))
    (data / "responses.csv").write_text("model_id,item_id,correct\n" + "".join(
        f"m{m},i{i},{(m + i) % 2}\n" for m in range(4) for i in range(8)))
    for name in ("sol_tiny.csv", "sol_local.csv"):
        (data / name).write_text("item_id,model_solution\n" + "".join(f"i{i},x\n" for i in range(8)))
    (data / "local_model").mkdir()
    (data / "local_model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (data / "local_model" / "model.safetensors").write_text("weights")
    wd = make_workdir(base / "wd", json.dumps(_config(data)))
    rows = _summary(wd)
    later = time.time() + 10
    for r in rows:  # stand-ins for every output, newer than every input: nothing to do
        p = wd / r["output_file"]
        if r["rule"] in DIRECTORY_RULES and not p.suffix:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("stand-in")
        os.utime(p, (later, later))
    return wd, data, {r["output_file"]: r for r in rows}


def _pending_after_edit(study, edited: str) -> set[str]:
    wd, data, rows = study
    assert not [r for r in _summary(wd) if r["plan"] == "update pending"], "the stand-ins are not up to date"
    path = data / edited
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"\n")
        later = time.time() + 60
        os.utime(path, (later, later))
        return {r["output_file"] for r in _summary(wd) if r["plan"] == "update pending"}
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as before the edit: older than the stand-ins


def _rules(rows, outputs):
    return {rows[o]["rule"] for o in outputs}


@pytest.mark.parametrize("edited", ["tasks/sums_shared.yaml", "templates/base.yaml", "templates/utils.py", "sums.jsonl"])
def test_an_lm_eval_task_file_replans_its_items_and_every_job_after_them(study, edited):
    wd, data, rows = study
    pending = _pending_after_edit(study, edited)
    assert "results/items/mytask.parquet" in pending
    # the training text (make_sft_data reads the items) and the evaluation (it reads the task config itself)
    assert {"prepare_items", "make_sft_data", "finetune", "evaluate_zero_shot", "evaluate_checkpoint", "evaluate_icl",
            "aggregate"} <= _rules(rows, pending)
    # the other dataset's jobs stay (its figures follow the one results table of all datasets)
    assert not [o for o in pending if "sums" in o and not o.startswith(("results/figures", "results/tables"))], \
        "another dataset re-planned"
    # and the evaluation rules declare the file themselves (they read the task's own config)
    from crossdiff.plan.inputs import task_files

    cfg = _config(data)["datasets"]["mytask"]
    assert str(data / edited) in task_files(cfg)


def test_a_model_solutions_file_replans_only_that_models_training(study):
    wd, data, rows = study
    pending = _pending_after_edit(study, "sol_local.csv")
    assert "results/items/sums/solutions-tiny.parquet" not in pending
    local = [o for o in pending if o.startswith("results/items/sums/solutions-")]
    assert len(local) == 1, local
    assert {"attach_model_solutions", "make_model_sft_data", "finetune", "evaluate_checkpoint", "evaluate_icl"} <= _rules(rows, pending)
    assert not [o for o in pending if ("/tiny/" in o or "mytask" in o) and not o.startswith(("results/figures", "results/tables"))], \
        sorted(pending)[:10]


def test_a_local_base_model_directory_replans_only_its_own_jobs(study):
    wd, data, rows = study
    pending = _pending_after_edit(study, "local_model/config.json")
    assert pending and {"finetune", "evaluate_zero_shot", "evaluate_checkpoint", "evaluate_icl"} <= _rules(rows, pending)
    assert not [o for o in pending if ("/tiny/" in o and not o.startswith(("results/figures", "results/tables")))
                or o.startswith(("results/items", "results/bins", "results/irt", "results/sft"))], sorted(pending)[:10]
