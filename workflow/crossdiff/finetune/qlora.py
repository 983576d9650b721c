"""QLoRA (``finetune.quantization: nf4`` with ``finetune.lora``): a 4-bit base, LoRA adapters trained on it.

Training: the base model is loaded by transformers with bitsandbytes NF4 weights, double quantisation
(the block constants quantised again) and bf16 compute (``BitsAndBytesConfig``); SFTTrainer sees a
4-bit model and trains the LoRA adapters (fp32) on it. One process per job: it needs a CUDA GPU and
``bitsandbytes`` (pinned in ``envs/requirements-gpu.txt``); anything else is refused before the model
loads, with the reason (:func:`check_available`).

Saving (what evaluation loads, :func:`merged_state_dict`): the adapters are merged into a **bf16 copy of
the dequantised base**, one layer at a time (each NF4 weight dequantised on its device, ``W + scale*B@A``
added in fp32, cast to bf16, moved to host memory). The saved model is a plain bf16 checkpoint, so every
evaluation backend (hf, vLLM) loads it as it loads a full fine-tune; the weights are exactly the ones the
adapters were trained against (the dequantised NF4 base), not the original bf16 base, and not re-rounded to
4 bits (peft's ``merge_and_unload`` on a 4-bit model re-quantises the merged weight, losing most of a small
update). Cost: the saved checkpoint is 2 bytes per parameter (a 70B model: ~141 GB, the same as a full
fine-tune's bf16 save), and the merge needs that much host memory once. Keeping only the adapter (a few
hundred MB) would save disk but needs adapter support in every evaluation backend; not done.
"""

from __future__ import annotations

from importlib.util import find_spec

from crossdiff.errors import CrossdiffError

QUANTIZATIONS = (None, "nf4")


def check_settings(s: dict) -> None:
    """Config-time checks of ``quantization`` (called from the settings validation)."""
    q = s.get("quantization")
    if q not in QUANTIZATIONS:
        raise CrossdiffError(f"finetune settings.quantization: expected null or 'nf4', got {q!r}")
    if q is None:
        return
    if not s.get("lora"):
        raise CrossdiffError("finetune settings.quantization 'nf4' (QLoRA) trains LoRA adapters on a 4-bit base: "
                             "set finetune.lora too (e.g. lora: {r: 16}); a 4-bit model cannot be fully fine-tuned")
    n = s.get("num_processes", "auto")
    if isinstance(n, int) and n > 1:
        raise CrossdiffError(f"finetune settings.quantization 'nf4' runs one process per job (num_processes {n}); "
                             "a 4-bit 70B model fits one 80 GB GPU: set num_processes: 1 (or auto with one GPU)")
    if s.get("master_weights") == "bf16":
        raise CrossdiffError("finetune settings.quantization 'nf4': master_weights applies to full fine-tuning only; "
                             "the adapters train in fp32 with bf16 compute. Leave master_weights at fp32")


def bitsandbytes_missing() -> str | None:
    """Why bitsandbytes cannot run here, or None when it can (installed and a CUDA device present)."""
    if find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install -r envs/requirements-gpu.txt installs the pinned version)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device: bitsandbytes 4-bit training needs a GPU"
    except ImportError:
        return "torch is not installed"
    return None


def check_available(s: dict, on_gpu: bool) -> None:
    """Refuse a QLoRA run that cannot run here, before any model loads."""
    if s.get("quantization") is None:
        return
    if not on_gpu:
        raise CrossdiffError("finetune settings.quantization 'nf4' needs a CUDA GPU (this job runs on CPU: "
                             "finetune.device / resources.finetune.gpu)")
    why = bitsandbytes_missing()
    if why:
        raise CrossdiffError(f"finetune settings.quantization 'nf4': {why}")


def model_kwargs(s: dict, on_gpu: bool) -> dict:
    """Extra ``from_pretrained`` keyword arguments of a QLoRA base ({} without quantization)."""
    if s.get("quantization") is None:
        return {}
    check_available(s, on_gpu)
    import torch
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        "dtype": torch.bfloat16,  # the parts bitsandbytes leaves unquantised (embeddings, norms, lm_head)
        "device_map": {"": torch.cuda.current_device()},
    }


def merged_state_dict(peft_model, dtype=None) -> dict:
    """A plain state dict (base names, ``dtype``, host memory) with every LoRA adapter merged into its base
    weight; 4-bit base weights are dequantised first. Works one module at a time (no full-size copy on
    the GPU). For a model without quantisation it equals peft's ``merge_and_unload().state_dict()``."""
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_bnb_weight

    dtype = dtype or torch.bfloat16
    base = peft_model.get_base_model()

    def plain(p):
        if hasattr(p, "quant_state"):  # a bitsandbytes 4-bit parameter
            return dequantize_bnb_weight(p, state=p.quant_state).float()
        return p.detach().float()

    out: dict = {}
    lora_prefixes = []
    with torch.no_grad():
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer):
                layer = mod.get_base_layer()
                w = plain(layer.weight)
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A:
                        w = w + mod.get_delta_weight(adapter).float().to(w.device)
                out[f"{name}.weight"] = w.to(dtype).cpu()
                if getattr(layer, "bias", None) is not None:
                    out[f"{name}.bias"] = layer.bias.detach().to(dtype).cpu()
                lora_prefixes.append(name + ".")
        for key, p in base.named_parameters(remove_duplicate=False):
            if any(key.startswith(pref) for pref in lora_prefixes):
                continue
            out[key] = plain(p).to(dtype).cpu() if p.is_floating_point() else p.detach().cpu()
    return out


def plain_base(peft_model):
    """The base model object, with its quantisation marks removed, to save :func:`merged_state_dict` as a plain
    checkpoint (config.json without ``quantization_config``: transformers would otherwise load it as 4-bit)."""
    model = peft_model.get_base_model()
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for flag in ("is_loaded_in_4bit", "is_quantized"):
        if getattr(model, flag, False):
            try:
                setattr(model, flag, False)
            except AttributeError:  # a read-only property in some transformers versions
                pass
    return model
