"""One resolver computes every job's settings (crossdiff.plan.settings; issue 26, section 2): defaults <
finetune < the dataset's prompt.max_length < datasets.<d>.finetune < models[].finetune < the method < the design,
nested mappings merged key by key at every depth, lists replaced; the job gets the result as it is."""

from __future__ import annotations

import json

import pytest

from conftest import make_workdir, snakemake
from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.settings import DEFAULTS, LORA_DEFAULTS, LORA_LEARNING_RATE
from crossdiff.plan.settings import Plan


def config(**over):
    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60},
                               "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3}}
    return validate(deep_merge(base, over))


def test_deep_merge_merges_mappings_at_every_depth_and_replaces_the_rest():
    a = {"lora": {"r": 16, "alpha": 64, "target_modules": ["q", "v"]}, "x": {"y": {"z": 1, "w": 2}}, "k": 1}
    b = {"lora": {"r": 32, "target_modules": ["o"]}, "x": {"y": {"z": 3}}, "k": None}
    assert deep_merge(a, None, b) == {"lora": {"r": 32, "alpha": 64, "target_modules": ["o"]},
                                      "x": {"y": {"z": 3, "w": 2}}, "k": None}
    assert a["lora"]["r"] == 16  # inputs untouched
    assert deep_merge({"lora": {"r": 8}}, {"lora": None}) == {"lora": None}  # an explicit null replaces
    assert deep_merge({"lora": None}, {"lora": {"r": 8}}) == {"lora": {"r": 8}}


def test_nested_lora_merges_key_by_key_across_levels():
    plan = Plan(config(finetune={"lora": {"r": 16, "alpha": 64}},
                       models=[{"id": "m", "build": "tiny", "finetune": {"lora": {"r": 32}}}]))
    s = plan.finetune("d", "m")
    assert s["lora"] == {**LORA_DEFAULTS, "r": 32, "alpha": 64}  # alpha 64 kept (was the default 32)
    assert set(s) == set(DEFAULTS)  # complete: the job merges nothing


@pytest.mark.parametrize("level", ["top", "dataset", "model"])
def test_each_level_wins_over_the_ones_below(level):
    layers = {"top": {"finetune": {"learning_rate": 1e-3}},
              "dataset": {"datasets": {"d": {"finetune": {"learning_rate": 2e-3}}}},
              "model": {"models": [{"id": "m", "build": "tiny", "finetune": {"learning_rate": 3e-3}}]}}
    over = {}
    for name in ("top", "dataset", "model")[: ("top", "dataset", "model").index(level) + 1]:
        over = deep_merge(over, layers[name])
    assert Plan(config(**over)).finetune("d", "m")["learning_rate"] == {"top": 1e-3, "dataset": 2e-3, "model": 3e-3}[level]


def test_a_model_can_switch_lora_off_and_lora_gets_its_own_learning_rate():
    plan = Plan(config(finetune={"lora": {"r": 8}},
                       models=[{"id": "m", "build": "tiny", "finetune": {"lora": None}}, {"id": "n", "build": "tiny"}]))
    full, lora = plan.finetune("d", "m"), plan.finetune("d", "n")
    assert full["lora"] is None and full["learning_rate"] == DEFAULTS["learning_rate"] == 5e-6
    assert lora["lora"]["r"] == 8 and lora["learning_rate"] == LORA_LEARNING_RATE == 1e-4
    # a learning rate given at any level wins over LoRA's default
    plan = Plan(config(finetune={"lora": {"r": 8}}, datasets={"d": {"finetune": {"learning_rate": 3e-5}}}))
    assert plan.finetune("d", "m")["learning_rate"] == 3e-5


def test_prompt_max_length_sits_between_finetune_and_the_dataset_and_model_levels():
    ds = {"d": {"prompt": {"max_length": 4096}}}
    assert Plan(config(datasets=ds, finetune={"max_length": 512})).finetune("d", "m")["max_length"] == 4096
    assert Plan(config(datasets=deep_merge(ds, {"d": {"finetune": {"max_length": 256}}}))).finetune("d", "m")["max_length"] == 256
    assert Plan(config(datasets=ds, models=[{"id": "m", "build": "tiny", "finetune": {"max_length": 128}}])
                ).finetune("d", "m")["max_length"] == 128


def test_the_design_is_the_last_layer():
    plan = Plan(config(finetune={"seed": 7, "lora": {"r": 4}},
                       study={"train_sets": {"up": {"bins": "all", "order": "easy_to_hard"}}, "seeds": [1, 2]}))
    s = plan.finetune("d", "m", "set-up-seed2")
    assert s["seed"] == 2 and s["shuffle"] is False and s["lora"]["r"] == 4
    assert plan.finetune("d", "m", "bin0-seed1")["shuffle"] is True
    assert "set-up-seed1" in plan.finetune_runs()


def test_evaluate_settings_resolve_per_dataset_and_model():
    plan = Plan(config(evaluate={"batch_size": 64, "model_args": {"a": 1, "b": 2}},
                       datasets={"d": {"evaluate": {"batch_size": 8, "model_args": {"b": 3}}}},
                       models=[{"id": "m", "build": "tiny", "evaluate": {"dtype": "float32"}}]))
    s = plan.evaluate("d", "m")
    assert (s["batch_size"], s["model_args"], s["dtype"], s["backend"]) == (8, {"a": 1, "b": 3}, "float32", "hf")


def test_an_invalid_setting_is_named_with_the_levels_it_came_through():
    plan = Plan(config(models=[{"id": "m", "build": "tiny", "finetune": {"padding_free": True}}]))
    with pytest.raises(CrossdiffError, match=r"dataset 'd' x models\[0\] \(m\).*padding_free needs an attention"):
        plan.finetune("d", "m")


def test_the_jobs_get_the_resolved_settings(tmp_path):
    """A dry run's finetune command carries the merged lora (alpha 64) and the resolved defaults."""
    cfg = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}},
           "models": [{"id": "m", "build": "tiny", "finetune": {"lora": {"r": 32}}}], "bins": {"n_bins": 2},
           "finetune": {"lora": {"r": 16, "alpha": 64}}, "irt": {"stability": {"seeds": []}},
           "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    wd = make_workdir(tmp_path, json.dumps(cfg))
    out = snakemake(wd, "-n", "-p", "--cores", "1", "results/finetune/m/d/bin0").stdout
    cmd = next(line for line in out.splitlines() if "crossdiff finetune" in line)
    settings = json.loads(cmd.split("--settings '")[1].split("'")[0])
    assert settings["lora"] == {**LORA_DEFAULTS, "r": 32, "alpha": 64} and settings["learning_rate"] == 1e-4
    assert set(settings) == set(DEFAULTS)
