"""QLoRA (``finetune.quantization: nf4`` with ``finetune.lora``): a 4-bit base, LoRA adapters trained on it; and
``quantization: int8``: an 8-bit bitsandbytes LLM.int8 base (Hase et al. 2024's Llama-2 runs, their run_jobs.py:136-148
``load_in_8bit``), the same way (one process, a CUDA GPU, saved unmerged; notes at :data:`INT8_NOTE`).

Training: the base model is loaded by transformers with bitsandbytes NF4 weights, double quantisation
(the block constants quantised again) and bf16 compute (``BitsAndBytesConfig``); SFTTrainer sees a
4-bit model and trains the LoRA adapters (fp32) on it. One process per job: it needs a CUDA GPU and
``bitsandbytes`` (pinned in ``envs/requirements-gpu.txt``); anything else is refused before the model
loads, with the reason (:func:`check_available`).

Saving: evaluation must score what was trained, i.e. ``y = W_nf4 x + s * B A x`` (the dequantised 4-bit
base, whose forward bitsandbytes computes from bf16 weights, plus the adapters' own path). So the fine-tune
is saved **unmerged** (:func:`save_for_evaluation`), in a folder that cannot be mistaken for a plain model:

* ``base/``: the dequantised NF4 base as a plain checkpoint (no ``quantization_config``) in bf16, which is
  exact: bitsandbytes dequantises to the bf16 the base was loaded in, and the layers it leaves unquantised
  (embeddings, norms, lm_head) are bf16 already; plus the tokenizer;
* ``adapter/``: the peft LoRA adapter (``adapter_config.json``, weights in fp32);
* ``qlora.json``: names both (:func:`eval_paths` reads it) with the merge diagnostics below.

Evaluation (``crossdiff.evaluate.run.load_lm``) loads ``base/`` and applies the adapter: on the hf backend
through peft (lm-eval's ``HFLM(peft=...)``: the adapter stays in fp32 and its output is added to the base
layer's; lm-eval then resizes the embeddings to the tokenizer's length when the config's vocabulary is padded
beyond it, e.g. Qwen2.5, which only drops rows no token id reaches), on vLLM through its LoRA support (``lora_local_path``, ``enable_lora``, ``max_lora_rank`` >= r;
vLLM computes the adapter in the model's dtype, rounding A and B each to bf16, i.e. a relative error of
~2^-8 on the update itself, not on the weight). No merge: merging ``W + s*B@A`` into one weight and
rounding the sum to bf16 drops every update smaller than half a bf16 step of W: at the 5e-6 learning rate
of a full fine-tune, ``|dW|/|W|`` ~ 1e-3, which left 77.6% of the weights unchanged in a CPU simulation
(1024 x 1024, r 16; peft issues 1080, 2105, 2321), so the evaluated model would mostly be the base model.
An fp32 merge saved and evaluated in fp32 would keep the update too, but at 4 bytes/parameter on disk and on
the evaluation GPU (a 70B model: 280 GB, where the point of QLoRA is one 80 GB GPU).
tests/test_qlora.py measures it on a tiny Llama whose base weights (bf16 values in fp32 tensors) stand in for
the dequantised NF4 ones, adapters at |dW|/|W| = 1e-3: the folder loaded as evaluation loads it gives the
in-memory adapter model's logits (max |difference| 0.0 in fp32, against an adapter effect of 7.4e-4), where
the bf16 merge kept the update in 22.1% of the adapted weights (fp32: 100%) and its logits were off by 4.5e-4,
60% of the adapter's effect.

Cost: ``base/`` is 2 bytes per parameter (a 70B model: ~141 GB, as a full fine-tune's bf16 save) plus the
adapter (a few hundred MB); dequantising takes one layer at a time (no full-size copy on the GPU).
``qlora.json`` records ``share_changed_fp32`` (weights of the adapted layers that ``W + s*B@A`` changes) and
``share_changed_bf16_merge`` (what a bf16 merge would have kept) as the evidence for the choice.
"""

from __future__ import annotations

from importlib.util import find_spec

from crossdiff.errors import CrossdiffError

QUANTIZATIONS = (None, "nf4", "int8")
BITS = {"nf4": "4-bit", "int8": "8-bit"}
#: how an int8 fine-tune is saved and evaluated (config/README.md)
INT8_NOTE = (
    "int8: base/ holds the 8-bit weights dequantised (W = CB * SCB / 127, bitsandbytes' int8_vectorwise_dequant) "
    "in bf16, adapter/ the fp32 adapter; evaluation runs that base in bf16 plus the adapter through peft. The "
    "training forward was LLM.int8's (8-bit activations, fp16 outlier columns), so the evaluated model differs by "
    "that activation quantisation and the bf16 rounding of W; Hase et al. evaluated the 8-bit model itself")


