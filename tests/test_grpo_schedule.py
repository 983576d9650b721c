"""E2H Reasoner's scheduled task sampler for GRPO (crossdiff.study.schedules, crossdiff.finetune.grpo_schedule).

The schedules equal a direct transcription of E2H's definitions (divelab/E2H-Reasoning src/trainer.py:43-85); the
sampler draws exactly the indices E2H's TaskSampler draws (:24-37, :90-116) for the same seed and levels; the
settings reach a GRPO run only through a train set and are refused elsewhere; a scheduled run on the tiny model
draws its levels as the schedule says and reports them."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402
from crossdiff.finetune import grpo_schedule as gs  # noqa: E402
from crossdiff.study import schedules  # noqa: E402


# ------------------------------------------------------------ E2H's definitions, transcribed for the comparison
def e2h_probs(name, t, T, K, mu_exp=0.5, sigma=0.5, min_prob=True):
    if name == "classic":
        return [1.0 if i == min(int(t * K / T), K - 1) else 0.0 for i in range(K)]
    if name == "balanced":
        return [1.0 / K] * K
    if name == "cosine":
        total = K * (K + 1) / 2.0
        alpha = 0.5 * (1 + math.cos(math.pi * t / T))
        probs = [max(alpha * (K - i) / total + (1 - alpha) * (i + 1) / total, 2 / (K * (K + 1))) for i in range(K)]
        return [p / sum(probs) for p in probs]
    mu = (t / T) ** mu_exp * (K - 1)
    p_min = 2 / (K * (K + 1)) if min_prob is True else min_prob
    base = [math.exp(-((i - mu) ** 2) / (2 * sigma ** 2)) for i in range(K)]
    return [p_min + (1 - K * p_min) * b / sum(base) for b in base]


def e2h_indices(levels, name, args, batch_size, G, repeat, seed, total):
    """E2H's TaskSampler.__init__ + __iter__, step by step."""
    rng = np.random.default_rng(int(seed))
    col = np.asarray(levels)
    K = len(set(levels))
    by_task = {t: rng.permutation(np.where(col == t)[0]) for t in range(K)}
    ptrs = {t: 0 for t in range(K)}
    out = []
    for i in range(total):
        probs = np.array(e2h_probs(name, i, total, K, **args))
        chosen = rng.choice(np.arange(K), size=batch_size, p=probs, replace=True)
        batch = []
        for t in chosen:
            bucket = by_task[int(t)]
            batch.append(int(bucket[ptrs[int(t)] % len(bucket)]))
            ptrs[int(t)] += 1
        for _ in range(repeat):
            for index in batch:
                out.extend([index] * G)
    return out


@pytest.mark.parametrize("name", schedules.SCHEDULES)
@pytest.mark.parametrize("K", [2, 3, 5])
def test_schedules_equal_e2h_definitions(name, K):
    T = 17
    for args in ({}, {"mu_exp": 1.5, "sigma": 0.8, "min_prob": 0.05}):
        if args.get("min_prob", 0) * K > 1:
            continue
        for t in range(T):
            p = schedules.probabilities(name, t, T, K, args)
            np.testing.assert_allclose(p, e2h_probs(name, t, T, K, **{**schedules.ARG_DEFAULTS, **args}), rtol=1e-12, atol=1e-15)
            assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
    # the schedules move from easy to hard: the mean level rises over the run
    means = [schedules.probabilities(name, t, T, K) @ np.arange(K) for t in range(T)]
    if name == "balanced":
        assert max(means) - min(means) < 1e-12
    else:
        assert means[-1] > means[0] and all(b >= a - 1e-12 for a, b in zip(means, means[1:]))


@pytest.mark.parametrize("name, args", [("cosine", {}), ("gaussian", {"mu_exp": 0.5, "sigma": 0.5, "min_prob": True}),
                                        ("classic", {}), ("balanced", {})])
