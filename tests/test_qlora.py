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
    with pytest.raises(CrossdiffError, match=r"expected null, 'nf4' or 'int8', got 'int4'"):
        resolve_settings({"quantization": "int4", "lora": {}})  # int8: tests/test_hase_finetune.py
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
    """What train.py saves as a QLoRA fine-tune's base/: config.json without quantization_config, so it loads as a
    plain model."""
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


# ------------------------------------------------------------------ issue 26: evaluate what was trained
def _adapter_model(rel: float = 1e-3, seed: int = 0):
    """A tiny Llama whose base weights are bf16 values held in fp32 (what bitsandbytes' dequantised NF4 base is
    to the forward: bf16 numbers), with a LoRA adapter scaled to |dW|/|W| = rel per layer (a small-lr update)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=28,
                                        max_position_embeddings=64))
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, LoraLayer):
                torch.nn.init.normal_(mod.lora_B["default"].weight)
                w = mod.get_base_layer().weight
                mod.lora_B["default"].weight.mul_(rel * w.norm() / mod.get_delta_weight("default").norm())
    return model.eval()


def _tiny_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({chr(97 + i): i for i in range(26)} | {"<unk>": 26, "</s>": 27}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="</s>")


def test_saved_qlora_fine_tune_scores_what_was_trained(tmp_path):
    """The unmerged save (base/ + adapter/), loaded as evaluation loads it, gives the adapter model's logits; a bf16
    merge (the old save) leaves most weights unchanged at |dW|/|W| = 1e-3 and its logits off by about the
    adapter's whole effect."""
    import torch
    from transformers import LlamaForCausalLM

    model = _adapter_model()
    ids = torch.randint(0, 28, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained = model(ids).logits
        with model.disable_adapter():
            base_logits = model(ids).logits
    effect = (trained - base_logits).abs().max().item()
    assert effect > 0
    manifest = qlora.save_for_evaluation(model, _tiny_tokenizer(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()  # nothing loads the folder as a plain (base) model
    base, adapter, m = qlora.eval_paths(tmp_path / "out")
    assert (base, adapter) == (str(tmp_path / "out" / "base"), str(tmp_path / "out" / "adapter")) and m == manifest
    assert "quantization_config" not in json.loads((tmp_path / "out" / "base" / "config.json").read_text())
    # what evaluation scores (fp32 on CPU): the trained model's outputs
    with torch.no_grad():
        evaluated = qlora.load_for_evaluation(tmp_path / "out", torch.float32)(ids).logits
    diff_unmerged = (evaluated - trained).abs().max().item()
    assert diff_unmerged <= 1e-6 * effect  # measured: 0.0
    # on a GPU evaluation loads the base in bf16: exactly the (bf16) weights the adapters were trained against
    bf16 = qlora.load_for_evaluation(tmp_path / "out", torch.bfloat16)
    ref = model.get_base_model()
    q = "model.layers.0.self_attn.q_proj"
    assert torch.equal(bf16.get_base_model().get_submodule(q).base_layer.weight.float(), ref.get_submodule(q).base_layer.weight)
    assert bf16.get_base_model().get_submodule(q).lora_A["default"].weight.dtype == torch.float32  # adapter kept fp32
    # the old save: W + s*B@A rounded to bf16
    assert manifest["share_changed_fp32"] > 0.99 and manifest["share_changed_bf16_merge"] < 0.5
    merged = LlamaForCausalLM(ref.config)
    merged.load_state_dict(qlora.merged_state_dict(model, torch.bfloat16))
    with torch.no_grad():
        diff_merged = (merged.float()(ids).logits - trained).abs().max().item()
    assert diff_merged > 0.2 * effect  # a large part of the adapter's effect lost
    print(f"adapter effect {effect:.3e}; unmerged save: max |diff| {diff_unmerged:.1e}; bf16 merge: {diff_merged:.3e}, "
          f"weights changed {manifest['share_changed_fp32']:.1%} (fp32) vs {manifest['share_changed_bf16_merge']:.1%} (bf16 merge)")


def test_evaluation_loads_base_and_adapter_through_lm_eval(tmp_path):
    """crossdiff.evaluate.run.load_lm on the saved folder: lm-eval's HFLM with the adapter applied by peft (the
    trained logits), the generation config neutralised on the model that generates; float16 refused; vLLM's
    arguments carry the adapter and a rank it accepts."""
    import torch

    from crossdiff.evaluate.backends import vllm_model_args
    from crossdiff.evaluate.run import load_lm, resolve_settings

    model = _adapter_model()
    ids = torch.randint(0, 28, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained = model(ids).logits
    model.get_base_model().generation_config.repetition_penalty = 1.3
    qlora.save_for_evaluation(model, _tiny_tokenizer(tmp_path), tmp_path / "out")
    lm = load_lm(tmp_path / "out", resolve_settings({"device": "cpu", "batch_size": 1}))
    with torch.no_grad():
        assert (lm.model(ids).logits - trained).abs().max().item() <= 1e-6
    assert lm.model.get_base_model().generation_config.repetition_penalty in (None, 1.0)
    with pytest.raises(CrossdiffError, match="would round them"):
        load_lm(tmp_path / "out", resolve_settings({"device": "cpu", "dtype": "float16"}))
    s = resolve_settings({"backend": "vllm"})
    args = vllm_model_args(tmp_path / "out" / "base", s, 1, adapter=tmp_path / "out" / "adapter", lora_rank=12)
    assert args["lora_local_path"] == str(tmp_path / "out" / "adapter") and args["max_lora_rank"] == 16
    assert "lora_local_path" not in vllm_model_args("m", s, 1)
    with pytest.raises(CrossdiffError, match="above vLLM's largest max_lora_rank"):
        qlora.vllm_lora_rank(1024)


def test_qlora_fine_tune_saves_unmerged_and_evaluation_scores_it(tmp_path, monkeypatch):
    """The training job's QLoRA save (train.py) and the evaluation that reads it, on CPU: bitsandbytes is replaced by
    a plain fp32 base (qlora.model_kwargs -> {}), everything else is the product's path (finetune -> train_and_save
    -> save_for_evaluation; evaluate_model -> load_lm with the adapter)."""
    import polars as pl

    import crossdiff.evaluate.run as E
    from crossdiff.finetune.run import finetune
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model
    from crossdiff.study.sft_data import make_sft_data

    monkeypatch.setattr(qlora, "model_kwargs", lambda s, on_gpu: {})  # the 4-bit load, simulated by the fp32 base
    items = generate_items(30, seed=5)
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": 0.0, "bin": 0}).write_parquet(tmp_path / "bins.parquet")
    build_base_model(tmp_path / "base", tmp_path / "items.parquet",
                     {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                      "warmup_problems": 50, "warmup_steps": 2, "batch_size": 16, "eval_items": 0})
    make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "sft.jsonl")
    metrics = finetune(tmp_path / "base", tmp_path / "sft.jsonl", tmp_path / "ft",
                       settings={"quantization": "nf4", "lora": {"r": 4, "alpha": 8}, "max_steps": 2,
                                 "learning_rate": 1e-3, "per_device_train_batch_size": 8, "device": "cpu"})
    out = tmp_path / "ft"
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base", "qlora.json", "train_metrics.json"]
    assert metrics["share_changed"] > 0.99 and metrics["share_changed_bf16_merge"] is not None
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    E.make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "task", "arith")
    [record] = E.evaluate_model(out, [tmp_path / "task"], [tmp_path / "eval.json"], {"batch_size": 8, "device": "cpu"})
    assert record["n_items"] == 30
