"""items.source lm_eval_task: any lm-eval task as a benchmark (issue 22).

A multiple-choice and a generation task defined in tests/fixtures/lm_eval_tasks over a local JSON
dataset: item ids are lm-eval's doc ids, a bin's evaluation equals lm-eval's own ``simple_evaluate`` on the
same docs with the same model, training text comes from the task config, and ``lm_eval_samples`` of the
task import without matching."""

import json
import os
import random
import shutil
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval_tasks"
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 400,
         "warmup_steps": 40, "batch_size": 32, "eval_items": 0}


def sums_rows(n: int = 40, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        terms = [rng.randint(1, 9) for _ in range(2 + i % 4)]
        s = sum(terms)
        opts = sorted({s, s + 1, s - 1, s + 2})
        rows.append({"question": " + ".join(map(str, terms)), "answer": str(s), "options": [str(o) for o in opts],
                     "label": opts.index(s), "n_terms": len(terms), "meta": {"seed": seed, "i": i}})
    return rows


def settings_for(task: str, data: Path) -> dict:
    return {"source": "lm_eval_task", "task": task, "include_path": str(FIXTURES),
            "overrides": {"dataset_kwargs": {"data_files": {"test": str(data)}}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("lmtask")
    data = root / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sums_rows()))
    # lm-eval's own view of the same tasks, for the reference runs: the YAMLs with the data path filled in
    ref = root / "ref_tasks"
    ref.mkdir()
    for f in FIXTURES.glob("*.yaml"):
        (ref / f.name).write_text(f.read_text().replace("test: sums.jsonl", f"test: {data}"))
    generate_items(60, seed=5).write_parquet(root / "arith.parquet")
    build_base_model(root / "base", root / "arith.parquet", SMALL)
    return {"root": root, "data": data, "ref": ref, "model": root / "base"}


def _bins(items: pl.DataFrame, n_bins: int = 3) -> pl.DataFrame:
    order = items["n_terms"].rank("ordinal").cast(pl.Int64) - 1
    return pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64),
                         "bin": order * n_bins // items.height})


def test_items_are_lm_eval_docs_in_order(env):
    from lm_eval.tasks import TaskManager

    from crossdiff.items.adapters import prepare_items

    items = prepare_items(settings_for("sums_mc", env["data"]), "sums")
    docs = list(TaskManager(include_path=str(env["ref"]), include_defaults=False).load("sums_mc")["tasks"]["sums_mc"].eval_docs)
    assert items["item_id"].to_list() == [str(i) for i in range(len(docs))]
    assert items["question"].to_list() == [d["question"] for d in docs]  # every doc field kept, in lm-eval's order
    assert items["label"].to_list() == [d["label"] for d in docs]
    assert json.loads(items["meta"][3]) == docs[3]["meta"]  # nested fields as JSON
    assert items["lm_eval_prompt"][0] == f"Question: {docs[0]['question']}\nAnswer:"
    assert items["lm_eval_target"].to_list() == [d["options"][d["label"]] for d in docs]
    group = prepare_items(settings_for("sums", env["data"]), "sums")  # a group: <subtask>/<doc_id>
    assert group.height == 2 * len(docs)
    assert set(group["item_id"]) == {f"{s}/{i}" for s in ("mc", "gen") for i in range(len(docs))}


def test_errors_name_the_reason(env, tmp_path):
    from crossdiff.items.lm_eval_task import load_task_items

    bleu = settings_for("sums_gen", env["data"])
    bleu["overrides"]["metric_list"] = [{"metric": "bleu", "aggregation": "bleu", "higher_is_better": True}]
    with pytest.raises(CrossdiffError, match="corpus-level score"):  # threshold or not: tests/test_lm_eval_task_checks.py
        load_task_items(bleu)
    shuffled = settings_for("sums_mc", env["data"])
    shuffled["overrides"]["process_docs"] = lambda ds: ds.shuffle()  # unseeded: another order each load
    with pytest.raises(CrossdiffError, match="different order"):
        load_task_items(shuffled)
    missing = settings_for("sums_mc", tmp_path / "nope.jsonl")
    with pytest.raises(CrossdiffError, match="nope.jsonl.*no such file"):
        load_task_items(missing)


def test_unknown_task_names_the_closest(env):
    from crossdiff.items.lm_eval_task import load_task_items

    with pytest.raises(CrossdiffError, match=r"closest registered names: .*hellaswag"):
        load_task_items({"task": "hellaswagg", "include_path": str(FIXTURES)})


