"""Per-model training targets (models[].solutions.<dataset>): each model's fine-tunes train on its own
solutions table, planned by the DAG as their own SFT files; a model lacking them stops the parse."""

import json
import shlex

import numpy as np
import yaml

from crossdiff.slugs import slugify
from crossdiff.study.solutions import check_model_solutions

from conftest import make_workdir, snakemake

MODELS = ["org/model-a", "org/model-b"]


def write_inputs(root, n_items=20, n_models=30):
    rng = np.random.default_rng(0)
    with open(root / "items.jsonl", "w") as fh:
        for i in range(n_items):
            fh.write(json.dumps({"item_id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n")
    with open(root / "responses.csv", "w") as fh:
        fh.write("model_id,item_id,correct\n")
        for m in range(n_models):
            for i in range(n_items):
                fh.write(f"m{m},q{i},{int(rng.random() < (m + 1) / (n_models + 1) * (1 - i / n_items / 2))}\n")
    for model in MODELS:
        with open(root / f"{slugify(model)}.jsonl", "w") as fh:
            for i in range(n_items):
                fh.write(json.dumps({"item_id": f"q{i}", "model_solution": f"{model} solves q{i}: {i + 1}"}) + "\n")


def config(root, models):
    return yaml.safe_dump({
        "datasets": {"arith": {"items": {"source": "file", "path": str(root / "items.jsonl")},
                               "responses": {"source": "table", "path": str(root / "responses.csv")},
                               "prompt": {"target": " {model_solution}"}}},
        "irt": {"stability": {"seeds": [], "engines": []}},
        "filters": {"drop_constant_items": False},
        "bins": {"n_bins": 2},
        "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}},
        "models": models,
    })


def test_each_model_trains_on_its_own_solutions(tmp_path):
    write_inputs(tmp_path)
    models = [{"id": m, "solutions": {"arith": {"path": str(tmp_path / f"{slugify(m)}.jsonl")}}} for m in MODELS]
    wd = make_workdir(tmp_path / "wd", config(tmp_path, models))
    # the fine-tunes of each model read their own SFT file
    proc = snakemake(wd, "-n", "-p", "--cores", "2")
    train = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if "crossdiff finetune " in line:
            args = shlex.split(line[line.index("crossdiff finetune "):].split(" > ")[0])
            train[args[args.index("--output") + 1]] = args[args.index("--train") + 1]
    for m in MODELS:
        s = slugify(m)
        for b in (0, 1):
            assert train[f"results/finetune/{s}/arith/bin{b}"] == f"results/sft/arith/solutions-{s}/bin{b}.jsonl"
    assert len(train) == 4
    # build those SFT files: each holds its own model's solutions
    targets = [f"results/sft/arith/solutions-{slugify(m)}/bin{b}.jsonl" for m in MODELS for b in (0, 1)]
    snakemake(wd, *targets, "--cores", "2")
    for m in MODELS:
        rows = [json.loads(line) for b in (0, 1)
                for line in (wd / f"results/sft/arith/solutions-{slugify(m)}/bin{b}.jsonl").read_text().splitlines()]
        assert len(rows) == 20
        assert all(r["assistant"] == f"{m} solves {r['item_id']}: {int(r['item_id'][1:]) + 1}" for r in rows)
    assert not (wd / "results/sft/arith/bin0.jsonl").exists()


def test_a_model_without_the_solutions_a_dataset_needs_stops_the_parse(tmp_path):
    write_inputs(tmp_path)
    models = [{"id": MODELS[0], "solutions": {"arith": {"path": str(tmp_path / f"{slugify(MODELS[0])}.jsonl")}}},
              {"id": MODELS[1]}]
    wd = make_workdir(tmp_path / "wd", config(tmp_path, models))
    proc = snakemake(wd, "-n", "--cores", "2", check=False)
    assert proc.returncode != 0
    assert ("model 'org/model-b' has no solutions for dataset 'arith', whose prompt trains on {model_solution}"
            in proc.stdout + proc.stderr)


def test_unused_or_unknown_solutions_are_refused():
    prompt = {"target": " {answer}"}
    problems = check_model_solutions({"a": {"id": "org/a", "solutions": {"math": {"path": "x"}}}},
                                     {"math": (prompt, None)})
    assert len(problems) == 1 and "never uses {model_solution}" in problems[0]
    # a shared items.solutions serves every model
    assert check_model_solutions({"a": {"id": "org/a"}}, {"math": ({"target": " {model_solution}"}, {"path": "s"})}) == []
    import pytest

    from crossdiff.config import validate
    from crossdiff.errors import CrossdiffError

    with pytest.raises(CrossdiffError, match=r"models\.0\.solutions: unknown dataset 'maths'"):
        validate({"datasets": {"math": {"items": {"source": "none"}, "responses": {"source": "simulated"}}},
                  "models": [{"id": "org/a", "solutions": {"maths": {"path": "x"}}}]})


def test_empty_model_solution_falls_back_as_the_authors(tmp_path):
    """train/utils.py: `model_solution if model_solution else solution`."""
    import polars as pl

    from crossdiff.items.adapters import attach_solutions

    (tmp_path / "s.jsonl").write_text(json.dumps({"question": "Q1", "model_solution": "M1", "solution": "H1"}) + "\n"
                                      + json.dumps({"question": "Q2", "model_solution": "", "solution": "H2"}) + "\n")
    items = pl.DataFrame({"item_id": ["a", "b"], "question": ["Q1", "Q2"]})
    spec = {"path": str(tmp_path / "s.jsonl"), "key": "question", "column": "model_solution"}
    import pytest

    from crossdiff.errors import CrossdiffError

    with pytest.raises(CrossdiffError, match=r"1 of 2 item\(s\) have no solution"):
        attach_solutions(items, spec, "math")
    got = attach_solutions(items, {**spec, "fallback_column": "solution"}, "math")
    assert got["model_solution"].to_list() == ["M1", "H2"]
