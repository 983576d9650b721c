"""study.protocol (workflow/schemas/protocols.yaml, crossdiff.config.apply_protocol): a named study's design as a
layer under the config's own keys; hase2024 = Hase et al. 2024's three levels, shared-demonstration ICL with k per
dataset (theirs: run_jobs.py:192-201, README.md:58-70), probes, their LoRA preset and SGR; every part still set
one by one."""

from __future__ import annotations

import pytest

from crossdiff.config import apply_protocol, deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.plan.settings import Plan

BASE = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}},
        "models": [{"id": "m", "build": "tiny"}], "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}


def _plan(**over):
    return Plan(validate(deep_merge(BASE, over)))


def test_hase2024_by_name_gives_their_design():
    p = _plan(study={"protocol": "hase2024"})
    c = p.config
    assert (c["bins"]["scheme"], c["bins"]["edges"], p.n_bins) == ("quantiles", [0.3, 0.7], 3)
    assert c["study"]["methods"] == ["sft", "icl", "probe"] and c["finetune"]["preset"] == "hase2024"
    assert {k: p.icl("d")[k] for k in ("protocol", "k", "n_bootstrap", "prompt_id", "seed")} == {
        "protocol": "shared", "k": 10, "n_bootstrap": 5, "prompt_id": "0040", "seed": 0}
    assert (p.sgr()["easy"], p.sgr()["hard"]) == (0, 2)
    assert validate(c) == c  # applying it again changes nothing


def test_the_config_wins_and_parts_stay_separate():
    p = _plan(study={"protocol": "hase2024", "methods": ["icl"], "icl": {"k": 4}}, finetune={"preset": None},
              summary={"sgr": {"n_boot": 500}})
    assert p.config["study"]["methods"] == ["icl"] and p.icl("d")["k"] == 4 and p.icl("d")["protocol"] == "shared"
    assert p.config["finetune"]["preset"] is None and p.sgr()["n_boot"] == 500 and p.sgr()["hard"] == 2
    # a scheme of the config's own: none of the protocol's bins
    q = _plan(study={"protocol": "hase2024"}, bins={"scheme": "equal", "n_bins": 4})
    assert (q.config["bins"]["edges"], q.n_bins) == (None, 4)
    # without the protocol, each part by itself (the defaults stay crossdiff's)
    r = _plan(study={"methods": ["sft", "icl"], "icl": {"protocol": "shared", "k": 2}})
    assert r.icl("d")["protocol"] == "shared" and r.config["bins"]["scheme"] == "equal" and r.sgr() is None


def test_k_and_prompt_per_dataset_by_adapter():
    cfg = {"study": {"protocol": "hase2024"},
           "datasets": {"sqa": {"items": {"source": "hub", "adapter": "strategyqa"}},
                        "g": {"items": {"source": "hub", "adapter": "gsm8k"}, "icl": {"k": 4}},
                        "arc": {"items": {"source": "hub", "adapter": "arc_hase"}}}}
    out = apply_protocol(cfg)
    assert out["datasets"]["sqa"]["icl"] == {"k": 8, "prompt_id": "0306"}
    assert out["datasets"]["g"]["icl"] == {"k": 4, "prompt_id": "0305", "cot": True, "reasoning_field": "solution"}
    assert "icl" not in out["datasets"]["arc"] and out["study"]["icl"]["k"] == 10
    assert "icl" not in cfg["datasets"]["sqa"]  # the input is not modified


def test_an_unknown_protocol_is_named():
    with pytest.raises(CrossdiffError, match=r"study.protocol"):
        validate(deep_merge(BASE, {"study": {"protocol": "kordi"}}))