def test_training_text_from_the_task_config(env, tmp_path):
    from crossdiff.items.adapters import prepare_items, prompt_for
    from crossdiff.study.sft_data import make_sft_data

    for task in ("sums_mc", "sums_gen"):
        settings = settings_for(task, env["data"])
        items = prepare_items(settings, "sums")
        items.write_parquet(tmp_path / "items.parquet")
        _bins(items).write_parquet(tmp_path / "bins.parquet")
        make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "sft.jsonl",
                      prompt_for(settings, None))
        rows = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
        docs = {str(i): d for i, d in enumerate(sums_rows())}
        assert rows and all(r["prompt"] == f"Question: {docs[r['item_id']]['question']}\nAnswer:" for r in rows)
        assert all(r["completion"] == " " + docs[r["item_id"]]["answer"] for r in rows)  # delimiter + gold
    with pytest.raises(CrossdiffError, match="do not apply"):
        prompt_for(settings, {"template": "Q: {question}"})


@pytest.mark.parametrize("task,metric", [("sums_mc", "acc,none"), ("sums_gen", "exact_match,first-number")])
def test_bin_scores_equal_simple_evaluate(env, tmp_path, task, metric):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from crossdiff.evaluate.run import evaluate_model, load_lm, make_task, resolve_settings
    from crossdiff.items.adapters import prepare_items, prompt_for

    settings = settings_for(task, env["data"])
    items = prepare_items(settings, "sums")
    items.write_parquet(tmp_path / "items.parquet")
    bins = _bins(items)
    bins.write_parquet(tmp_path / "bins.parquet")
    dirs = [make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", b, tmp_path / f"bin{b}", "sums",
                      prompt_for(settings, None)) and tmp_path / f"bin{b}" for b in range(3)]
    lm = load_lm(env["model"], resolve_settings({"batch_size": 8}))
    outs = [tmp_path / f"eval{b}.json" for b in range(3)]
    records = evaluate_model(env["model"], dirs, outs, {"batch_size": 8}, "tiny", "zero-shot", lm=lm)
    manager = TaskManager(include_path=str(env["ref"]), include_defaults=False)
    for b, record in enumerate(records):
        doc_ids = sorted(int(i) for i in bins.filter(pl.col("bin") == b)["item_id"])
        ref = simple_evaluate(model=lm, tasks=[task], task_manager=manager, samples={task: doc_ids},
                              log_samples=True, bootstrap_iters=0)
        assert record["n_items"] == len(doc_ids) and record["metric"] == metric.split(",")[0]
        assert record["value"] == pytest.approx(ref["results"][task][metric], abs=1e-12)
        per_doc = {s["doc_id"]: s[metric.split(",")[0]] for s in ref["samples"][task]
                   if s["filter"] == metric.split(",")[1]}
        logged = [json.loads(x) for x in outs[b].with_name(f"eval{b}.samples.jsonl").read_text().splitlines()]
        assert {int(r["item_id"]): r["correct"] for r in logged} == per_doc
        if task == "sums_mc":  # the chosen option (issue 26): its index and text, as lm-eval's acc chooses it
            lls = {s["doc_id"]: [r[0] for r in s["filtered_resps"]] for s in ref["samples"][task]}
            for r in logged:
                d = int(r["item_id"])
                assert r["prediction"] == max(range(len(lls[d])), key=lambda i: lls[d][i])
                assert r["prediction_text"] == sums_rows()[d]["options"][r["prediction"]]
                assert r["loglikelihoods"] == pytest.approx(lls[d], abs=1e-4)  # other batches: float noise
                assert r["correct"] == int(r["prediction"] == sums_rows()[d]["label"])
        assert json.loads(outs[b].read_text())["value"] == record["value"]


def test_changed_dataset_stops_evaluation(env, tmp_path):
    from crossdiff.evaluate.run import evaluate_model, make_task
    from crossdiff.items.adapters import prepare_items, prompt_for

    settings = settings_for("sums_mc", env["data"])
    items = prepare_items(settings, "sums")
    items.write_parquet(tmp_path / "items.parquet")
    _bins(items).write_parquet(tmp_path / "bins.parquet")
    make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "bin0", "sums", prompt_for(settings, None))
    meta = json.loads((tmp_path / "bin0" / "task.json").read_text())
    meta["items"][0]["doc_hash"] = "0" * 64
    (tmp_path / "bin0" / "task.json").write_text(json.dumps(meta))
    with pytest.raises(CrossdiffError, match="differs from the item table"):
        evaluate_model(env["model"], [tmp_path / "bin0"], [tmp_path / "e.json"], {"batch_size": 8})


