"""Hase et al. 2024's fine-tuning (issue 27): the 8-bit base (finetune.quantization int8), their LoRA recipe as
finetune.preset hase2024 (resolved between the defaults and the config's keys, at every level), the linear decay to
10% (final_lr_ratio), and their multiple-choice loss (finetune.objective multiple_choice) against a direct
computation on a tiny model. bitsandbytes is GPU-only: int8 runs are refused before a model loads where they
cannot run (tested here); its dequantisation is checked on a stand-in parameter."""

import json
import math

import numpy as np
import pytest

from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.finetune import qlora
from crossdiff.finetune.settings import resolve_settings
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan
from crossdiff.prompts.format import PromptFormat

HASE_LORA = {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


def config(**over):
    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60},
                               "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 1}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


LEVELS = {"top": lambda x: {"finetune": x}, "dataset": lambda x: {"datasets": {"d": {"finetune": x}}},
          "model": lambda x: {"models": [{"id": "m", "build": "tiny", "finetune": x}]}}


# ------------------------------------------------------------------ the preset, at every level
@pytest.mark.parametrize("level", list(LEVELS))
def test_preset_hase2024_is_their_recipe_at_every_level(level):
    s = Plan(config(**LEVELS[level]({"preset": "hase2024"}))).finetune("d", "m")
    assert s["lora"] == HASE_LORA and s["learning_rate"] == 1e-4 and s["optim"] == "adamw_torch"
    assert (s["lr_scheduler_type"], s["final_lr_ratio"], s["warmup_ratio"]) == ("linear", 0.1, 0.0)
    assert (s["weight_decay"], s["max_grad_norm"], s["adam_beta2"], s["num_train_epochs"]) == (1e-5, 1.0, 0.999, 3)


@pytest.mark.parametrize("level", list(LEVELS))
def test_the_configs_keys_win_over_the_preset_and_int8_picks_8bit_adam(level):
    over = deep_merge(config(finetune={"preset": "hase2024", "learning_rate": 3e-4, "lora": {"r": 8}}),
                      LEVELS[level]({"quantization": "int8"}))
    s = Plan(validate(over)).finetune("d", "m")
    assert s["learning_rate"] == 3e-4 and s["lora"] == {**HASE_LORA, "r": 8}  # lora merged key by key
    assert s["quantization"] == "int8" and s["optim"] == "adamw_bnb_8bit"  # their Adam8bit with an 8-bit base
    # and through the Python API: the same layers
    api = resolve_settings({"preset": "hase2024", "quantization": "int8", "learning_rate": 3e-4, "lora": {"r": 8}})
    assert {k: api[k] for k in ("learning_rate", "lora", "optim")} == {k: s[k] for k in ("learning_rate", "lora", "optim")}


@pytest.mark.parametrize("level", list(LEVELS))
def test_objective_resolves_at_every_level_and_the_run_carries_it(level):
    plan = Plan(config(**LEVELS[level]({"objective": "multiple_choice"})))
    assert plan.finetune("d", "m")["objective"] == "multiple_choice"
    assert plan.finetune("d", "m", "bin1")["objective"] == "multiple_choice"  # a run's settings (method, design)
    assert Plan(config()).finetune("d", "m")["objective"] == "sft"


def test_unknown_preset_objective_or_quantization_is_refused_naming_the_key():
    with pytest.raises(CrossdiffError, match="preset"):
        config(finetune={"preset": "kordi"})
    with pytest.raises(CrossdiffError, match="objective"):
        config(finetune={"objective": "dpo"})
    with pytest.raises(CrossdiffError, match=r"expected null, 'nf4' or 'int8', got 'int4'"):
        resolve_settings({"quantization": "int4", "lora": {}})
    with pytest.raises(CrossdiffError, match="final_lr_ratio 0.1 shapes the linear schedule"):
        resolve_settings({"final_lr_ratio": 0.1})  # cosine by default
    with pytest.raises(CrossdiffError, match="padding_free"):
        resolve_settings({"objective": "multiple_choice", "padding_free": True, "attn_implementation": "flash_attention_2"})


