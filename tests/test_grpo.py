"""GRPO on the tiny model (crossdiff.finetune.grpo) and the pass-rate difficulty (crossdiff.evaluate.pass_rate).

A GRPO run raises the mean reward on its bin over its steps and changes the weights; the learnable share equals
a hand count of the recorded groups (and TRL's 1 - frac_reward_zero_std); a curriculum samples its prompts in file
order; the pass rates of one model load equal a direct sampling with the same seeds."""

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl
import pytest

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 1500,
         "warmup_steps": 150, "max_ops": 3, "max_digits": 1, "operators": ["+"], "eval_items": 0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("grpo")
    items = generate_items(120, seed=1, max_ops=3, max_digits=1, operators=["+"])
    items.write_parquet(root / "items.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    return {"root": root, "items": items, "base": root / "base"}


def _train_file(path, item_ids):
    path.write_text("".join(json.dumps({"item_id": i, "prompt": "-", "completion": "-"}) + "\n" for i in item_ids))
    return path


def _weights(d):
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(env):
    """One GRPO run: 8 prompts of the easiest bin (2-term sums), 8 completions each, 30 steps."""
    from crossdiff.finetune.grpo import grpo

    ids = env["items"].filter(pl.col("n_ops") == 1)["item_id"].to_list()[:8]
    train = _train_file(env["root"] / "bin0.jsonl", ids)
    out = env["root"] / "grpo-bin0"
    metrics = grpo(env["base"], train, env["root"] / "items.parquet", out,
                   settings={"num_generations": 8, "per_device_train_batch_size": 64, "max_steps": 30,
                             "learning_rate": 5e-4, "temperature": 1.0, "save_steps": 10},
                   finetune={"device": "cpu", "seed": 3}, prompt={})
    return {"metrics": metrics, "out": out, "ids": ids}


def test_grpo_raises_the_reward_on_its_bin_and_changes_the_weights(env, trained):
    import torch

    m = trained["metrics"]
    curve = [c["reward"] for c in m["reward_curve"]]
    assert [c["step"] for c in m["reward_curve"]] == list(range(1, 31))  # one value per logged step
    first, last = sum(curve[:10]) / 10, sum(curve[-10:]) / 10
    assert first > 0  # the tiny model gets some reward from the start: sampling has something to reinforce
    assert last > first + 0.04, (first, last, curve)
    base, new = _weights(env["base"]), _weights(trained["out"])
    assert m["share_changed"] > 0.5
    assert any(not torch.equal(base[k], new[k]) for k in base)
    assert m["method"] == "grpo" and m["generation"] == "transformers" and m["global_step"] == 30
    assert m["kl"] is None and m["kl_curve"] == []  # beta 0: no reference model, no KL
    assert m["completion_length"] > 0 and not (trained["out"].with_name("grpo-bin0.work")).exists()


def test_learnable_share_equals_a_hand_count_of_the_recorded_groups(trained):
    groups = [json.loads(line) for line in (trained["out"] / "reward_groups.jsonl").read_text().splitlines()]
    assert len(groups) == 30 * 8 and all(len(g["rewards"]) == 8 for g in groups)
    by_hand = sum(1 for g in groups if len(set(g["rewards"])) > 1) / len(groups)
    m = trained["metrics"]
    assert m["learnable_share"] == pytest.approx(by_hand) and m["n_groups"] == 240
    # TRL's own count (1 - frac_reward_zero_std per step, scale_rewards group) agrees
    assert m["learnable_share_trl"] == pytest.approx(by_hand)
    # the logged mean reward of a step is the mean of its groups' rewards
    step1 = [r for g in groups if g["step"] == 1 for r in g["rewards"]]
    assert m["reward_curve"][0]["reward"] == pytest.approx(sum(step1) / len(step1))
    assert {g["item_id"] for g in groups} == set(trained["ids"])


def test_a_curriculum_samples_its_prompts_in_file_order(env):
    from crossdiff.finetune.grpo import grpo

    ids = env["items"].sort("n_ops", descending=True)["item_id"].to_list()[:12]  # hard to easy, say
    out = env["root"] / "grpo-set-hard_to_easy"
    m = grpo(env["base"], _train_file(env["root"] / "set.jsonl", ids), env["root"] / "items.parquet", out,
             settings={"num_generations": 4, "per_device_train_batch_size": 16, "max_steps": 3},
             finetune={"device": "cpu", "shuffle": False}, prompt={})
    groups = [json.loads(line) for line in (out / "reward_groups.jsonl").read_text().splitlines()]
    assert [g["item_id"] for g in groups] == ids  # 3 steps x 4 prompts, in the file's order
    assert m["settings"]["shuffle"] is False


def test_pass_rates_equal_a_direct_sampling_with_the_same_seed(env, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import crossdiff.evaluate.pass_rate as pr
    from crossdiff.prompts.reward import Scorer

    items = env["items"][:12]
    irt = pl.DataFrame({"item_id": items["item_id"], "difficulty": [float(i) for i in range(12)]})
    irt.write_parquet(tmp_path / "irt.parquet")
    s = {"k": 6, "temperature": 1.0, "top_p": 1.0, "seed": 5, "max_new_tokens": 6, "backend": "hf"}
    before = pr.MODEL_LOADS
    table = pr.pass_rates(env["root"] / "items.parquet", tmp_path / "irt.parquet", env["base"],
                          tmp_path / "pass_rate_measure.parquet", {}, s, {"device": "cpu"}, "tiny")
    assert pr.MODEL_LOADS == before + 1  # one model load for every item
    assert (table["measure"] == 1 - table["pass_rate"]).all() and (table["k"] == 6).all()
    assert 0 < table["pass_rate"].mean() < 1
    # direct: the same prompt, seeded with the item's seed, k samples drawn by transformers' generate
    tok = AutoTokenizer.from_pretrained(str(env["base"]))
    model = AutoModelForCausalLM.from_pretrained(str(env["base"]), dtype=torch.float32).eval()
    scorer = Scorer({}, "arith")
    direct = {}
    for rec in scorer.records(items.to_dicts(), tok):
        torch.manual_seed(pr.item_seed(5, rec["item_id"]))
        ids = torch.tensor([tok(rec["prompt"])["input_ids"]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, max_new_tokens=6, num_return_sequences=6,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        direct[rec["item_id"]] = sum(scorer.score(rec, t)["correct"] for t in texts) / 6
    assert dict(zip(table["item_id"], table["pass_rate"])) == direct
    # an item's samples do not depend on the other items: half the items, the same pass rates
    irt[:6].write_parquet(tmp_path / "half.parquet")
    half = pr.pass_rates(env["root"] / "items.parquet", tmp_path / "half.parquet", env["base"], tmp_path / "h.parquet",
                         {}, s, {"device": "cpu"}, "tiny")
    assert dict(zip(half["item_id"], half["pass_rate"])) == {k: direct[k] for k in half["item_id"]}
    samples = [json.loads(x) for x in (tmp_path / "pass_rate_measure.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 * 6


def test_bins_by_pass_rate_break_ties_by_irt_difficulty(tmp_path):
    from crossdiff.cli import main

    ids = [f"q{i}" for i in range(9)]
    pl.DataFrame({"item_id": ids, "difficulty": [float(-i) for i in range(9)]}).write_parquet(tmp_path / "irt.parquet")
    pl.DataFrame({"item_id": ids, "pass_rate": [0.5] * 9, "measure": [0.5] * 9}).write_parquet(tmp_path / "pr.parquet")
    assert main(["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "3", "--by", "pass_rate:tiny",
                 "--measure-table", str(tmp_path / "pr.parquet"), "--output", str(tmp_path / "bins.parquet"),
                 "--summary", str(tmp_path / "s.csv")]) == 0
    bins = pl.read_parquet(tmp_path / "bins.parquet").sort("item_id")
    # all tied at pass rate 0.5: the IRT order decides (q8 easiest, q0 hardest)
    assert dict(zip(bins["item_id"], bins["bin"])) == {f"q{i}": 2 - i // 3 for i in range(9)}
