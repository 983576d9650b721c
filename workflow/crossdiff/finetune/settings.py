"""Fine-tuning settings (``--settings`` JSON): defaults, validation and the precision plan.

Defaults follow the paper (Kordi et al. 2025) and the authors' code where they state them:

=============================  ===========  =====================================================
key                            default      meaning
=============================  ===========  =====================================================
num_train_epochs               5            paper
learning_rate                  5e-6         paper (full fine-tuning); with ``lora`` set and no
                                            learning_rate given at any level: 1e-4 (LORA_LEARNING_RATE)
lr_scheduler_type              "cosine"     paper
warmup_ratio                   0.1          paper
weight_decay                   0.1          paper
adam_beta1, adam_beta2         0.9, 0.99    authors' code
max_grad_norm                  1.0          gradient clipping (authors' code: 0.1)
optim                          adamw_torch  any TrainingArguments optimizer name
                                            (e.g. paged_adamw_8bit, the authors', needs bitsandbytes)
bf16                           "auto"       bf16 COMPUTE (autocast / FSDP mixed precision); "auto" =
                                            on CUDA only (on CPU bf16 is ~10x slower); true on CPU
                                            is ignored
master_weights                 "fp32"       dtype of the trained parameters and optimizer state;
                                            "bf16" = pure-bf16 training, refused unless
                                            allow_pure_bf16 (updates at lr 5e-6 fall below a bf16
                                            weight's resolution: most weights never change)
allow_pure_bf16                false        explicit opt-in for master_weights "bf16"
save_dtype                     "auto"       dtype of the saved model: "auto" = bf16 when trained
                                            with bf16 compute (what evaluation loads), else the
                                            master dtype; or "bf16" / "fp32"
seed                           42           paper
per_device_train_batch_size    8
gradient_accumulation_steps    1            ignored when global_batch_size is set
global_batch_size              null         effective batch; accumulation = global /
                                            (per-device batch x processes), must divide
max_length                     1024         tokens per example (longer ones are truncated)
max_steps                      -1           > 0 overrides epochs
gradient_checkpointing         "auto"       activation checkpointing; "auto" = on CUDA only
use_liger_kernel               false        Liger kernels (fused RMSNorm/SwiGLU/RoPE; TRL 1.16
                                            turns its fused cross-entropy off; GPU, liger-kernel)
padding_free                   false        TRL padding-free batching (needs flash attention)
attn_implementation            null         e.g. "sdpa", "flash_attention_2"; null = transformers'
device                         "auto"       "auto" (cuda if available), "cuda" or "cpu"
num_processes                  "auto"       processes of one job: "auto" = its GPUs (>= 1); an
                                            integer > 1 on CPU runs gloo ranks (tests)
sharding                       "fsdp"       engine for num_processes > 1: "fsdp" (FSDP2
                                            FULL_SHARD, fp32 sharded master) or "ddp" (replicated);
                                            "hybrid" = FSDP2 hybrid sharding on a multi-node job
                                            (resources nodes > 1): shard within a node, replicate
                                            across nodes (on one node: as "fsdp")
cpu_ram_efficient_loading      true         FSDP: only rank 0 reads the weights
logging_steps                  1
save_steps                     50           checkpoint every N optimizer steps
save_total_limit               2
keep_checkpoints               false        keep the work directory after success
lora                           null         null = full fine-tuning; or {"r": 16, "alpha": 32,
                                            "dropout": 0.05, "target_modules": "all-linear"}
quantization                   null         "nf4" = QLoRA: 4-bit NF4 base (double quantisation, bf16
                                            compute) with lora; needs bitsandbytes and a GPU
                                            (crossdiff.finetune.qlora); "int8" = bitsandbytes
                                            LLM.int8 8-bit base with lora (Hase et al. 2024)
preset                         null         a named recipe layered under the config's finetune keys:
                                            "hase2024" (crossdiff.finetune.presets)
objective                      "sft"        "sft": token-level loss on the completion (TRL SFT);
                                            "multiple_choice": cross-entropy over the item's options'
                                            summed log-probabilities (Hase et al.;
                                            crossdiff.finetune.mc_objective)
final_lr_ratio                 null         with lr_scheduler_type linear: decay to this fraction of
                                            learning_rate instead of 0 (Hase et al.: 0.1)
shuffle                        true         false = train in file order (curricula: the
                                            trainer's sequential sampler, see crossdiff.study.designs)
ddp_timeout                    7200         seconds a rank waits at a collective (a 14B rank-0
                                            gather and save outlasts transformers' 1800)
loss                           "sft"        "sft": mean NLL of the completion tokens (TRL
                                            loss_type "nll"); "dft": Dynamic Fine-Tuning (Wu et al.
                                            2025), each token's NLL weighted by its stop-gradient
                                            probability (TRL loss_type "dft"; the method dft)
=============================  ===========  =====================================================
"""

