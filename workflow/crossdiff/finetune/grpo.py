"""``crossdiff grpo``: reinforcement learning on one train bin with verifiable rewards (TRL's GRPOTrainer).

The run's training data is the SFT data file of the same design label (``results/sft/{dataset}/<label>.jsonl``, its
item ids in file order: a bin, a train set, a subsample or a curriculum), joined to the item table. Each item
becomes one GRPO prompt: its EVALUATION prompt (:class:`crossdiff.prompts.reward.Scorer`: the task's text,
chat-rendered through :func:`crossdiff.prompts.chat.render_chat` when the format uses the chat template; an lm-eval
task's own request), tokenized as lm-eval tokenizes a request. The reward of a completion is its evaluation score
(:meth:`Scorer.score`: exact match, GSM8K's filters, math-verify with the ``$..$`` retry, the chosen option, IFEval's
checkers, an lm-eval task's per-sample metric). ``num_generations`` completions per prompt form a group; GRPO's
advantage is each completion's reward against its group's mean.

Generation: vLLM on a GPU (``use_vllm: auto``; ``vllm_mode: colocate`` shares the job's one GPU, ``server`` uses a
``trl vllm-serve`` server), transformers' ``generate`` on CPU. Curricula (``shuffle: false`` from the design) sample
the prompts in file order (TRL's RepeatSampler without shuffling); other runs shuffle with the run's seed.

What SFT and GRPO share (:mod:`crossdiff.finetune`): the precision plan (fp32 master weights, bf16 compute on GPUs),
LoRA merged before saving, checkpoints every ``save_steps`` in ``OUTPUT.work`` with resume from the newest complete
one of the same inputs, the one-owner lock, the share of changed weights, the bf16-save warning, the saved dtype in
config.json. One process per job (world size 1).

``train_metrics.json`` adds the GRPO diagnostics (:func:`diagnostics`): ``reward_curve`` ([{step, reward}], the mean
reward of each logged step), ``learnable_share`` (the share of prompt groups whose rewards differ, counted from the
recorded groups; ``learnable_share_trl`` from TRL's ``frac_reward_zero_std``, valid with scale_rewards group/none),
completion lengths and, with ``beta > 0``, the KL. Every group is recorded in ``OUTPUT/reward_groups.jsonl``
(step, item_id, the G rewards). ``reward_start`` / ``reward_end``: the mean reward over the first / last quarter of
the logged steps (1 to 10 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from crossdiff.cli import json_arg
from crossdiff.compute import require_device
from crossdiff.errors import CrossdiffError
from crossdiff.finetune.checkpoints import completion_callback, fingerprint, last_complete_checkpoint, prepare_work_dir
from crossdiff.finetune.grpo_settings import NOT_FINGERPRINTED, resolve_settings, uses_vllm
from crossdiff.finetune.owner import owned
from crossdiff.io import atomic_path, iter_jsonl, write_json
from crossdiff.prompts.reward import Scorer, encode_prompt, load_items, record_json

GROUPS_FILE = "reward_groups.jsonl"
REWARD_NAME = "verifiable_reward"


# ------------------------------------------------------------------------------------------- data
def read_train_data(path, levels: bool = False) -> tuple[list[str], list[int] | None]:
    """The item ids of a run's training data (an SFT data JSONL), in file order, and with ``levels`` each row's
    level for a scheduled run: the rank of its ``bin`` among the file's bins (0 = the easiest), E2H's ``level``."""
    p = Path(path)
    if not p.exists():
        raise CrossdiffError(f"{p}: training data not found")
    ids, bins = [], []
    for n, row in iter_jsonl(p):
        if row.get("item_id") is None:
            raise CrossdiffError(f"{p}: line {n}: no item_id (GRPO joins the run's items to the item table by it)")
        ids.append(str(row["item_id"]))
        if levels:
            b = row.get("bin")
            if isinstance(b, bool) or not isinstance(b, int):
                raise CrossdiffError(f"{p}: line {n}: no integer 'bin' (a scheduled GRPO run draws its prompts by "
                                     "level, the rank of their bin; crossdiff make-train-set writes it)")
            bins.append(b)
    if not ids:
        raise CrossdiffError(f"{p}: no training examples")
    if not levels:
        return ids, None
    rank = {b: k for k, b in enumerate(sorted(set(bins)))}
    return ids, [rank[b] for b in bins]


def make_reward(scorer: Scorer):
    """TRL reward function: each completion's evaluation score (the ``record`` column carries what scoring needs)."""
    def verifiable_reward(prompts, completions, completion_ids=None, record=None, **_):
        out = []
        for rec, completion in zip(record, completions):
            if isinstance(completion, list):  # conversational completions (not used: prompts are rendered text)
                completion = completion[-1]["content"]
            out.append(float(scorer.score(json.loads(rec), completion)["reward"]))
        return out

    verifiable_reward.__name__ = REWARD_NAME
    return verifiable_reward