def check_settings(s: dict) -> None:
    """Config-time checks of ``quantization`` (called from the settings validation)."""
    q = s.get("quantization")
    if q not in QUANTIZATIONS:
        raise CrossdiffError(f"finetune settings.quantization: expected null, 'nf4' or 'int8', got {q!r}")
    if q is None:
        return
    if not s.get("lora"):
        raise CrossdiffError(f"finetune settings.quantization {q!r} trains LoRA adapters on a {BITS[q]} base: "
                             f"set finetune.lora too (e.g. lora: {{r: 16}}, or preset: hase2024); a {BITS[q]} model "
                             "cannot be fully fine-tuned")
    n = s.get("num_processes", "auto")
    if isinstance(n, int) and n > 1:
        raise CrossdiffError(f"finetune settings.quantization {q!r} runs one process per job (num_processes {n}); "
                             f"a {BITS[q]} 70B model fits one 80 GB GPU: set num_processes: 1 (or auto with one GPU)")
    if s.get("master_weights") == "bf16":
        raise CrossdiffError(f"finetune settings.quantization {q!r}: master_weights applies to full fine-tuning only; "
                             "the adapters train in fp32 with bf16 compute. Leave master_weights at fp32")


def bitsandbytes_missing() -> str | None:
    """Why bitsandbytes cannot run here, or None when it can (installed and a CUDA device present)."""
    if find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install -r envs/requirements-gpu.txt installs the pinned version)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device: bitsandbytes 4-bit and 8-bit training needs a GPU"
    except ImportError:
        return "torch is not installed"
    return None


def check_available(s: dict, on_gpu: bool) -> None:
    """Refuse a QLoRA run that cannot run here, before any model loads."""
    q = s.get("quantization")
    if q is None:
        return
    if not on_gpu:
        raise CrossdiffError(f"finetune settings.quantization {q!r} needs a CUDA GPU (this job runs on CPU: "
                             "finetune.device / resources.finetune.gpu)")
    why = bitsandbytes_missing()
    if why:
        raise CrossdiffError(f"finetune settings.quantization {q!r}: {why}")


def model_kwargs(s: dict, on_gpu: bool) -> dict:
    """Extra ``from_pretrained`` keyword arguments of a QLoRA base ({} without quantization)."""
    if s.get("quantization") is None:
        return {}
    check_available(s, on_gpu)
    import torch
    from transformers import BitsAndBytesConfig

    if s["quantization"] == "int8":  # LLM.int8 (theirs: load_in_8bit); the unquantised parts in bf16 (theirs fp16)
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "dtype": torch.bfloat16,
                "device_map": {"": torch.cuda.current_device()}}
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        "dtype": torch.bfloat16,  # the parts bitsandbytes leaves unquantised (embeddings, norms, lm_head)
        "device_map": {"": torch.cuda.current_device()},
    }


BASE_DIR = "base"
ADAPTER_DIR = "adapter"
MANIFEST = "qlora.json"


def dequantize_int8(data, scb):
    """An LLM.int8 weight as fp32: ``CB * SCB / 127`` row-wise (bitsandbytes' ``int8_vectorwise_dequant``)."""
    return data.float() * scb.float().to(data.device).view(-1, 1) * (1.0 / 127.0)


def _plain(p, module=None):
    """A parameter as a plain fp32 tensor: a bitsandbytes 4-bit one dequantised (to its bf16, exactly), an 8-bit one
    (``Int8Params``, its row scales on the parameter or the owning ``Linear8bitLt``'s state) dequantised, else itself."""
    if hasattr(p, "quant_state"):
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(p, state=p.quant_state).float()
    if type(p).__name__ == "Int8Params":
        scb = getattr(p, "SCB", None)
        if scb is None and module is not None:
            scb = getattr(getattr(module, "state", None), "SCB", None)
        if scb is None:
            raise CrossdiffError("an 8-bit weight without its row scales (SCB): cannot dequantise it")
        return dequantize_int8(p.data, scb)
    return p.detach().float()


def base_state_dict(peft_model, dtype=None, merge: bool = False, stats: dict | None = None) -> dict:
    """A plain state dict (base names, ``dtype``, host memory) of the base the adapters were trained on: 4-bit
    weights dequantised, one module at a time (no full-size copy on the GPU). ``merge`` adds each active adapter's
    ``s * B @ A`` in fp32 first (for a model without quantisation: peft's ``merge_and_unload().state_dict()``).
    ``stats`` (a dict) receives, over the adapted layers' weights, the share that ``W + s*B@A`` changes in fp32
    and the share a bf16 merge would keep changed."""
    import torch
    from peft.tuners.lora import LoraLayer

    dtype = dtype or torch.bfloat16
    base = peft_model.get_base_model()
    out: dict = {}
    lora_prefixes = []
    n = changed = kept_bf16 = 0
    with torch.no_grad():
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer):
                layer = mod.get_base_layer()
                w = _plain(layer.weight, layer)
                merged = w
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A:
                        merged = merged + mod.get_delta_weight(adapter).float().to(w.device)
                if stats is not None:
                    n += w.numel()
                    changed += int((merged != w).sum())
                    kept_bf16 += int((merged.to(torch.bfloat16) != w.to(torch.bfloat16)).sum())
                out[f"{name}.weight"] = (merged if merge else w).to(dtype).cpu()
                if getattr(layer, "bias", None) is not None:
                    out[f"{name}.bias"] = layer.bias.detach().to(dtype).cpu()
                lora_prefixes.append(name + ".")
        modules = dict(base.named_modules())
        for key, p in base.named_parameters(remove_duplicate=False):
            if any(key.startswith(pref) for pref in lora_prefixes):
                continue
            if type(p).__name__ == "Int8Params":  # an 8-bit linear without an adapter (int8: every other linear)
                out[key] = _plain(p, modules.get(key.rpartition(".")[0])).to(dtype).cpu()
                continue
            out[key] = _plain(p).to(dtype).cpu() if p.is_floating_point() else p.detach().cpu()
    if stats is not None:
        stats.update({"n_adapted_weights": n, "share_changed_fp32": changed / n if n else None,
                      "share_changed_bf16_merge": kept_bf16 / n if n else None})
    return out