from __future__ import annotations

import os

from crossdiff.errors import CrossdiffError

DEFAULTS: dict = {
    "num_train_epochs": 5,
    "learning_rate": 5e-6,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "weight_decay": 0.1,
    "adam_beta1": 0.9,
    "adam_beta2": 0.99,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch",
    "bf16": "auto",
    "master_weights": "fp32",
    "allow_pure_bf16": False,
    "save_dtype": "auto",
    "seed": 42,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "global_batch_size": None,
    "max_length": 1024,
    "max_steps": -1,
    "gradient_checkpointing": "auto",
    "use_liger_kernel": False,
    "padding_free": False,
    "attn_implementation": None,
    "device": "auto",
    "num_processes": "auto",
    "sharding": "fsdp",
    "cpu_ram_efficient_loading": True,
    "logging_steps": 1,
    "save_steps": 50,
    "save_total_limit": 2,
    "keep_checkpoints": False,
    "lora": None,
    "quantization": None,
    "preset": None,
    "objective": "sft",
    "final_lr_ratio": None,
    "shuffle": True,
    "ddp_timeout": 7200,
    "loss": "sft",
}
#: ``loss`` -> TRL 1.16's ``SFTConfig.loss_type`` (trl/trainer/sft_config.py: "nll" | "dft")
TRL_LOSS_TYPES = {"sft": "nll", "dft": "dft"}
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
#: learning rate of LoRA / QLoRA runs when no level of the config sets one. 5e-6 is the paper's full fine-tune
#: rate; adapters train from zero-initialised B matrices and need a far larger one: 1e-4 is Hase et al. 2024's
#: (allenai/easy-to-hard-generalization, their LoRA runs) and QLoRA's for its 33B/65B models (Dettmers et al.
#: 2023, Appendix B.2: 2e-4 for 7B/13B, 1e-4 for 33B/65B).
LORA_LEARNING_RATE = 1e-4
# settings that do not change what is trained: left out of the resume fingerprint
NOT_FINGERPRINTED = {"ddp_timeout", "keep_checkpoints", "save_total_limit", "save_steps", "logging_steps", "save_dtype"}

PURE_BF16_MESSAGE = (
    "finetune settings: master_weights 'bf16' trains pure-bf16 weights (parameters, gradients and AdamW "
    "state in bf16). At the paper's lr 5e-6 an AdamW update (~lr) is below a bf16 weight's resolution "
    "(~1.2e-4 at magnitude 0.02), so most weights never change (measured: 7.6% changed after 50 steps, "
    "fp32 master: 100%). Use master_weights: fp32 (the default: fp32 weights and optimizer state, bf16 "
    "compute), or set allow_pure_bf16: true to train this way anyway."
)


def defaults_for(user: dict) -> dict:
    """The defaults under a run's settings: :data:`DEFAULTS`, with LoRA's learning rate when ``user`` (the
    config's layers merged, :func:`crossdiff.plan.settings`) sets ``lora`` and no learning rate."""
    out = dict(DEFAULTS)
    if user.get("lora") is not None and "learning_rate" not in user:
        out["learning_rate"] = LORA_LEARNING_RATE
    return out


def resolve_settings(settings: dict | None) -> dict:
    """Settings over their defaults (nested ``lora`` merged key by key), validated: the Python API's entry.
    The workflow's jobs get settings resolved at parse time (crossdiff.plan) and only validate them."""
    from crossdiff.config import deep_merge
    from crossdiff.finetune.presets import preset_layer

    settings = dict(settings or {})
    return validate_settings(deep_merge(defaults_for(settings), preset_layer(settings), settings))


