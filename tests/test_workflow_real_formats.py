"""The difficulty half on real-format inputs: ARC items in the hub's schema and lm-eval --log_samples logs."""

import json

import numpy as np
import polars as pl

from conftest import make_workdir, snakemake


def write_inputs(root, n_items=60, n_models=40, seed=0):
    rng = np.random.default_rng(seed)
    with open(root / "arc.jsonl", "w") as fh:
        for i in range(n_items):
            fh.write(json.dumps({"id": f"Q{i}", "question": f"Question number {i}" + " word" * int(rng.integers(1, 30)),
                                 "choices": {"text": ["a", "b", "c", "d"], "label": ["A", "B", "C", "D"]},
                                 "answerKey": "ABCD"[i % 4]}) + "\n")
    b = rng.normal(size=n_items)
    for m in range(n_models):
        theta = rng.normal()
        d = root / "lm_eval_out" / f"org__model-{m:02d}"
        d.mkdir(parents=True)
        with open(d / "samples_arc_challenge_2026-03-01T10-00-00.000000.jsonl", "w") as fh:
            for i in range(n_items):
                if rng.random() < 0.05:
                    continue  # missing
                p = 1 / (1 + np.exp(-(theta - b[i])))
                acc = float(rng.random() < p)
                fh.write(json.dumps({"doc_id": i, "doc": {"id": f"Q{i}"}, "filter": "none", "metrics": ["acc", "acc_norm"],
                                     "acc": acc, "acc_norm": acc}) + "\n")
    return b


def test_difficulty_half_on_arc_items_and_lm_eval_logs(tmp_path):
    true_b = write_inputs(tmp_path)
    config = f"""
datasets:
  arc:
    items: {{source: hub, adapter: arc, path: {tmp_path / "arc.jsonl"}}}
    responses: {{source: lm_eval_samples, path: {tmp_path / "lm_eval_out"}, task: arc_challenge, metric: acc_norm}}
irt: {{engine: fast, stability: {{seeds: [], engines: []}}}}
bins: {{n_bins: 4}}
"""
    wd = make_workdir(tmp_path / "wd", config)
    snakemake(wd, "--cores", "2")
    items = pl.read_parquet(wd / "results/items/arc.parquet")
    assert items.height == 60 and items["item_id"][:3].to_list() == ["0", "1", "2"]
    matrix = pl.read_parquet(wd / "results/responses/arc.parquet")
    assert matrix["model_id"].n_unique() == 40 and set(matrix["item_id"]) <= set(items["item_id"])
    bins = pl.read_parquet(wd / "results/bins/arc/bins.parquet")
    assert sorted(bins.group_by("bin").len()["len"].to_list()) == [bins.height // 4] * 4
    irt = pl.read_parquet(wd / "results/irt/arc/items.parquet").with_columns(pl.col("item_id").cast(pl.Int64)).sort("item_id")
    est = irt["difficulty"].to_numpy()
    assert np.corrcoef(est, true_b[irt["item_id"].to_numpy()])[0, 1] > 0.7
    assert (wd / "results/figures/arc/difficulty/spearman.png").stat().st_size > 10_000
    assert not (wd / "results/figures/arc/difficulty/truth.png").exists()  # no truth for real data


def test_difficulty_half_from_the_leaderboard_through_a_local_hub(tmp_path):
    """BBH items in the hub schema; responses collected from a loopback hub with v2 details repos."""
    from hub_server import FakeHub, FakeRepo

    rng = np.random.default_rng(1)
    subtasks, n_docs, n_models = ["boolean_expressions", "navigate"], 12, 30
    items_dir = tmp_path / "bbh"
    items_dir.mkdir()
    for sub in subtasks:
        (items_dir / f"{sub}.jsonl").write_text("".join(
            json.dumps({"input": f"{sub} question {i}", "target": "True"}) + "\n" for i in range(n_docs)))
    b = rng.normal(size=(len(subtasks), n_docs))
    repos, models = {}, []
    for m in range(n_models):
        model, theta = f"org{m % 3}/model-{m:02d}", rng.normal()
        models.append(model)
        slug = model.replace("/", "__")
        files = {}
        for s, sub in enumerate(subtasks):
            lines = [json.dumps({"doc_id": i, "filter": "none", "metrics": ["acc_norm"],
                                 "acc_norm": float(rng.random() < 1 / (1 + np.exp(b[s, i] - theta)))})
                     for i in range(n_docs)]
            files[f"{slug}/samples_leaderboard_bbh_{sub}_2024-06-26T10-00-00.123456.jsonl"] = ("\n".join(lines) + "\n").encode()
        repos[f"open-llm-leaderboard/{slug}-details"] = FakeRepo(files)
    with FakeHub(repos) as hub:
        config = {
            "datasets": {"bbh": {
                "items": {"source": "hub", "adapter": "bbh", "path": str(items_dir), "subtasks": subtasks},
                "responses": {"source": "leaderboard", "version": "v2", "task": "leaderboard_bbh", "subtasks": True,
                              "metric": "acc_norm", "models": models, "endpoint": hub.url,
                              "cache_dir": str(tmp_path / "cache"), "concurrency": 4},
            }},
            "irt": {"engine": "fast", "stability": {"seeds": [], "engines": []}},
            "bins": {"n_bins": 3},
        }
        wd = make_workdir(tmp_path / "wd", json.dumps(config))
        snakemake(wd, "--cores", "2", env={"HF_HUB_OFFLINE": "0"})
        downloads = sum(hub.downloads.values())
    matrix = pl.read_parquet(wd / "results/responses/bbh.parquet")
    assert matrix["model_id"].n_unique() == n_models
    assert set(matrix["item_id"]) <= {f"{s}/{i}" for s in subtasks for i in range(n_docs)}
    assert downloads == n_models * len(subtasks)  # each per-sample file fetched once
    assert (tmp_path / "cache" / "bbh" / "manifest.jsonl").exists()
    bins = pl.read_parquet(wd / "results/bins/bbh/bins.parquet")
    assert bins.height == matrix["item_id"].n_unique() and bins["bin"].n_unique() == 3
