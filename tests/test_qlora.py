"""QLoRA (finetune.quantization: nf4): settings, the memory plan's verdicts for 70B, the launch path and the
bf16 merge. bitsandbytes is a GPU-only optional dependency: where it cannot run, the run is refused with the
reason before a model loads (tested here); the real 4-bit step runs in benchmarks/qlora_step.py on a GPU."""

import json

import pytest

from crossdiff.cli import main
from crossdiff.errors import CrossdiffError
from crossdiff.finetune import qlora
from crossdiff.finetune.memory_plan import fit_message, lora_param_count, param_count, plan, settings_plan
from crossdiff.finetune.settings import resolve_settings

# meta-llama/Llama-3.1-70B-Instruct config.json (the fields the plan reads); 70.6B parameters published
LLAMA_70B = {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 28672, "vocab_size": 128256,
             "tie_word_embeddings": False, "attention_bias": False}


def test_settings_validation():
    assert resolve_settings({})["quantization"] is None
    s = resolve_settings({"quantization": "nf4", "lora": {"r": 16}})
    assert s["quantization"] == "nf4" and s["lora"]["r"] == 16
    with pytest.raises(CrossdiffError, match="set finetune.lora too"):
        resolve_settings({"quantization": "nf4"})
    with pytest.raises(CrossdiffError, match=r"expected null or 'nf4', got 'int8'"):
        resolve_settings({"quantization": "int8", "lora": {}})
    with pytest.raises(CrossdiffError, match="one process per job"):
        resolve_settings({"quantization": "nf4", "lora": {}, "num_processes": 2})


def test_schema_accepts_nf4_and_refuses_other_values():
    from crossdiff.config import validate
    import yaml
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["finetune"] = {**cfg.get("finetune", {}), "quantization": "nf4", "lora": {"r": 8}}
    assert validate(cfg)["finetune"]["quantization"] == "nf4"
    cfg["finetune"]["quantization"] = "nf3"
    with pytest.raises(CrossdiffError, match="quantization"):
        validate(cfg)


def test_memory_plan_70b_qlora_fits_one_80gb_gpu_and_full_finetune_does_not():
    assert param_count(LLAMA_70B) == pytest.approx(70.6e9, rel=0.01)
    # r=16 on all seven linears of 80 layers: 80 * 16 * (2*(8192+8192) + 2*(8192+1024) + 3*(8192+28672))
    assert lora_param_count(LLAMA_70B, 16) == 80 * 16 * (2 * 16384 + 2 * 9216 + 3 * 36864)
    s = resolve_settings({"quantization": "nf4", "lora": {"r": 16}, "per_device_train_batch_size": 1,
                          "max_length": 2048})
    q = settings_plan(LLAMA_70B, s, 1)
    # the NF4 base is ~0.52 B per decoder weight: 35-45 GB of state with bf16 embeddings and the adapters' AdamW
    assert 35 < q["weights_grads_optimizer_gb"] < 45
    assert fit_message("meta-llama/Llama-3.1-70B-Instruct", q, 1, 80) is None
    full = plan(LLAMA_70B, gpus=1, batch=1, seq=2048)
    assert full["weights_grads_optimizer_gb"] > 1000  # 16 B/parameter
    msg = fit_message("meta-llama/Llama-3.1-70B-Instruct", full, 1, 80)
    assert msg and "80 GB" in msg and "1 GPU(s)" in msg
    # LoRA on a bf16 base does not fit either (141 GB of weights): quantisation is what makes it fit
    assert fit_message("70b-lora", settings_plan(LLAMA_70B, resolve_settings({**s, "quantization": None}), 1), 1, 80)


def test_from_pretrained_arguments_or_a_refusal_with_the_reason():
    s = resolve_settings({"quantization": "nf4", "lora": {}})
    assert qlora.model_kwargs(resolve_settings({}), on_gpu=False) == {}
    with pytest.raises(CrossdiffError, match="needs a CUDA GPU"):
        qlora.model_kwargs(s, on_gpu=False)
    why = qlora.bitsandbytes_missing()
    if why is None:
        kw = qlora.model_kwargs(s, on_gpu=True)
        q = kw["quantization_config"]
        assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
        pytest.skip("bitsandbytes and a GPU are present: the refusal cannot be exercised (arguments checked)")
    with pytest.raises(CrossdiffError, match="quantization 'nf4': " + why.split(" (")[0]):
        qlora.model_kwargs(s, on_gpu=True)


def test_finetune_command_refuses_nf4_on_cpu_before_loading(tmp_path, capsys):
    """The launch path (crossdiff finetune -> train_and_save -> build_trainer) on CPU: exit 2, the reason,
    nothing written."""
    import crossdiff.finetune.launch as launch

    train = tmp_path / "bin0.jsonl"
    train.write_text(json.dumps({"item_id": "a", "prompt": "1+1=", "completion": " 2", "system": "",
                                 "user": "1+1=", "assistant": "2"}) + "\n")
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=20)).save_pretrained(tmp_path / "base")
    settings = {"quantization": "nf4", "lora": {"r": 4}, "device": "cpu", "max_steps": 1}
    rc = main(["finetune", "--model", str(tmp_path / "base"), "--train", str(train),
               "--output", str(tmp_path / "out"), "--settings", json.dumps(settings)])
    assert rc == 2 and not (tmp_path / "out").exists()
    assert "quantization 'nf4' needs a CUDA GPU" in capsys.readouterr().err
    # the multi-process launch carries the setting to every rank unchanged
    cmd = launch.launch_command(2, "m", train, tmp_path / "out", tmp_path / "w", resolve_settings(settings), {}, 1234)
    assert json.loads(cmd[cmd.index("--settings") + 1])["quantization"] == "nf4"


def test_build_trainer_refuses_nf4_on_cpu(tmp_path, capsys):
    from crossdiff.finetune.train import build_trainer
    from crossdiff.prompts.format import PromptFormat

    s = resolve_settings({"quantization": "nf4", "lora": {"r": 4}, "device": "cpu"})
    with pytest.raises(CrossdiffError, match="needs a CUDA GPU"):
        build_trainer(tmp_path / "no-model", [], tmp_path / "w", s, PromptFormat.from_config({}))


def test_merge_equals_peft_merge_without_quantization():
    """The layer-by-layer merge (used after QLoRA) gives peft's merge_and_unload weights on a plain model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # B starts at 0: make the adapters do something
    merged = qlora.merged_state_dict(model, dtype=torch.float32)
    ref = model.merge_and_unload().state_dict()
    assert set(merged) == set(ref)
    for k in ref:
        assert torch.allclose(merged[k], ref[k], atol=1e-6), k
    assert not torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(merged["model.norm.weight"], before["model.norm.weight"])
    assert not any("lora" in k or "base_layer" in k for k in merged)


def test_plain_base_drops_the_quantization_config(tmp_path):
    """What train.py saves after QLoRA: config.json without quantization_config, so it loads as a plain model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    base = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, vocab_size=20))
    base.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    plain = qlora.plain_base(model)
    plain.save_pretrained(tmp_path / "m", state_dict=qlora.merged_state_dict(model))
    assert "quantization_config" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert not hasattr(AutoConfig.from_pretrained(tmp_path / "m"), "quantization_config")