def test_sampler_draws_exactly_e2h_taskSampler_indices(name, args):
    levels = [0] * 5 + [1] * 7 + [2] * 3 + [0, 2, 1, 1]
    kw = dict(batch_size=6, mini_repeat_count=4, repeat_count=2, seed=42, total=11)
    sampler = gs.make_sampler(levels, name=name, args={**schedules.ARG_DEFAULTS, **args}, **kw)
    got = list(iter(sampler))
    assert len(got) == len(sampler) == 11 * 6 * 4 * 2
    assert got == e2h_indices(levels, name, {**schedules.ARG_DEFAULTS, **args}, 6, 4, 2, 42, 11)
    # each prompt's G completions in a row, each round repeated: TRL's RepeatSampler layout
    first_round = got[:6 * 4 * 2]
    assert first_round[:24] == first_round[24:] and all(len(set(first_round[i:i + 4])) == 1 for i in range(0, 24, 4))
    # the classic schedule trains one level at a time, easiest first
    if name == "classic":
        assert [sorted(set(r)) for r in sampler.last_levels] == [[min(int(t * 3 / 11), 2)] for t in range(11)]


def test_sampler_frequencies_follow_the_schedule():
    levels = list(np.repeat(np.arange(4), 50))
    s = gs.make_sampler(levels, name="cosine", args=dict(schedules.ARG_DEFAULTS), batch_size=4000, mini_repeat_count=1,
                        repeat_count=1, seed=0, total=5)
    list(iter(s))
    for t, drawn in enumerate(s.last_levels):
        freq = np.bincount(drawn, minlength=4) / len(drawn)
        np.testing.assert_allclose(freq, schedules.probabilities("cosine", t, 5, 4), atol=0.03)


def test_rounds_and_steps_follow_trl_generation_rounds():
    assert gs.total_rounds(30, accumulation=4, steps_per_generation=4, num_iterations=1) == 30  # TRL's default
    assert gs.total_rounds(30, accumulation=4, steps_per_generation=2, num_iterations=1) == 60
    assert gs.total_rounds(30, accumulation=1, steps_per_generation=1, num_iterations=2) == 15
    s = {"max_steps": -1, "num_train_epochs": 3}
    assert gs.scheduled_max_steps(s, n_items=40, prompts_per_step=8) == 15  # 3 x 40 prompts, 8 per step
    assert gs.scheduled_max_steps({**s, "max_steps": 7}, n_items=40, prompts_per_step=8) == 7


@pytest.mark.parametrize("args, pattern", [
    ({"min_prob": False}, r"min_prob: expected true .*E2H's code refuses false"),
    ({"min_prob": 0.5}, r"min_prob: 0.5 with 3 levels: K x min_prob must not exceed 1"),
    ({"sigma": 0}, r"sigma: expected a number > 0"),
    ({"beta": 1.0}, r"unknown key\(s\) \['beta'\]"),
])
def test_schedule_arguments_are_checked(args, pattern):
    with pytest.raises(CrossdiffError, match=pattern):
        schedules.check_args("gaussian", args, 3, "study.train_sets.e2h")


# --------------------------------------------------------------------------- the design and the settings
def _plan(study, **over):
    from crossdiff.config import deep_merge, validate
    from crossdiff.plan.settings import Plan

    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3}, "study": study,
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return Plan(validate(deep_merge(base, over)))


def test_a_scheduled_set_reaches_its_grpo_runs_only():
    plan = _plan({"methods": ["grpo"], "train_sets": {"e2h": {"bins": "all", "schedule": "gaussian",
                                                              "schedule_args": {"sigma": 0.8}},
                                                      "pool": {"bins": [0, 2]}}})
    run = plan.grpo("d", "m", "grpo-set-e2h")
    assert run["schedule"] == "gaussian" and run["schedule_args"] == {"mu_exp": 0.5, "sigma": 0.8, "min_prob": True}
    assert run["shuffle"] is True
    assert plan.grpo("d", "m", "grpo-set-pool")["schedule"] is None and plan.grpo("d", "m", "grpo-bin1")["schedule"] is None
    from crossdiff.plan.checks import problems

    assert problems(plan) == []


