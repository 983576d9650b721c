"""Checks before work (crossdiff.plan.checks; issue 26, sections 2 and 3): each runs at parse on the settings the
resolver gives the job, so a setting given at any level is checked, whatever resources.memory_check says."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import REPO, make_workdir, snakemake
from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan


def config(**over):
    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60},
                               "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def found(**over) -> list[str]:
    return problems(Plan(config(**over)))


CURRICULUM = {"train_sets": {"up": {"bins": "all", "order": "easy_to_hard"}}, "seeds": [1, 2]}


# ------------------------------------------------------------------ seeds that change nothing, at every level
@pytest.mark.parametrize("over, refused", [
    ({}, True),                                                                  # full fine-tune
    ({"finetune": {"lora": {"r": 8}}}, False),                                   # LoRA everywhere
    ({"finetune": {"lora": {"r": 8}}, "models": [{"id": "m", "build": "tiny", "finetune": {"lora": None}}]}, True),
    ({"finetune": {"lora": {"r": 8}}, "datasets": {"d": {"finetune": {"lora": None}}}}, True),
    ({"models": [{"id": "m", "build": "tiny", "finetune": {"lora": {"r": 8}}}]}, False),  # LoRA only per model
    ({"datasets": {"d": {"finetune": {"lora": {"r": 8}}}}}, False),
])
def test_seed_variance_is_checked_on_the_resolved_settings(over, refused):
    out = [p for p in found(study=CURRICULUM, **over) if "study.seeds" in p]
    assert bool(out) == refused, out
    if refused:
        assert "['up']" in out[0] and "models[0] (m)" in out[0]


# ------------------------------------------------------------------ QLoRA ranks and devices
def test_nf4_with_num_processes_auto_on_four_gpus_is_refused_without_advising_ddp():
    out = found(finetune={"lora": {"r": 8}, "quantization": "nf4"},
                models=[{"id": "m", "build": "tiny", "resources": {"gpu": 4}}])
    msg = [p for p in out if "QLoRA" in p]
    assert msg and "one process per job" in msg[0] and "4" in msg[0] and "models[].resources.gpu: 1" in msg[0]
    assert not any("sharding: ddp" in p for p in out)
    # one GPU: fine
    assert not found(finetune={"lora": {"r": 8}, "quantization": "nf4"},
                     models=[{"id": "m", "build": "tiny", "resources": {"gpu": 1}}])


@pytest.mark.parametrize("over", [{"resources": {"finetune": {"gpu": 0}}},
                                  {"resources": {"finetune": {"gpu": 1}}, "finetune": {"device": "cpu"}}])
def test_nf4_on_a_cpu_job_is_refused(over):
    out = found(**deep_merge({"finetune": {"lora": {"r": 8}, "quantization": "nf4"}}, over))
    assert any("needs a CUDA GPU" in p for p in out), out


# ------------------------------------------------------------------ the batch split, CPU configs and memory_check off
@pytest.mark.parametrize("where", ["finetune", "dataset", "model"])
def test_a_global_batch_that_does_not_divide_is_refused_at_parse_on_cpu(where):
    bad = {"per_device_train_batch_size": 3, "global_batch_size": 8}
    over = {"finetune": {"finetune": bad}, "dataset": {"datasets": {"d": {"finetune": bad}}},
            "model": {"models": [{"id": "m", "build": "tiny", "finetune": bad}]}}[where]
    out = found(**over)
    assert any("global_batch_size 8 is not a multiple" in p for p in out), out


def test_memory_check_off_switches_off_only_the_memory_plan(tmp_path):
    cfg = config(finetune={"per_device_train_batch_size": 3, "global_batch_size": 8},
                 resources={"memory_check": "off"})
    wd = make_workdir(tmp_path, json.dumps(cfg))
    proc = snakemake(wd, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "global_batch_size 8 is not a multiple" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout  # stopped at parse: no job planned, none run


# ------------------------------------------------------------------ ICL before any model loads
def test_icl_k_larger_than_a_bin_is_refused_at_parse():
    out = found(study={"methods": ["sft", "icl"], "icl": {"k": 30}})
    assert any("study.icl.k = 30" in p and "at most 20" in p for p in out), out
    assert not found(study={"methods": ["sft", "icl"], "icl": {"k": 8}})


def test_make_bins_stops_when_a_bin_has_fewer_training_items_than_k():
    from crossdiff.bins.make import check_train_items

    table = pl.DataFrame({"item_id": [f"i{i}" for i in range(9)], "bin": [0] * 5 + [1] * 4,
                          "heldout": [False, False, False, True, True, False, False, True, True]})
    check_train_items(table, 2, "irt.parquet")
    with pytest.raises(CrossdiffError, match=r"irt.parquet: study.icl.k = 3 .* bin\(s\) 1 \(2\)"):
        check_train_items(table, 3, "irt.parquet")
    with pytest.raises(CrossdiffError, match=r"needs 5 training item.* the test item itself"):
        check_train_items(table.drop("heldout"), 4, "irt.parquet")


def test_icl_alone_with_design_settings_it_would_ignore_is_refused():
    for key, value in (("train_sizes", [10]), ("seeds", [1, 2]), ("train_sets", {"s": {"bins": [0]}})):
        out = found(study={"methods": ["icl"], "icl": {"k": 2}, key: value})
        assert any(f"study.{key}" in p and "would be ignored" in p for p in out), (key, out)
    assert not found(study={"methods": ["sft", "icl"], "icl": {"k": 2}, "train_sizes": [10]})


def test_every_problem_is_reported_at_once():
    with pytest.raises(CrossdiffError) as exc:
        from crossdiff.plan.checks import check

        check(Plan(config(study={"methods": ["icl"], "icl": {"k": 40}, "seeds": [1, 2]})))
    text = str(exc.value)
    assert "study.icl.k = 40" in text and "study.seeds" in text and text.count("\n  - ") >= 2


def test_an_lm_eval_generation_longer_than_a_local_models_context_stops_the_dry_run(tmp_path):
    model = tmp_path / "small_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    cfg = {"datasets": {"g": {"items": {"source": "lm_eval_task", "task": "sums_gen",
                                        "include_path": str(REPO / "tests/fixtures/lm_eval_tasks"),
                                        "overrides": {"generation_kwargs": {"max_gen_toks": 300, "until": ["\n"]}}},
                              "responses": {"source": "simulated", "n_models": 40}}},
           "models": [{"id": str(model)}], "bins": {"n_bins": 2},
           "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    wd = make_workdir(tmp_path / "wd", json.dumps(cfg))
    proc = snakemake(wd, "-n", "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "max_gen_toks" in out and "256" in out, out[-3000:]


def test_a_truncated_local_config_json_is_named_even_with_memory_check_off(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "hidden_si')
    out = found(models=[{"id": str(model)}], resources={"memory_check": "off"})
    assert any(str(model / "config.json") in p and "not readable JSON" in p for p in out), out