def merged_state_dict(peft_model, dtype=None) -> dict:
    """The adapters merged into the dequantised base (:func:`base_state_dict` with ``merge``); what a merged save
    would hold. Kept for comparison: QLoRA fine-tunes are saved unmerged (module docstring)."""
    return base_state_dict(peft_model, dtype, merge=True)


def plain_base(peft_model):
    """The base model object, with its quantisation marks removed, to save :func:`base_state_dict` as a plain
    checkpoint (config.json without ``quantization_config``: transformers would otherwise load it as 4-bit)."""
    model = peft_model.get_base_model()
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if getattr(model, flag, False):
            try:
                setattr(model, flag, False)
            except AttributeError:  # a read-only property in some transformers versions
                pass
    return model


def save_for_evaluation(peft_model, tokenizer, out_dir, quantization: str | None = "nf4") -> dict:
    """Write ``out_dir/base`` (the dequantised base, bf16, + tokenizer), ``out_dir/adapter`` (the peft adapter,
    fp32) and ``out_dir/qlora.json`` (module docstring); returns the manifest."""
    import json
    from pathlib import Path

    import torch

    out = Path(out_dir)
    stats: dict = {}
    state = base_state_dict(peft_model, torch.bfloat16, stats=stats)
    # the adapter first: peft reads the (still quantised) model's config for base_model_name_or_path
    adapter_state = {k: v.detach().float().cpu() for k, v in peft_model.state_dict().items() if "lora_" in k}
    peft_model.save_pretrained(str(out / ADAPTER_DIR), state_dict=adapter_state)
    model = plain_base(peft_model)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out / BASE_DIR), state_dict=state)
    cfg_path = out / BASE_DIR / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "bfloat16"  # what is on disk: loaders with dtype auto load it as it is
    cfg.pop("torch_dtype", None)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out / BASE_DIR))
    adapter_cfg = json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())
    manifest = {"format": "crossdiff-qlora-unmerged", "base": BASE_DIR, "adapter": ADAPTER_DIR,
                "quantization": quantization, **({"note": INT8_NOTE} if quantization == "int8" else {}),
                "base_dtype": "bfloat16", "adapter_dtype": "float32", "r": adapter_cfg.get("r"),
                "lora_alpha": adapter_cfg.get("lora_alpha"), **stats}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def eval_paths(model_dir) -> tuple[str, str | None, dict | None]:
    """(model to load, adapter to apply or None, the manifest or None): a QLoRA fine-tune's ``base/`` and
    ``adapter/`` (from its ``qlora.json``), anything else as it is."""
    import json
    from pathlib import Path

    d = Path(str(model_dir))
    manifest_path = d / MANIFEST
    if not manifest_path.is_file():
        return str(model_dir), None, None
    try:
        manifest = json.loads(manifest_path.read_text())
        base, adapter = d / manifest["base"], d / manifest["adapter"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CrossdiffError(f"{manifest_path}: not a QLoRA manifest ({type(exc).__name__}: {exc}); re-run the fine-tune") from None
    for path, what in ((base / "config.json", "base model"), (adapter / "adapter_config.json", "adapter")):
        if not path.is_file():
            raise CrossdiffError(f"{d}: the QLoRA {what} is missing ({path}); re-run the fine-tune")
    return str(base), str(adapter), manifest


def load_for_evaluation(model_dir, dtype=None):
    """The model evaluation scores, as a torch module (the hf backend's loading, for checks and benchmarks):
    a QLoRA fine-tune's base with its adapter applied through peft, anything else as a plain model."""
    import torch
    from transformers import AutoModelForCausalLM

    base, adapter, _ = eval_paths(model_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)  # as lm-eval's HFLM(peft=...): adapters kept in fp32
    return model.eval()


#: LoRA ranks vLLM 0.32 accepts as ``max_lora_rank``
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(r: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds rank ``r``."""
    for k in VLLM_LORA_RANKS:
        if k >= int(r):
            return k
    raise CrossdiffError(f"LoRA rank {r} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}: use the hf "
                         f"backend (evaluate.backend: hf) or a smaller finetune.lora.r")
