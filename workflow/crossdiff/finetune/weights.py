"""Where the base model's files are, and how much of it training changed.

The share of changed parameters is measured against the base model's weight files on disk (read
tensor by tensor with safetensors, so no second copy of the model is held in memory, and a resumed
run is still compared with the original weights, not with its checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from crossdiff.errors import CrossdiffError


def resolve_model_dir(model) -> Path:
    """A local directory holding the model: the path itself, or its snapshot in the HF cache (downloaded
    there first unless offline)."""
    p = Path(str(model))
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(model),
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"],
            )
        )
    except Exception as exc:  # hub errors come in many classes; the message is what matters
        raise CrossdiffError(f"{model}: not a local directory and not on the Hub (or its cache): {str(exc).splitlines()[0]}") from None


def base_tensors(model_dir):
    """Yield (name, tensor) of the base model's safetensors files (none for other formats)."""
    from safetensors import safe_open

    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                yield key, fh.get_tensor(key)


def changed_share(state_dict: dict, model_dir) -> dict:
    """Share of parameters (elements) of ``state_dict`` that differ from the base weights, in the trained
    dtype and after casting to each of fp32/bf16 (what a bf16 save keeps)."""
    import torch

    trained = {k: v for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()}
    total = changed = changed_bf16 = 0
    matched = 0
    for key, base in base_tensors(model_dir):
        new = trained.get(key)
        if new is None or new.shape != base.shape:
            continue
        matched += 1
        new = new.detach().to("cpu")
        total += base.numel()
        changed += int((new.float() != base.float()).sum())
        changed_bf16 += int((new.to(torch.bfloat16) != base.to(torch.bfloat16)).sum())
    if not matched:
        return {"share_changed": None, "share_changed_bf16": None, "n_compared": 0,
                "note": "no safetensors weights of the base model matched the trained state dict"}
    return {"share_changed": changed / total, "share_changed_bf16": changed_bf16 / total, "n_compared": total}


def optimizer_state_dtype(optimizer) -> str | None:
    """dtype of the optimizer's moment buffers (e.g. exp_avg), or None before the first step."""
    import torch

    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    for state in getattr(opt, "state", {}).values():
        for name in ("exp_avg", "state1", "momentum_buffer"):
            v = state.get(name) if isinstance(state, dict) else None
            if torch.is_tensor(v):
                return str(getattr(v, "dtype", None)).replace("torch.", "")
    return None


def record_saved_dtype(model_dir, dtype_name: str) -> None:
    """Make config.json name the dtype the weights were saved in. ``save_pretrained`` writes the
    in-memory parameters' dtype (fp32 master weights) even when the state dict it saves was cast to bf16."""
    import json

    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text())
    cfg["dtype"] = dtype_name
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = dtype_name
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