# ------------------------------------------------------------------------------------------- groups
class GroupRecorder:
    """Every prompt group's rewards, appended to ``path`` (JSONL) as generated: one row per group."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        kept = []
        if resume_step is not None and self.path.exists():  # a resumed run keeps the groups of the steps it keeps
            kept = [r for _, r in iter_jsonl(self.path) if int(r["step"]) <= resume_step]
        elif self.path.exists():
            self.path.unlink()
        self.groups = kept
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "w") as fh:
            for g in self.groups:
                fh.write(json.dumps(g) + "\n")

    def add(self, step: int, item_ids: list[str], rewards: list[float], num_generations: int) -> None:
        if len(item_ids) != len(rewards) or len(rewards) % num_generations:
            raise CrossdiffError(f"GRPO step {step}: {len(rewards)} rewards for {len(item_ids)} completions in groups "
                                 f"of {num_generations}")
        new = []
        for i in range(0, len(rewards), num_generations):
            ids = set(item_ids[i:i + num_generations])
            if len(ids) != 1:
                raise CrossdiffError(f"GRPO step {step}: a group of {num_generations} completions mixes items {sorted(ids)}")
            r = [float(x) for x in rewards[i:i + num_generations]]
            new.append({"step": int(step), "item_id": item_ids[i], "rewards": r, "learnable": differs(r)})
        self.groups += new
        with open(self.path, "a") as fh:
            for g in new:
                fh.write(json.dumps(g) + "\n")


def differs(rewards: list[float]) -> bool:
    """A group with a learning signal: its rewards are not all equal (TRL: std not close to 0)."""
    return bool(rewards) and max(rewards) - min(rewards) > 1e-8


def learnable_share(groups: list[dict]) -> float | None:
    """Share of prompt groups whose rewards differ (Pikus et al.'s "learnable" prompts, counted per group)."""
    return sum(differs(g["rewards"]) for g in groups) / len(groups) if groups else None


def window(n: int) -> int:
    """Steps averaged at each end of a reward curve of n steps: a quarter of them, 1 to 10."""
    return max(1, min(10, n // 4))


def diagnostics(history: list[dict], groups: list[dict], s: dict, level_of: dict | None = None) -> dict:
    """The GRPO diagnostics of train_metrics.json from the Trainer's log history and the recorded groups;
    ``level_of`` (item_id -> level, a scheduled run) adds the drawn levels per step and at both ends."""
    logged = [h for h in history if "reward" in h and "step" in h]

    def curve(key, name=None):
        return [{"step": int(h["step"]), name or key: float(h[key])} for h in logged if h.get(key) is not None]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    rewards = curve("reward")
    frac = [h.get("frac_reward_zero_std") for h in logged]
    per_step: dict[int, list] = {}
    for g in groups:
        per_step.setdefault(int(g["step"]), []).append(g)
    out = {
        "method": "grpo",
        "reward_curve": rewards,
        "reward_first": rewards[0]["reward"] if rewards else None,
        "reward_last": rewards[-1]["reward"] if rewards else None,
        "reward_mean": mean([r["reward"] for r in rewards]),
        # the means over the first and the last quarter of the logged steps (at most 10 steps, at least 1): one
        # step's reward is the mean over its few prompts, which differ in difficulty
        "reward_start": mean([r["reward"] for r in rewards[:window(len(rewards))]]),
        "reward_end": mean([r["reward"] for r in rewards[len(rewards) - window(len(rewards)):]]),
        "reward_std_curve": curve("reward_std"),
        "learnable_share": learnable_share(groups),
        "learnable_share_trl": (mean([1.0 - f for f in frac if f is not None])
                                if s["scale_rewards"] in ("group", "none") else None),
        "learnable_curve": [{"step": st, "learnable_share": learnable_share(gs)} for st, gs in sorted(per_step.items())],
        "n_groups": len(groups),
        "n_learnable_groups": sum(differs(g["rewards"]) for g in groups),
        "completion_length": mean([h.get("completions/mean_length") for h in logged]),
        "completion_length_curve": curve("completions/mean_length", "mean_length"),
        "completion_clipped_ratio": mean([h.get("completions/clipped_ratio") for h in logged]),
        "kl": mean([h.get("kl") for h in logged]) if float(s["beta"]) > 0 else None,
        "kl_curve": curve("kl") if float(s["beta"]) > 0 else [],
    }
    if level_of is not None:
        K = max(level_of.values()) + 1
        lv = {st: [int(level_of[str(g["item_id"])]) for g in gs] for st, gs in sorted(per_step.items())}
        out["level_curve"] = [{"step": st, "mean_level": sum(v) / len(v), "counts": [v.count(k) for k in range(K)]}
                              for st, v in lv.items()]
        means = [c["mean_level"] for c in out["level_curve"]]
        # the mean drawn level over the first and the last quarter of the steps, as reward_start / reward_end
        out["level_start"] = mean(means[:window(len(means))])
        out["level_end"] = mean(means[len(means) - window(len(means)):])
    return out


# ------------------------------------------------------------------------------------------- trainer
def grpo_config_kwargs(s: dict, work_dir, *, on_gpu: bool, prec: dict, grad_ckpt: bool) -> dict:
    """GRPOConfig's arguments for resolved settings (tests build a real GRPOConfig from them under the pinned TRL)."""
    vllm = uses_vllm(s, on_gpu)
    out = dict(
        output_dir=str(work_dir),
        num_train_epochs=s["num_train_epochs"],
        max_steps=s["max_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type=s["lr_scheduler_type"],
        warmup_steps=float(s["warmup_ratio"]),  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=s["weight_decay"],
        adam_beta1=s["adam_beta1"],
        adam_beta2=s["adam_beta2"],
        max_grad_norm=s["max_grad_norm"],
        optim=s["optim"],
        per_device_train_batch_size=s["per_device_train_batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        generation_batch_size=s["generation_batch_size"],
        steps_per_generation=s["steps_per_generation"],
        num_generations=s["num_generations"],
        max_completion_length=s["max_completion_length"],
        temperature=s["temperature"],
        top_p=s["top_p"],
        top_k=s["top_k"],
        repetition_penalty=1.0,
        beta=s["beta"],
        epsilon=s["epsilon"],
        epsilon_high=s["epsilon_high"],
        loss_type=s["loss_type"],
        scale_rewards=s["scale_rewards"],
        num_iterations=s["num_iterations"],
        mask_truncated_completions=s["mask_truncated_completions"],
        shuffle_dataset=bool(s["shuffle"]),  # curricula: prompts in file order
        seed=s["seed"],
        data_seed=s["seed"],
        bf16=prec["compute_bf16"],
        fp16=False,
        gradient_checkpointing=grad_ckpt,
        use_cpu=not on_gpu,
        use_vllm=vllm,
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",
        save_steps=s["save_steps"],
        save_total_limit=s["save_total_limit"],
        save_only_model=False,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        log_completions=False,
        ddp_timeout=int(s["ddp_timeout"]),
        disable_tqdm=False,
    )
    if vllm:
        out.update(vllm_mode=s["vllm_mode"], vllm_tensor_parallel_size=s["vllm_tensor_parallel_size"],
                   vllm_gpu_memory_utilization=s["vllm_gpu_memory_utilization"],
                   vllm_max_model_length=s["vllm_max_model_length"], vllm_server_base_url=s["vllm_server_base_url"],
                   vllm_server_host=s["vllm_server_host"], vllm_server_port=s["vllm_server_port"],
                   vllm_server_timeout=float(s["vllm_server_timeout"]))
    return out


def _trainer_class():
    from trl import GRPOTrainer

    class CrossdiffGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer with lm-eval's prompt tokenization and every group's rewards recorded; a scheduled
        run (``level_schedule``) samples its prompts with E2H's task sampler (crossdiff.finetune.grpo_schedule)."""

        recorder: GroupRecorder | None = None
        level_schedule: dict | None = None  # {"name", "args", "levels", "rounds"}

        def _get_train_sampler(self, dataset=None):
            if self.level_schedule is None:
                return super()._get_train_sampler(dataset)
            from crossdiff.finetune.grpo_schedule import make_sampler

            sch = self.level_schedule
            # TRL 1.16's RepeatSampler contract (grpo_trainer.py:1306-1313): one round of prompts per generation
            return make_sampler(
                sch["levels"], name=sch["name"], args=sch["args"],
                batch_size=self.args.generation_batch_size // self.num_generations,
                mini_repeat_count=self.num_generations,
                repeat_count=self.num_iterations * self.args.steps_per_generation,
                seed=self.args.seed, total=sch["rounds"])

        def _tokenize_prompts(self, prompts: list):
            if prompts and isinstance(prompts[0], str):  # rendered prompts: encoded as lm-eval encodes a request
                return [encode_prompt(self.processing_class, p) for p in prompts], None, {}
            return super()._tokenize_prompts(prompts)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered
            if self.recorder is not None and self.model.training:
                from accelerate.utils import gather_object

                ids = gather_object([str(x["item_id"]) for x in inputs])
                if self.accelerator.is_main_process:
                    self.recorder.add(self.state.global_step + 1, ids, rewards[:, 0].tolist(), self.num_generations)
            return rewards

    return CrossdiffGRPOTrainer


def build_trainer(model_path, rows: list[dict], work_dir, s: dict, scorer: Scorer, callbacks=(),
                  recorder: GroupRecorder | None = None, levels: list[int] | None = None):
    """(trainer, tokenizer, runtime): the GRPO trainer of one job (``rows``: the items, in training order;
    ``levels``: each row's level when the settings have a ``schedule``)."""
    from crossdiff.hub import offline_env

    offline_env(model_path)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from crossdiff.compute import deterministic_torch
    from crossdiff.finetune.settings import precision_plan
    from crossdiff.finetune.train import choose_device

    device = choose_device(s)
    deterministic_torch(device)
    on_gpu = device == "cuda"
    vllm = uses_vllm(s, on_gpu)
    if vllm:
        from importlib.util import find_spec

        if find_spec("vllm") is None:
            raise CrossdiffError("grpo settings.use_vllm is on (auto: on a CUDA device) but vllm is not installed: pip "
                                 "install -r envs/requirements-gpu.txt, or set grpo.use_vllm: false (transformers' generate)")
    prec = precision_plan(s, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    grad_ckpt = on_gpu and s["gradient_checkpointing"] in (True, "auto")
    cfg_kwargs = grpo_config_kwargs(s, work_dir, on_gpu=on_gpu, prec=prec, grad_ckpt=grad_ckpt)
    if s["schedule"] is not None:
        from crossdiff.finetune.grpo_schedule import scheduled_max_steps

        if levels is None or len(levels) != len(rows):
            raise CrossdiffError("a scheduled GRPO run needs a level for every training row")
        per_step = int(s["per_device_train_batch_size"]) * int(s["gradient_accumulation_steps"]) // int(s["num_generations"])
        cfg_kwargs["max_steps"] = scheduled_max_steps(s, len(rows), per_step)
    config = GRPOConfig(**cfg_kwargs)
    kwargs = {"dtype": torch.bfloat16 if prec["master_dtype"] == "bf16" else torch.float32}
    if s["attn_implementation"]:
        kwargs["attn_implementation"] = s["attn_implementation"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    except OSError as exc:
        raise CrossdiffError(f"{model_path}: cannot load model/tokenizer: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    records = scorer.records(rows, tokenizer)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "item_id": r["item_id"], "record": record_json(r)}
                                 for r in records])
    peft_config = None
    if s["lora"]:
        from peft import LoraConfig

        lo = s["lora"]
        peft_config = LoraConfig(r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
                                 target_modules=lo["target_modules"], task_type="CAUSAL_LM")
    cls = _trainer_class()
    trainer = cls(model=model, reward_funcs=make_reward(scorer), args=config, train_dataset=dataset,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=[completion_callback(), *callbacks])
    trainer.recorder = recorder
    if s["schedule"] is not None:
        from crossdiff.finetune.grpo_schedule import total_rounds

        trainer.level_schedule = {"name": s["schedule"], "args": s["schedule_args"], "levels": list(levels),
                                  "rounds": total_rounds(config.max_steps, config.gradient_accumulation_steps,
                                                         config.steps_per_generation, config.num_iterations)}
    prompt_tokens = [len(encode_prompt(tokenizer, r["prompt"])) for r in records]
    runtime = {
        "device": device,
        "bf16": prec["compute_bf16"],
        "precision": prec["mode"],
        "save_dtype": prec["save_dtype"],
        "gradient_checkpointing": grad_ckpt,
        "chat_template": scorer.fmt.use_chat(tokenizer) if scorer.lm_eval is None else None,
        "engine": "single",
        "world_size": 1,
        "generation": ("vllm-" + s["vllm_mode"]) if vllm else "transformers",
        "generation_batch_size": config.generation_batch_size,
        "steps_per_generation": config.steps_per_generation,
        "prompts_per_generation": config.generation_batch_size // s["num_generations"],
        "prompt_tokens_max": max(prompt_tokens),
        "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
        "reference_model": trainer.ref_model is not None,
    }
    if trainer.level_schedule is not None:
        sch = trainer.level_schedule
        runtime["schedule"] = {"name": sch["name"], "args": sch["args"], "rounds": sch["rounds"],
                               "max_steps": config.max_steps, "levels": max(levels) + 1,
                               "prompts_per_level": [levels.count(k) for k in range(max(levels) + 1)]}
    return trainer, tokenizer, runtime


# ------------------------------------------------------------------------------------------- the job
def _default_work_dir(output: Path) -> Path:
    return output.with_name(output.name + ".work")


def grpo(model_path, train_path, items_path, output, work_dir=None, settings: dict | None = None,
         prompt: dict | None = None, dataset: str = "items", callbacks=(), finetune: dict | None = None) -> dict:
    """Train one GRPO job and save the model atomically into ``output``; returns train_metrics.json's dict.

    The workflow passes settings resolved at parse time (:meth:`crossdiff.plan.settings.Plan.grpo`); a standalone
    call's missing keys are filled by :func:`crossdiff.finetune.grpo_settings.resolve_settings` (GRPO keys over
    TRL's defaults over the shared keys of ``finetune``, itself over crossdiff's SFT defaults)."""
    from crossdiff.finetune.grpo_settings import DEFAULTS, SHARED, validate_settings

    s = dict(settings or {})
    if set(DEFAULTS) | set(SHARED) <= set(s):
        s = validate_settings(s)
    else:
        s = resolve_settings(s, finetune)
    scorer = Scorer(prompt, dataset)
    if s["max_completion_length"] is None:
        s["max_completion_length"] = int(scorer.fmt.max_gen_toks)
    require_device(s["device"], "finetune.device")  # before anything is read or loaded
    ids, levels = read_train_data(train_path, levels=s["schedule"] is not None)
    rows = load_items(items_path, ids)
    output = Path(output)
    work_dir = Path(work_dir) if work_dir else _default_work_dir(output)
    with owned(work_dir):
        try:
            return _grpo_owned(model_path, train_path, rows, output, work_dir, s, scorer, callbacks, levels)
        except BaseException:
            if work_dir.is_dir() and not any(p.name.startswith("checkpoint-") for p in work_dir.iterdir()):
                shutil.rmtree(work_dir, ignore_errors=True)
            raise


def _grpo_owned(model_path, train_path, rows, output, work_dir, s, scorer, callbacks, levels=None) -> dict:
    from crossdiff.finetune.weights import resolve_model_dir

    model_dir = resolve_model_dir(model_path)
    fp_settings = {k: v for k, v in s.items() if k not in NOT_FINGERPRINTED}
    fp_ids = [str(r["item_id"]) for r in rows]
    if levels is not None:  # a scheduled run's levels are part of what it trains on
        fp_ids = [f"{i}@{lv}" for i, lv in zip(fp_ids, levels)]
    fp = fingerprint(model_dir, fp_ids, {"method": "grpo", **fp_settings},
                     scorer.fmt.to_config(), 1)
    prepare_work_dir(work_dir, output, fp, {"model": str(model_path), "train": str(train_path), "processes": 1,
                                            "method": "grpo"})
    metrics = train_and_save(model_path, model_dir, train_path, rows, output, work_dir, s, scorer, callbacks, levels)
    if not s["keep_checkpoints"]:
        shutil.rmtree(work_dir, ignore_errors=True)
    return metrics


def train_and_save(model_path, model_dir, train_path, rows, output, work_dir, s, scorer, callbacks=(),
                   levels=None) -> dict:
    import torch

    from crossdiff.finetune.grpo_memory import check_before_training
    from crossdiff.finetune.train import _peak_gpu_gb, bf16_save_warnings, mean_train_loss, saved_dtype_in_config
    from crossdiff.finetune.weights import changed_share, optimizer_state_dtype

    check_before_training(model_path, model_dir, s)
    resume = last_complete_checkpoint(work_dir)
    resume_step = int(Path(resume).name.split("-")[-1]) if resume else None
    recorder = GroupRecorder(Path(work_dir) / GROUPS_FILE, resume_step)
    trainer, tokenizer, runtime = build_trainer(model_dir, rows, work_dir, s, scorer, callbacks, recorder, levels)
    if resume:
        print(f"resuming from {resume} (step {resume_step}); {len(recorder.groups)} recorded group(s) kept", flush=True)
    t0 = time.time()
    state = json.loads((Path(resume) / "trainer_state.json").read_text()) if resume else {}
    if resume and int(state.get("global_step") or 0) >= int(state.get("max_steps") or 0) > 0:
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        print(f"{resume} is the final step: saving it without training", flush=True)
    else:
        trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - t0
    param_dtype = str(next(trainer.model.parameters()).dtype).replace("torch.", "")
    optim_dtype = optimizer_state_dtype(trainer.optimizer)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if s["lora"]:
        model = model.merge_and_unload()
    state_dict = model.state_dict()
    weights = changed_share(state_dict, model_dir)
    weights["warnings"] = bf16_save_warnings(weights, runtime["save_dtype"])
    for w in weights["warnings"]:
        print(f"WARNING: {w}", flush=True)
    dtype = torch.bfloat16 if runtime["save_dtype"] == "bf16" else torch.float32
    state_dict = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
    model.config.dtype = dtype
    history = trainer.state.log_history
    level_of = None if levels is None else {str(r["item_id"]): lv for r, lv in zip(rows, levels)}
    diag = diagnostics(history, recorder.groups, s, level_of)
    n_completions = len(recorder.groups) * int(s["num_generations"])
    metrics = {
        "model": str(model_path),
        "train_data": str(train_path),
        "n_examples": len(rows),
        "global_step": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "resumed_from": resume,
        "resumed_from_step": resume_step,
        "wall_seconds": wall,
        "completions": n_completions,
        "generations_per_second": n_completions / wall if wall > 0 else None,
        "train_loss": mean_train_loss(history),
        "loss_curve": [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"],
                        "learning_rate": h.get("learning_rate")} for h in history if "loss" in h],
        **diag,
        "param_dtype": param_dtype,
        "optimizer_state_dtype": optim_dtype,
        **weights,
        "settings": s,
        "prompt": scorer.fmt.to_config(),
        "peak_gpu_gb": _peak_gpu_gb(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **runtime,
    }
    with atomic_path(output, directory=True) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        saved_dtype_in_config(Path(tmp) / "config.json", runtime["save_dtype"])
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(recorder.path, Path(tmp) / GROUPS_FILE)
        write_json(metrics, Path(tmp) / "train_metrics.json")
    print(f"GRPO on {len(rows)} prompts x {s['num_generations']} generations ({runtime['generation']}, "
          f"{runtime['precision']}): {metrics['global_step']} steps in {wall:.1f} s; reward {diag['reward_first']} -> "
          f"{diag['reward_last']} (first / last quarter of the steps: {diag['reward_start']} -> {diag['reward_end']}), "
          f"learnable share {diag['learnable_share']}, share of parameters changed "
          f"{weights.get('share_changed')}; saved to {output}", flush=True)
    return metrics


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--train", required=True, help="the run's training data (JSONL with item_id, from make-sft-data / "
                                                  "make-train-set): the prompts, in this order")
    p.add_argument("--items", required=True, help="item table (parquet): the items' fields for prompts and rewards")
    p.add_argument("--output", required=True, help="directory for the trained model")
    p.add_argument("--work-dir", help="checkpoint directory (default: OUTPUT.work); kept across reruns for resume")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: resolved GRPO settings (grpo_settings.py)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--dataset", default="items", help="dataset name (messages, lm-eval tasks)")
    p.add_argument("--metrics-copy", help="also write train_metrics.json here (it stays when the model is deleted)")


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    metrics = grpo(args.model, args.train, args.items, args.output, args.work_dir, args.settings, args.prompt,
                   args.dataset)
    if args.metrics_copy:
        write_json(metrics, args.metrics_copy)
    sys.stdout.flush()