# ------------------------------------------------------------------ int8: where it cannot run, at parse
@pytest.mark.parametrize("level", list(LEVELS))
def test_int8_is_refused_on_a_cpu_job_and_with_several_processes(level):
    cpu = problems(Plan(validate(deep_merge(config(**LEVELS[level]({"preset": "hase2024", "quantization": "int8"})),
                                            {"resources": {"finetune": {"gpu": 0}}}))))
    assert any("quantization 'int8'" in p and "needs a CUDA GPU" in p for p in cpu), cpu
    cfg = config(**LEVELS[level]({"preset": "hase2024", "quantization": "int8"}))
    cfg["models"][0]["resources"] = {"gpu": 4}
    four = problems(Plan(validate(cfg)))
    assert any("quantization 'int8'" in p and "one process per job" in p for p in four), four
    assert not problems(Plan(config(**LEVELS[level]({"preset": "hase2024", "quantization": "int8"}))))  # one GPU
    with pytest.raises(CrossdiffError, match="set finetune.lora too"):
        resolve_settings({"quantization": "int8"})
    with pytest.raises(CrossdiffError, match="one process per job"):
        resolve_settings({"quantization": "int8", "lora": {}, "num_processes": 2})


def test_int8_without_bitsandbytes_or_a_gpu_stops_before_a_model_loads():
    s = resolve_settings({"quantization": "int8", "preset": "hase2024"})
    with pytest.raises(CrossdiffError, match="quantization 'int8' needs a CUDA GPU"):
        qlora.model_kwargs(s, on_gpu=False)


def test_int8_weights_dequantise_row_wise_as_bitsandbytes():
    import torch

    class Int8Params(torch.nn.Parameter):  # the name bitsandbytes' 8-bit parameters carry
        pass

    cb = torch.tensor([[127, -64, 3], [-127, 0, 50]], dtype=torch.int8)
    scb = torch.tensor([0.5, 2.0])
    p = Int8Params(cb, requires_grad=False)
    p.SCB = scb
    w = qlora._plain(p)
    assert torch.allclose(w, cb.float() * scb.view(-1, 1) / 127)
    q = Int8Params(cb, requires_grad=False)  # the scales on the owning Linear8bitLt's state instead
    holder = type("M", (), {"state": type("S", (), {"SCB": scb})()})()
    assert torch.equal(qlora._plain(q, holder), w)
    from crossdiff.finetune.memory_plan import qlora_state_bytes

    llama7b = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False}
    assert 6.5e9 < qlora_state_bytes(llama7b, 16, "int8") < 9e9 < qlora_state_bytes(llama7b, 16, "int8") * 2


