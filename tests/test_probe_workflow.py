"""study.methods: probe and bins.by: mdl:<slug> end to end on a reduced embedded config (issue 27): one hidden-state
pass per model x dataset, a probe cell for every (train level, test level), MDL levels equal to a direct computation
of Hase et al.'s definition, the states and option scores equal to unbatched transformers forwards."""

import json
import re

import numpy as np
import polars as pl
import pytest

from conftest import make_workdir, snakemake

STUDY = """
datasets:
  mini:
    items: {source: synthetic, n_items: 90, max_ops: 3, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}
    bins: {by: "mdl:tiny", mdl: {n_grid: [5, 20], n_bootstrap: 2, folds: 3}}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 3, scheme: quantiles, edges: [0.3, 0.7], holdout_fraction: 0.5}
models:
  - id: tiny
    build: tiny
    warmup_dataset: mini
    build_settings: {hidden_size: 32, num_layers: 2, warmup_problems: 400, warmup_steps: 40, eval_items: 0}
study: {methods: [probe], probe: {n_train: 10, n_bootstrap: 2, epochs: 20}}
evaluate: {batch_size: 32}
aggregate: {n_boot: 200}
resources:
  finetune: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
  evaluate: {gpu: 0, mem_mb: 2000, runtime: 10, threads: 1}
"""
TARGETS = ["results/tables/results.parquet", "results/figures/mini/probe/tiny/accuracy.png"]


def planned_jobs(proc) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)
            if m.group(1) not in ("total", "count")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("probe"), STUDY)
    snakemake(wd, "--cores", "2", *TARGETS, timeout=900)
    return wd