def test_lm_eval_samples_join_without_matching(env, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    from crossdiff.evaluate.run import load_lm, resolve_settings
    from crossdiff.items.adapters import prepare_items
    from crossdiff.responses.build import build

    items = prepare_items(settings_for("sums_mc", env["data"]), "sums")
    items.write_parquet(tmp_path / "items.parquet")
    lm = load_lm(env["model"], resolve_settings({"batch_size": 8}))
    res = simple_evaluate(model=lm, tasks=["sums_mc"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(env["ref"]), include_defaults=False))
    for model in ("org__tiny", "org__tiny-copy"):  # lm-eval's --output_path layout: one folder per model
        (tmp_path / "logs" / model).mkdir(parents=True)
        (tmp_path / "logs" / model / "samples_sums_mc_2025-01-01T00-00-00.jsonl").write_text(
            "".join(json.dumps(s, default=handle_non_serializable) + "\n" for s in res["samples"]["sums_mc"]))
    df, dropped, stats = build("lm_eval_samples", tmp_path / "logs", {"task": "sums_mc", "metric": "acc"},
                               {"min_responses_per_model": 1, "min_responses_per_item": 1, "drop_constant_items": False,
                                "dedupe_models": False}, tmp_path / "items.parquet")
    assert dropped.height == 0 and df.height == 2 * items.height
    assert set(df["item_id"]) == set(items["item_id"])
    ref = {str(s["doc_id"]): int(s["acc"]) for s in res["samples"]["sums_mc"]}
    assert {r["item_id"]: r["correct"] for r in df.filter(pl.col("model_id") == df["model_id"][0]).to_dicts()} == ref


DAG = """
datasets:
  mini:
    items: {source: synthetic, n_items: 60, max_ops: 3, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 30, missing_rate: 0.0, n_duplicates: 0, seed: 2}
  sums:
    items:
      source: lm_eval_task
      task: sums_mc
      include_path: FIXTURES
      overrides: {dataset_kwargs: {data_files: {test: DATA}}}
    responses: {source: lm_eval_samples, path: LOGS, task: sums_mc, metric: acc}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 3}
models:
  - id: tiny
    build: tiny
    warmup_dataset: mini
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 300, warmup_steps: 30, eval_items: 0}
finetune: {num_train_epochs: 1, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 50}
evaluate: {batch_size: 16}
resources:
  finetune: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
  evaluate: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
"""


def test_dag_items_bins_finetune_and_cross_bin_evaluation(env, tmp_path):
    """The DAG on the lm-eval task: items, responses (lm-eval logs of 30 models), IRT, bins, a tiny fine-tune
    and its evaluation on every bin; each bin's score equals simple_evaluate of the checkpoint on its docs."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from conftest import make_workdir, snakemake
    from crossdiff.evaluate.run import load_lm, resolve_settings

    rng = random.Random(3)
    docs = sums_rows()
    for m in range(30):  # ability grows with m, difficulty with the number of terms
        (tmp_path / "logs" / f"m{m}").mkdir(parents=True)
        recs = [{"doc_id": i, "acc": float(rng.random() < 1 / (1 + 2.718 ** (d["n_terms"] - 2 - m / 6)))}
                for i, d in enumerate(docs)]
        (tmp_path / "logs" / f"m{m}" / "samples_sums_mc_2025-01-01T00-00-00.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in recs))
    wd = make_workdir(tmp_path / "wd", DAG.replace("FIXTURES", str(FIXTURES)).replace("DATA", str(env["data"]))
                      .replace("LOGS", str(tmp_path / "logs")))
    cells = [f"results/eval/tiny/sums/train1/bin{t}.json" for t in range(3)]
    snakemake(wd, "--cores", "2", *cells, timeout=600)
    bins = pl.read_parquet(wd / "results/bins/sums/bins.parquet")
    assert bins.height == len(docs) and sorted(bins["bin"].unique().to_list()) == [0, 1, 2]
    lm = load_lm(wd / "results/finetune/tiny/sums/bin1", resolve_settings({"batch_size": 16}))
    manager = TaskManager(include_path=str(env["ref"]), include_defaults=False)
    for t, cell in enumerate(cells):
        record = json.loads((wd / cell).read_text())
        ids = sorted(int(i) for i in bins.filter(pl.col("bin") == t)["item_id"])
        ref = simple_evaluate(model=lm, tasks=["sums_mc"], task_manager=manager, samples={"sums_mc": ids},
                              bootstrap_iters=0)
        assert record["n_items"] == len(ids) and record["metric"] == "acc" and record["lm_eval_task"] == "sums_mc"
        assert record["value"] == pytest.approx(ref["results"]["sums_mc"]["acc,none"], abs=1e-12)
    sft = [json.loads(x) for x in (wd / "results/sft/sums/bin1.jsonl").read_text().splitlines()]
    assert sft and all(r["prompt"].startswith("Question: ") and r["completion"].startswith(" ") for r in sft)
