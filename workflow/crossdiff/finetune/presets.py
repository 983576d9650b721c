"""Named fine-tuning recipes (``finetune.preset``), a settings layer between crossdiff's defaults and the config's
own ``finetune`` layers (:mod:`crossdiff.plan.settings`): a key the config sets at any level wins over the preset.

``hase2024``: Hase et al. 2024's LoRA runs (allenai/easy-to-hard-generalization at ad8358e), each value read in
their code:

==========================  ===============================  ==================================================
key                         value                            their code
==========================  ===============================  ==================================================
lora.r, alpha, dropout      16, 32, 0.1                      utils.py:122-125 (``LoraConfig``)
lora.target_modules         [q_proj, v_proj]                 peft 0.5's default for Llama (their pin), explicit
                                                             for Mistral/Mixtral (utils.py:129-130)
learning_rate               1e-4                             ``--probing_lr 1e-4`` (run_jobs.py:186-187;
                                                             main.py:1031)
optim                       adamw_bnb_8bit with an 8-bit     ``bnb.optim.Adam8bit`` if ``quantization == '8bit'``
                            base (quantization int8), else   else torch ``AdamW`` (probes.py:389-393)
                            adamw_torch
adam_beta1, adam_beta2      0.9, 0.999                       both optimisers' defaults (no betas passed)
weight_decay                1e-5                             ``--weight_decay`` (main.py:1079), on non-bias,
                                                             non-layernorm parameters (probes.py:364-375)
lr_scheduler_type           linear, final_lr_ratio 0.1,      ``get_scheduler("linear", 0 warmup, T / 0.9)``:
                            warmup_ratio 0                   linear decay to 10% (probes.py:395-401;
                                                             ``--probing_lr_decay 10-percent``, main.py:1033)
max_grad_norm               1.0                              ``clip_grad_norm_(..., 1.)`` (probes.py:435)
num_train_epochs            3                                utils.standardize_optimization_config (utils.py:224)
==========================  ===============================  ==================================================

Not in the preset (set them in the config): the 8-bit base (``quantization: int8``; theirs for Llama-2,
run_jobs.py:136-148; Mixtral and Qwen fp16), the multiple-choice loss (``objective: multiple_choice``; theirs for
the non-CoT runs, run_jobs.py:187), the batch (theirs: effective batch ``min(n_train, 50)`` items, at least 10
optimizer steps, utils.py:203-235). Differences: their ``Adam8bit`` applies weight decay as L2 inside Adam,
transformers' ``adamw_bnb_8bit`` decoupled (at 1e-5 the difference is negligible); their epochs rise to reach 10
optimizer steps on small training sets (not reproduced); their step counter can take fewer steps than the
schedule's T (notes: probes.py:437-443).
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError

PRESETS = ("hase2024",)


def preset_layer(user: dict) -> dict | None:
    """The settings layer of ``user['preset']`` (``user``: the config's finetune layers merged), or None."""
    name = (user or {}).get("preset")
    if name is None:
        return None
    if name not in PRESETS:
        raise CrossdiffError(f"finetune settings.preset: expected null or one of {list(PRESETS)}, got {name!r}")
    eight_bit = (user or {}).get("quantization") == "int8"
    return {
        "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "learning_rate": 1e-4,
        "optim": "adamw_bnb_8bit" if eight_bit else "adamw_torch",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "weight_decay": 1e-5,
        "lr_scheduler_type": "linear",
        "final_lr_ratio": 0.1,
        "warmup_ratio": 0.0,
        "max_grad_norm": 1.0,
        "num_train_epochs": 3,
    }