def test_a_probe_cell_for_every_train_and_test_level(study):
    table = pl.read_parquet(study / "results/tables/results.parquet")
    probes = table.filter(pl.col("method") == "probe")
    assert sorted(zip(probes["train_bin"], probes["test_bin"])) == [(str(b), t) for b in range(3) for t in range(3)]
    assert probes["value"].is_between(0, 1).all() and probes["gain_lo"].is_not_null().all()
    for b in range(3):
        for t in range(3):
            rec = json.loads((study / f"results/eval/tiny/mini/probe-train{b}/bin{t}.json").read_text())
            assert rec["train_bin"] == f"probe-{b}" and rec["metric"] == "acc"
            task = [json.loads(x)["item_id"] for x in (study / f"results/tasks/mini/bin{t}/data.jsonl").read_text().splitlines()]
            rows = [json.loads(x) for x in (study / f"results/eval/tiny/mini/probe-train{b}/bin{t}.samples.jsonl").read_text().splitlines()]
            assert [r["item_id"] for r in rows] == task  # the same test items as every other cell
            assert all(len(r["by_bootstrap"]) == 2 for r in rows)
            assert rec["value"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert (study / "results/figures/mini/probe/tiny/accuracy.png").stat().st_size > 5000
    # one forward pass per (item, option) for all cells and the MDL fits: 90 items x 4 candidates
    log = (study / "logs/probe_states/tiny/mini.log").read_text()
    assert "hidden states of 360 sequences (90 items" in log and log.count("loaded model") == 1


def test_other_probe_settings_rerun_no_forward_pass(study):
    cfg = (study / "config/config.yaml").read_text()
    (study / "config/config.yaml").write_text(cfg.replace("epochs: 20", "epochs: 30"))
    try:
        jobs = planned_jobs(snakemake(study, "-n", "--cores", "1", *TARGETS))
    finally:
        (study / "config/config.yaml").write_text(cfg)
    assert "probe_states" not in jobs and jobs.get("evaluate_probe") == 1 and jobs.get("mdl_measure") == 1, jobs


def test_an_mdl_table_listed_beside_bins_by_reuses_the_states(study):
    jobs = planned_jobs(snakemake(study, "-n", "--cores", "1", "results/bins/mini/measures/mdl/avg.parquet"))
    assert jobs == {"mdl_measure_listed": 1}, jobs  # mdl:avg over every model: the one hidden-state file there is


def test_mdl_equals_a_direct_computation_of_their_definition(study):
    from crossdiff.evaluate.hidden import option_mask, read_states
    from crossdiff.evaluate.probe import features, fit_probe, predict, resolve_settings

    H = read_states(study / "results/probe/tiny/mini/hidden.npz")
    table = pl.read_parquet(study / "results/bins/mini/mdl_measure.parquet")
    probe = resolve_settings({"n_train": 10, "n_bootstrap": 2, "epochs": 20})
    grid, boots, k, seed = [5, 20], 2, 3, 0
    ids = list(H["item_id"])
    X, gold = features(H["states"]), H["gold"]
    mask = option_mask(H["n_options"], X.shape[1])
    order = [sorted(ids)[i] for i in np.random.default_rng([seed, 0]).permutation(len(ids))]
    conf = np.full((len(ids), boots, len(grid)), np.nan)  # items x bootstraps x n (their label_confidences)
    for f in range(k):
        part = order[f::k]
        available_all = sorted(set(ids) - set(part))
        for r in range(boots):
            rng, available, draws = np.random.default_rng([seed, f, r]), available_all, {}
            for n in sorted(grid, reverse=True):  # nested: largest first (data_utils.py:1159-1166)
                pick = rng.choice(len(available), size=min(n, len(available)), replace=False)
                available = [available[i] for i in pick]
                draws[n] = available
            for j, n in enumerate(grid):
                ti = [ids.index(i) for i in draws[n]]
                pi = [ids.index(i) for i in part]
                fitted = fit_probe(X[ti], mask[ti], gold[ti], probe,
                                   seed=int(np.random.SeedSequence([seed, f, r, n, 7]).generate_state(1)[0]))
                conf[pi, r, j] = predict(fitted, X[pi], mask[pi])[np.arange(len(pi)), gold[pi]]
    expect = 1 - np.nanmean(conf, axis=(1, 2))  # main.py:297-298 (one prompt)
    got = dict(zip(table["item_id"], table["measure"]))
    assert np.allclose([got[i] for i in ids], expect, atol=1e-9)
    assert np.allclose(table["measure"], table["mdl_tiny"])  # one model: the average is its MDL
    assert table["measure_normed"].min() == 0 and table["measure_normed"].max() == pytest.approx(1)
    # the levels are cut at the 30% / 70% quantiles of the MDL (ties to the outer levels)
    bins = pl.read_parquet(study / "results/bins/mini/bins.parquet").select("item_id", "bin").join(table, on="item_id")
    lo, hi = np.quantile(table["measure"].to_numpy(), [0.3, 0.7])
    assert bins.filter(pl.col("bin") == 0)["measure"].max() <= lo
    assert bins.filter(pl.col("bin") == 2)["measure"].min() >= hi
    assert bins.filter(pl.col("bin") == 1)["measure"].is_between(lo, hi, closed="none").all()


def test_states_and_zero_shot_mdl_equal_unbatched_forwards(study):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crossdiff.evaluate import mdl
    from crossdiff.evaluate.hidden import read_states
    from crossdiff.io import read_table
    from crossdiff.prompts.format import PromptFormat
    from crossdiff.prompts.options import options

    H = read_states(study / "results/probe/tiny/mini/hidden.npz")
    model = AutoModelForCausalLM.from_pretrained(study / "results/models/tiny", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(study / "results/models/tiny")
    fmt = PromptFormat.from_config(H["meta"]["prompt"])
    items = {r["item_id"]: r for r in read_table(study / "results/items/mini.parquet").to_dicts()}
    zero_shot = mdl.model_mdl(H, None, {"variant": "decoding"})
    layers = H["meta"]["layers"]
    for i in (0, 17, 89):
        item = items[H["item_id"][i]]
        texts, g = options(fmt, item)
        assert g == H["gold"][i] and len(texts) == H["n_options"][i]
        scores = []
        for o, text in enumerate(texts):
            ctx = tok(fmt.prompt_text(item))["input_ids"]
            ids = ctx + tok(text, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                out = model(torch.tensor([ids]), output_hidden_states=True)
            logp = torch.log_softmax(out.logits[0, :-1].double(), -1)
            scores.append(sum(float(logp[p, ids[p + 1]]) for p in range(len(ctx) - 1, len(ids) - 1)))
            for j, layer in enumerate(layers):
                assert np.allclose(H["states"][i, o, j], out.hidden_states[layer][0, -1].numpy(), atol=1e-4)
        p = np.exp(np.array(scores) - max(scores))
        assert zero_shot[i] == pytest.approx(1 - p[g] / p.sum(), abs=1e-5)  # 1 - the zero-shot label confidence