@pytest.mark.parametrize("study, over, pattern", [
    ({"methods": ["sft", "grpo"], "train_sets": {"e2h": {"bins": "all", "schedule": "cosine"}}}, {},
     r"study\.train_sets\.e2h\.schedule 'cosine' is E2H Reasoner's GRPO sampler; study\.methods \['sft'\]"),
    ({"methods": ["grpo"], "train_sets": {"e2h": {"bins": "all", "schedule": "cosine", "order": "easy_to_hard"}}}, {},
     r"order 'easy_to_hard' and schedule 'cosine'"),
    ({"methods": ["grpo"], "train_sets": {"e2h": {"bins": [1], "schedule": "classic"}}}, {},
     r"this set has 1 bin"),
    ({"methods": ["grpo"], "train_sets": {"e2h": {"bins": "all", "schedule": "gaussian",
                                                  "schedule_args": {"min_prob": 0.4}}}}, {},
     r"min_prob: 0.4 with 3 levels"),
    ({"methods": ["grpo"]}, {"grpo": {"schedule": "cosine"}}, r"unknown key\(s\) grpo\.schedule"),
    ({"methods": ["grpo"], "train_sets": {"e2h": {"bins": "all", "schedule": "linear"}}}, {}, r"schedule"),
])
def test_misplaced_schedules_stop_at_parse_naming_the_key(study, over, pattern):
    import re

    from crossdiff.plan.checks import problems

    try:
        found = problems(_plan(study, **over))
    except CrossdiffError as exc:
        found = [str(exc)]
    assert any(re.search(pattern, p) for p in found), found


# ------------------------------------------------------------------------------ a scheduled run, end to end
def test_a_scheduled_grpo_run_draws_its_levels_as_the_schedule_says(tmp_path):
    import polars as pl

    from crossdiff.finetune.grpo import grpo
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    items = generate_items(90, seed=1, max_ops=3, max_digits=1, operators=["+"])
    items.write_parquet(tmp_path / "items.parquet")
    build_base_model(tmp_path / "base", tmp_path / "items.parquet",
                     {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 200,
                      "warmup_steps": 5, "max_ops": 3, "max_digits": 1, "operators": ["+"], "eval_items": 0})
    rows = []
    for b, n_ops in enumerate((1, 2, 3)):  # three bins by operation count, 6 items each
        for i in items.filter(pl.col("n_ops") == n_ops)["item_id"].to_list()[:6]:
            rows.append({"item_id": i, "prompt": "-", "completion": "-", "bin": 2 * b})  # bins 0, 2, 4: levels 0-2
    train = tmp_path / "set-e2h.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["item_id"])))
    m = grpo(tmp_path / "base", train, tmp_path / "items.parquet", tmp_path / "out",
             settings={"num_generations": 2, "per_device_train_batch_size": 8, "max_steps": -1, "num_train_epochs": 1,
                       "max_completion_length": 4, "schedule": "classic", "schedule_args": {}},
             finetune={"device": "cpu", "seed": 5}, prompt={})
    # 18 prompts, 4 per step: ceil(18 / 4) = 5 steps, one generation round each (TRL's defaults)
    assert m["global_step"] == 5 and m["schedule"]["rounds"] == 5 and m["schedule"]["max_steps"] == 5
    assert m["schedule"]["prompts_per_level"] == [6, 6, 6] and m["schedule"]["name"] == "classic"
    level = {r["item_id"]: r["bin"] // 2 for r in rows}
    groups = [json.loads(x) for x in (tmp_path / "out" / "reward_groups.jsonl").read_text().splitlines()]
    by_step = {}
    for g in groups:
        by_step.setdefault(g["step"], set()).add(level[g["item_id"]])
    assert by_step == {st: {min(int((st - 1) * 3 / 5), 2)} for st in range(1, 6)}  # one level per round, easy first
    assert [c["mean_level"] for c in m["level_curve"]] == [0, 0, 1, 1, 2]
    assert m["level_start"] == 0 and m["level_end"] == 2  # one step at each end of 5 (as reward_start / reward_end)
    assert [c["counts"] for c in m["level_curve"]][2] == [0, 4, 0]
    from crossdiff.results.grpo_diagnostics import read_metrics, table

    row = table([read_metrics(tmp_path / "out")]).row(0, named=True)
    assert (row["schedule"], row["level_start"], row["level_end"]) == ("classic", 0, 2)
    assert m["settings"]["schedule"] == "classic"