# ------------------------------------------------------------------ their schedule: linear to 10%
def test_final_lr_ratio_is_their_linear_decay_to_ten_percent():
    import torch
    from transformers import get_scheduler

    from crossdiff.finetune.train import schedule_kwargs

    s = resolve_settings({"preset": "hase2024"})
    kw = schedule_kwargs(s)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=s["learning_rate"])
    T = 40
    sched = get_scheduler(kw["lr_scheduler_type"], optimizer=opt, num_warmup_steps=0, num_training_steps=T,
                          scheduler_specific_kwargs=kw["lr_scheduler_kwargs"])
    lrs = []
    for _ in range(T + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    theirs = [1e-4 * max(0.0, (T / 0.9 - k) / (T / 0.9)) for k in range(T + 1)]  # probes.py:398-401
    assert np.allclose(lrs, theirs, rtol=1e-9) and lrs[-1] == pytest.approx(1e-5)


# ------------------------------------------------------------------ their multiple-choice loss
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 50,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}
MC = {"scoring": "multiple_choice"}
ITEMS = [
    {"item_id": "a", "question": "What is 2 + 2?", "choices": ["3", "4", "5"], "answer": "4"},
    {"item_id": "b", "question": "What is 7 - 5?", "choices": ["2", "9"], "answer": "0"},
    {"item_id": "c", "question": "What is 3 + 5?", "choices": ["8", "6", "10", "12"], "answer": "8"},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("mc")
    generate_items(20, seed=3).write_parquet(root / "items.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    return root


def rows(fmt):
    from crossdiff.study.sft_data import option_fields

    return [{**fmt.sft_record(i), **option_fields(fmt, i)} for i in ITEMS]


def direct_mc_loss(model, tok, rows_):
    """Their MC loss: per option the summed log-prob of its tokens after the prompt, softmax over the item's
    options, -log p(gold), mean over items (probes.py:425, 527-531; LM_utils.py:61-63, 85), one unbatched forward
    per (item, option)."""
    import torch

    losses = []
    for r in rows_:
        scores = []
        for opt in r["options"]:
            ctx = tok(r["prompt"])["input_ids"]
            ids = ctx + tok(opt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            scores.append(sum(float(logp[p - 1, ids[p]]) for p in range(len(ctx), len(ids))))
        sc = np.array(scores)
        losses.append(-(sc[r["gold_option"]] - (sc.max() + math.log(np.exp(sc - sc.max()).sum()))))
    return float(np.mean(losses))


def test_mc_loss_equals_a_direct_computation(base, tmp_path):
    import torch

    from crossdiff.finetune.train import build_trainer

    fmt = PromptFormat.from_config(MC)
    rs = rows(fmt)
    assert [r["gold_option"] for r in rs] == [1, 0, 0] and rs[0]["options"] == [" 3", " 4", " 5"]
    s = resolve_settings({"objective": "multiple_choice", "device": "cpu", "max_steps": 1,
                          "per_device_train_batch_size": 8, "save_steps": 100})
    trainer, tok, runtime = build_trainer(base / "base", rs, tmp_path / "w", s, fmt)
    assert runtime["items_per_micro_batch"] == 2  # 8 option sequences / at most 4 options per item
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 + 2 + 4 and batch["mc_n_options"].tolist() == [3, 2, 4]
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert float(loss) == pytest.approx(direct_mc_loss(model, tok, rs), abs=1e-5)


def test_mc_objective_trains_and_saves_through_finetune(base, tmp_path):
    from crossdiff.finetune.run import finetune

    fmt = PromptFormat.from_config(MC)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows(fmt)))
    m = finetune(base / "base", train, tmp_path / "out", settings={
        "objective": "multiple_choice", "preset": "hase2024", "lora": {"target_modules": "all-linear"},
        "device": "cpu", "max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 100}, prompt=MC)
    assert m["objective"] == "multiple_choice" and m["global_step"] == 2 and m["items_per_micro_batch"] == 1
    assert all(math.isfinite(c["loss"]) for c in m["loss_curve"]) and (tmp_path / "out" / "config.json").exists()
    assert m["settings"]["lora"]["dropout"] == 0.1 and m["settings"]["final_lr_ratio"] == 0.1


def test_rows_without_options_are_refused_with_the_reason(base, tmp_path):
    from crossdiff.finetune.run import finetune

    fmt = PromptFormat.from_config({})  # generation: integer candidates; a non-integer answer has none
    r = [{**fmt.sft_record(i), **__import__("crossdiff.study.sft_data", fromlist=["x"]).option_fields(fmt, i)}
         for i in ({"item_id": "x", "question": "Name a colour", "answer": "red"},)]
    assert r[0]["options"] is None and "not an integer" in r[0]["options_error"]
    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps(r[0]) + "\n")
    with pytest.raises(CrossdiffError, match=r"item 'x': finetune.objective multiple_choice needs the item's answer "
                                             r"options: .*not an integer"):
        finetune(base / "base", train, tmp_path / "o", settings={"objective": "multiple_choice", "device": "cpu"})