def validate_settings(s: dict, complete: bool = True) -> dict:
    """Check resolved settings (every key present when ``complete``); returns them with lora's defaults filled."""
    s = dict(s)
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"finetune settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    missing = sorted(set(DEFAULTS) - set(s))
    if complete and missing:
        raise CrossdiffError(f"finetune settings: key(s) {missing} missing: a job takes the settings the workflow "
                             "resolved at parse time (crossdiff.plan), or use the Python API's resolve_settings")
    if s["lora"] is not None:
        if not isinstance(s["lora"], dict):
            raise CrossdiffError(f"finetune settings.lora: expected null or an object, got {s['lora']!r}")
        bad = sorted(set(s["lora"]) - set(LORA_DEFAULTS))
        if bad:
            raise CrossdiffError(f"finetune settings.lora: unknown key(s) {bad}; known: {sorted(LORA_DEFAULTS)}")
        s["lora"] = {**LORA_DEFAULTS, **s["lora"]}
    if not (isinstance(s["warmup_ratio"], (int, float)) and 0 <= s["warmup_ratio"] < 1):
        raise CrossdiffError(f"finetune settings.warmup_ratio: expected a number in [0, 1), got {s['warmup_ratio']!r}")
    choices = {
        "device": ("auto", "cuda", "cpu"),
        "master_weights": ("fp32", "bf16"),
        "save_dtype": ("auto", "bf16", "fp32"),
        "sharding": ("fsdp", "ddp", "hybrid"),
        "bf16": ("auto", True, False),
        "gradient_checkpointing": ("auto", True, False),
        "loss": tuple(TRL_LOSS_TYPES),
    }
    for key, allowed in choices.items():
        if s[key] not in allowed:
            raise CrossdiffError(f"finetune settings.{key}: expected one of {list(allowed)}, got {s[key]!r}")
    n = s["num_processes"]
    if not (n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and n >= 1)):
        raise CrossdiffError(f"finetune settings.num_processes: expected 'auto' or an integer >= 1, got {n!r}")
    g = s["global_batch_size"]
    if g is not None and not (isinstance(g, int) and g >= 1):
        raise CrossdiffError(f"finetune settings.global_batch_size: expected null or an integer >= 1, got {g!r}")
    if s["padding_free"] and not str(s["attn_implementation"] or "").startswith(("flash_attention", "kernels-community/")):
        raise CrossdiffError(
            "finetune settings.padding_free needs an attention implementation that takes packed "
            f"sequences: set attn_implementation: flash_attention_2 (got {s['attn_implementation']!r})"
        )
    if s["master_weights"] == "bf16" and not s["allow_pure_bf16"]:
        raise CrossdiffError(PURE_BF16_MESSAGE)
    from crossdiff.finetune.mc_objective import check_settings as check_objective
    from crossdiff.finetune.presets import PRESETS

    if s["preset"] is not None and s["preset"] not in PRESETS:
        raise CrossdiffError(f"finetune settings.preset: expected null or one of {list(PRESETS)}, got {s['preset']!r}")
    r = s["final_lr_ratio"]
    if r is not None:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise CrossdiffError(f"finetune settings.final_lr_ratio: expected null or a number in [0, 1), got {r!r}")
        if s["lr_scheduler_type"] != "linear":
            raise CrossdiffError(f"finetune settings.final_lr_ratio {r} shapes the linear schedule; lr_scheduler_type "
                                 f"is {s['lr_scheduler_type']!r}: set lr_scheduler_type: linear or final_lr_ratio: null")
    check_objective(s)
    if s["loss"] == "dft" and s["objective"] == "multiple_choice":  # the MC loss is crossdiff's own, not TRL's
        raise CrossdiffError("finetune settings.loss dft is TRL's token loss; objective multiple_choice trains "
                             "crossdiff's loss over the options instead: set one of them back to sft")
    from crossdiff.finetune.qlora import check_settings as check_quantization

    check_quantization(s)
    return s


def world_size(s: dict, gpus: int | None = None) -> int:
    """Processes of the job: the setting, or (auto) the GPUs it was given (all its nodes'), at least 1."""
    if s["num_processes"] != "auto":
        return int(s["num_processes"])
    return max(1, int(gpus or 0))


