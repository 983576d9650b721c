"""GRPO settings (``grpo`` section; ``--settings`` JSON of ``crossdiff grpo``): TRL's names and defaults.

A GRPO job's settings are ONE dict, resolved at parse time by :meth:`crossdiff.plan.settings.Plan.grpo`:

* the keys a GRPO job shares with SFT (:data:`SHARED`: the device, the precision plan, LoRA, the optimizer,
  seed and order, checkpoints) come from the run's resolved ``finetune`` settings (so a model's LoRA or a
  dataset's device applies to both methods), and any of them may be set again in the ``grpo`` layers;
* the GRPO keys (:data:`DEFAULTS`) take TRL 1.16's ``GRPOConfig`` defaults (trl/trainer/grpo_config.py), except
  where the table says crossdiff's;

layers (later wins): the finetune keys < :data:`DEFAULTS` < ``grpo`` < ``datasets.<d>.grpo`` < ``models[].grpo``
< the run's design (``-seed<s>``: seed; curricula: ``shuffle: false``). ``max_completion_length: null`` resolves
to the prompt's ``max_gen_toks`` (what evaluation generates).

=================================  ==========  ==========================================================
key                                default     meaning (TRL's GRPOConfig field of the same name)
=================================  ==========  ==========================================================
num_generations                    8           completions per prompt (a group), >= 2
max_completion_length              null        tokens per completion; null = the prompt's max_gen_toks
                                               (crossdiff; TRL: 512)
temperature                        1.0         sampling temperature (also scales the logprobs)
top_p, top_k                       1.0, 0      nucleus / top-k sampling (0 = off)
beta                               0.0         KL coefficient; 0 = no reference model is loaded
epsilon, epsilon_high              0.2, null   clipping range (epsilon_high null = epsilon)
loss_type                          "dapo"      grpo, dr_grpo, dapo, bnpo, cispo, sapo, luspo, vespo
scale_rewards                      "group"     group, batch or none (advantage scaling)
num_iterations                     1           optimisation passes per generation batch (mu)
mask_truncated_completions         false       leave truncated completions out of the loss
learning_rate                      1e-6        TRL's GRPO default (not SFT's 5e-6)
lr_scheduler_type                  "linear"
warmup_ratio                       0.0         share of the steps to warm up over
weight_decay                       0.0
max_grad_norm                      1.0
num_train_epochs                   3           passes over the train bin's prompts
max_steps                          -1          > 0 overrides epochs
per_device_train_batch_size        8           COMPLETIONS per device and step (prompts x generations)
gradient_accumulation_steps        1
generation_batch_size              null        completions generated at once (null = per-device batch x
                                               processes x steps_per_generation); must divide by
                                               num_generations (checked at parse)
steps_per_generation               null        steps that reuse one generation batch (null = accumulation)
use_vllm                           "auto"      generate with vLLM: auto = on a CUDA device; false =
                                               transformers' generate (CPU)
vllm_mode                          "colocate"  colocate: vLLM in the training process on the job's GPU;
                                               server: a ``trl vllm-serve`` server (other GPUs)
vllm_gpu_memory_utilization        0.3         colocate: share of the GPU vLLM takes (weights + KV cache)
vllm_tensor_parallel_size          1           colocate: must be 1 (one GPU per job)
vllm_max_model_length              null        colocate: vLLM's context (null = prompt + completion)
vllm_server_base_url               null        server: its URL (else host and port)
vllm_server_host, _port, _timeout  0.0.0.0, 8000, 240
logging_steps                      1           crossdiff's (TRL: 10): a reward value per step
schedule, schedule_args            null        set by the run's train set only (``study.train_sets.<name>.schedule``:
                                               E2H Reasoner's task sampler, crossdiff.finetune.grpo_schedule);
                                               refused in the grpo layers
=================================  ==========  ==========================================================

A GRPO job is one training process (world size 1): on a GPU job one GPU, shared with vLLM in colocate mode; server
mode generates on the server's GPUs. Its batch rule (TRL's): ``generation_batch_size % num_generations == 0``.
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError

DEFAULTS: dict = {
    "num_generations": 8,
    "max_completion_length": None,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "beta": 0.0,
    "epsilon": 0.2,
    "epsilon_high": None,
    "loss_type": "dapo",
    "scale_rewards": "group",
    "num_iterations": 1,
    "mask_truncated_completions": False,
    "learning_rate": 1e-6,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "num_train_epochs": 3,
    "max_steps": -1,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "generation_batch_size": None,
    "steps_per_generation": None,
    "use_vllm": "auto",
    "vllm_mode": "colocate",
    "vllm_gpu_memory_utilization": 0.3,
    "vllm_tensor_parallel_size": 1,
    "vllm_max_model_length": None,
    "vllm_server_base_url": None,
    "vllm_server_host": "0.0.0.0",
    "vllm_server_port": 8000,
    "vllm_server_timeout": 240,
    "logging_steps": 1,
    "schedule": None,
    "schedule_args": None,
}

#: keys of the resolved ``finetune`` settings a GRPO job uses as they are (crossdiff.finetune.settings)
SHARED = ("seed", "shuffle", "device", "bf16", "master_weights", "allow_pure_bf16", "save_dtype",
          "gradient_checkpointing", "attn_implementation", "optim", "adam_beta1", "adam_beta2", "lora",
          "quantization", "save_steps", "save_total_limit", "keep_checkpoints", "ddp_timeout")

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16 grpo_config.py
SCALE_REWARDS = ("group", "batch", "none")
#: settings that do not change what is trained: left out of the resume fingerprint
NOT_FINGERPRINTED = {"ddp_timeout", "keep_checkpoints", "save_total_limit", "save_steps", "logging_steps", "save_dtype",
                     "vllm_server_timeout"}


def _int(s, key, low, null=False):
    v = s[key]
    if v is None and null:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CrossdiffError(f"grpo settings.{key}: expected an integer >= {low}{' or null' if null else ''}, got {v!r}")


def _num(s, key, low, high=None, low_open=False):
    v = s[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if low_open else v >= low)
    if ok and high is not None:
        ok = v <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise CrossdiffError(f"grpo settings.{key}: expected a number {bound}, got {v!r}")


def validate_settings(s: dict) -> dict:
    """Check complete GRPO settings (every key of :data:`DEFAULTS` and :data:`SHARED`)."""
    s = dict(s)
    known = set(DEFAULTS) | set(SHARED)
    unknown = sorted(set(s) - known)
    if unknown:
        raise CrossdiffError(f"grpo settings: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = sorted(known - set(s))
    if missing:
        raise CrossdiffError(f"grpo settings: key(s) {missing} missing: a job takes the settings the workflow resolved "
                             "at parse time (crossdiff.plan.settings.Plan.grpo), or use resolve_settings")
    _int(s, "num_generations", 2)
    _int(s, "max_completion_length", 1, null=True)
    _num(s, "temperature", 0, low_open=True)
    _num(s, "top_p", 0, 1, low_open=True)
    _int(s, "top_k", 0)
    _num(s, "beta", 0)
    _num(s, "epsilon", 0)
    if s["epsilon_high"] is not None:
        _num(s, "epsilon_high", 0)
    _int(s, "num_iterations", 1)
    _num(s, "learning_rate", 0, low_open=True)
    _num(s, "weight_decay", 0)
    _num(s, "max_grad_norm", 0)
    _num(s, "num_train_epochs", 0, low_open=True)
    if isinstance(s["max_steps"], bool) or not isinstance(s["max_steps"], int):
        raise CrossdiffError(f"grpo settings.max_steps: expected an integer (-1 = epochs), got {s['max_steps']!r}")
    _int(s, "per_device_train_batch_size", 1)
    _int(s, "gradient_accumulation_steps", 1)
    _int(s, "generation_batch_size", 1, null=True)
    _int(s, "steps_per_generation", 1, null=True)
    _int(s, "logging_steps", 1)
    _num(s, "vllm_gpu_memory_utilization", 0, 1, low_open=True)
    if not (isinstance(s["warmup_ratio"], (int, float)) and 0 <= s["warmup_ratio"] < 1):
        raise CrossdiffError(f"grpo settings.warmup_ratio: expected a number in [0, 1), got {s['warmup_ratio']!r}")
    choices = {"loss_type": LOSS_TYPES, "scale_rewards": SCALE_REWARDS, "use_vllm": ("auto", True, False),
               "vllm_mode": ("colocate", "server")}
    for key, allowed in choices.items():
        if s[key] not in allowed:
            raise CrossdiffError(f"grpo settings.{key}: expected one of {list(allowed)}, got {s[key]!r}")
    if s["generation_batch_size"] is not None and s["steps_per_generation"] is not None:
        raise CrossdiffError("grpo settings: generation_batch_size and steps_per_generation cannot both be set "
                             "(TRL derives one from the other)")
    if s["vllm_tensor_parallel_size"] != 1:
        raise CrossdiffError(f"grpo settings.vllm_tensor_parallel_size: {s['vllm_tensor_parallel_size']!r}; a GRPO job "
                             "has one GPU (colocate mode), so 1; for a larger model use vllm_mode: server")
    if s["quantization"] is not None:
        raise CrossdiffError(f"grpo settings.quantization {s['quantization']!r}: GRPO trains full weights or a LoRA "
                             "adapter (lora) on a bf16/fp32 base; QLoRA is not supported for GRPO")
    if s["master_weights"] == "bf16" and not s["allow_pure_bf16"]:
        from crossdiff.finetune.settings import PURE_BF16_MESSAGE

        raise CrossdiffError(PURE_BF16_MESSAGE.replace("finetune settings", "grpo settings"))
    batch_problem = batch_message(s)
    if batch_problem:
        raise CrossdiffError(batch_problem)
    if s["schedule"] is not None:
        from crossdiff.study.schedules import check_args

        s["schedule_args"] = check_args(s["schedule"], s["schedule_args"], 1, "grpo settings")
        if not s["shuffle"]:
            raise CrossdiffError("grpo settings: a schedule (E2H's task sampler) draws the prompts' order itself; "
                                 "shuffle: false (a fixed-order curriculum) cannot go with it")
    elif s["schedule_args"] is not None:
        raise CrossdiffError("grpo settings.schedule_args without a schedule")
    return s


def steps_per_generation(s: dict) -> int:
    """TRL's steps_per_generation: the setting, or derived (gradient accumulation, or generation_batch_size)."""
    if s["steps_per_generation"] is not None:
        return int(s["steps_per_generation"])
    if s["generation_batch_size"] is not None:
        return max(1, int(s["generation_batch_size"]) // int(s["per_device_train_batch_size"]))
    return int(s["gradient_accumulation_steps"])


def generation_batch_size(s: dict, world: int = 1) -> int:
    """Completions generated per round (TRL's rule, grpo_config.py :1096-1100)."""
    if s["generation_batch_size"] is not None:
        return int(s["generation_batch_size"])
    return int(s["per_device_train_batch_size"]) * world * steps_per_generation(s)


def batch_message(s: dict, world: int = 1) -> str | None:
    """TRL's divisibility rule: a generation batch holds whole groups of num_generations completions."""
    g, n = generation_batch_size(s, world), int(s["num_generations"])
    if g % n:
        how = ("generation_batch_size" if s["generation_batch_size"] is not None else
               f"per_device_train_batch_size ({s['per_device_train_batch_size']}) x steps_per_generation "
               f"({steps_per_generation(s)})")
        return (f"grpo settings: the generation batch of {g} completions ({how}) is not a multiple of num_generations "
                f"({n}): TRL generates whole groups of {n} completions per prompt. Make per_device_train_batch_size a "
                f"multiple of {n} (e.g. {n * max(1, -(-int(s['per_device_train_batch_size']) // n))}), or raise "
                f"gradient_accumulation_steps / steps_per_generation so that their product is")
    return None


def uses_vllm(s: dict, on_gpu: bool) -> bool:
    return bool(on_gpu) if s["use_vllm"] == "auto" else bool(s["use_vllm"])


def resolve_settings(settings: dict | None, finetune: dict | None = None) -> dict:
    """The Python API's entry: ``settings`` over :data:`DEFAULTS` over the shared keys of ``finetune`` (resolved by
    crossdiff.finetune.settings.resolve_settings), validated. Workflow jobs get them resolved by the Plan."""
    from crossdiff.config import deep_merge
    from crossdiff.finetune.settings import resolve_settings as resolve_finetune

    ft = resolve_finetune(dict(finetune or {}))
    shared = {k: ft[k] for k in SHARED}
    return validate_settings(deep_merge(shared, DEFAULTS, dict(settings or {})))


def launch_problems(s: dict, gpus: int) -> list[str]:
    """What stops a GRPO job on ``gpus`` GPUs before it starts: vLLM on a CPU job, a vLLM server without an address."""
    gpus = int(gpus or 0)
    on_gpu = gpus > 0 and s["device"] != "cpu"
    problems = []
    if s["use_vllm"] is True and not on_gpu:
        problems.append(f"use_vllm: true, but the job runs on the CPU (resources gpu {gpus}, device {s['device']!r}): "
                        "vLLM needs a CUDA GPU; use_vllm: auto generates with transformers on CPU")
    if uses_vllm(s, on_gpu) and s["vllm_mode"] == "colocate" and gpus > 1:
        problems.append(f"vllm_mode colocate runs vLLM beside the one training process on one GPU; this job gets {gpus}: "
                        "GRPO jobs take one GPU (crossdiff.finetune.grpo)")
    return problems