def shard_size(s: dict, n_processes: int, nodes: int = 1) -> int:
    """Over how many ranks FSDP2 shards the weights, gradients and optimizer state: all of them, or with
    ``sharding: hybrid`` on several nodes the ranks of one node (replicated across the nodes)."""
    nodes = max(1, int(nodes or 1))
    if s["sharding"] == "hybrid" and nodes > 1:
        return max(1, n_processes // nodes)
    return max(1, n_processes)


def accumulation_steps(s: dict, n_processes: int) -> int:
    """gradient_accumulation_steps, or the one that makes global_batch_size with this many processes."""
    g = s["global_batch_size"]
    if g is None:
        return int(s["gradient_accumulation_steps"])
    per_step = s["per_device_train_batch_size"] * n_processes
    if g % per_step:
        raise CrossdiffError(
            f"finetune settings.global_batch_size {g} is not a multiple of per_device_train_batch_size "
            f"({s['per_device_train_batch_size']}) x processes ({n_processes}) = {per_step}: change one of them"
        )
    return g // per_step


def precision_plan(s: dict, on_gpu: bool, bf16_supported: bool) -> dict:
    """What trains in which dtype. Pure bf16 only with the explicit opt-in (checked in resolve_settings)."""
    compute_bf16 = on_gpu and s["bf16"] in (True, "auto") and bf16_supported
    if s["master_weights"] == "bf16":
        if not on_gpu:
            raise CrossdiffError("finetune settings: master_weights 'bf16' needs a CUDA device (on CPU training is fp32)")
        if not bf16_supported:
            raise CrossdiffError("finetune settings: master_weights 'bf16' but this GPU does not support bf16")
        compute_bf16 = True
    master = s["master_weights"] if on_gpu else "fp32"
    save = s["save_dtype"]
    if save == "auto":
        save = "bf16" if compute_bf16 else master
    mode = "pure-bf16" if master == "bf16" else ("bf16-mixed (fp32 master)" if compute_bf16 else "fp32")
    return {"master_dtype": master, "compute_bf16": compute_bf16, "save_dtype": save, "mode": mode}


def is_bnb_optimizer(optim: str) -> bool:
    return "8bit" in optim or "bnb" in optim or optim.startswith(("paged_", "lion_"))


def engine_for(s: dict, n_processes: int, on_gpu: bool) -> str:
    """single | ddp | fsdp2. accelerate enables FSDP only on accelerators: CPU ranks run DDP over gloo, unless
    the launcher asked accelerate for FSDP (ACCELERATE_USE_FSDP, as ``accelerate launch --use_fsdp`` does;
    tests/test_fsdp_cpu.py makes accelerate honour it on CPU)."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if n_processes <= 1 and not (asked and "LOCAL_RANK" in os.environ):  # FSDP2 at world size 1: a launched rank
        return "single"
    if s.get("quantization") is not None:  # QLoRA: one process (crossdiff.finetune.qlora), never ddp/fsdp ranks
        raise CrossdiffError(f"finetune settings.quantization {s['quantization']!r} (QLoRA) runs one process per "
                             f"job, not {n_processes}: give the job one GPU (models[].resources.gpu: 1) or "
                             "num_processes: 1")
    if s["sharding"] in ("fsdp", "hybrid") and (on_gpu or asked):
        if s["lora"]:
            raise CrossdiffError(f"finetune settings: lora with sharding {s['sharding']!r} is not supported; use sharding: ddp")
        if is_bnb_optimizer(s["optim"]):
            raise CrossdiffError(f"finetune settings.optim {s['optim']!r} (bitsandbytes) does not work with FSDP2 "
                                 "(bitsandbytes#1633): use adamw_torch, or sharding: ddp")
        return "fsdp2"
    return "ddp"


def launch_problems(s: dict, gpus: int) -> list[str]:
    """What stops a job with these resolved settings on ``gpus`` GPUs (0 = a CPU job) before it starts: the
    batch split over its ranks, the engine (FSDP2 / DDP) and QLoRA's one process on a GPU. Checked at parse
    for every (dataset, model), whatever ``resources.memory_check`` says."""
    gpus = int(gpus or 0)
    on_gpu = gpus > 0 and s["device"] != "cpu"
    n = world_size(s, gpus)
    where = f"{n} process(es) ({'num_processes ' + str(s['num_processes']) if s['num_processes'] != 'auto' else f'num_processes auto = the job GPUs ({gpus})'})"
    problems = []
    if s["quantization"] is not None:
        if not on_gpu:
            problems.append(f"quantization {s['quantization']!r} (QLoRA) needs a CUDA GPU, but this job runs on the CPU "
                            f"(resources.finetune.gpu / models[].resources.gpu = {gpus}, device {s['device']!r}): "
                            "give it one GPU or train without quantization")
        if n > 1:
            problems.append(f"quantization {s['quantization']!r} (QLoRA) runs one process per job, but this job would "
                            f"start {where}: set models[].resources.gpu: 1 (or num_processes: 1); a 4-bit 70B model "
                            "fits one 80 GB GPU")
    try:
        accumulation_steps(s, n)
    except CrossdiffError as exc:
        problems.append(f"{exc} (the job runs {where})")
    if not problems:
        try:
            engine_for(s, n, on_gpu=on_gpu)
        except CrossdiffError as exc:
            problems.append(str(exc))
    return problems
