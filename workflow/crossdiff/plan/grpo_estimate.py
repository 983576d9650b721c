"""The cost of a GRPO row of ``crossdiff estimate`` (issue 29; :mod:`crossdiff.plan.estimate` calls
:func:`grpo_row` for ``study.methods: grpo``).

A GRPO job is one process on one GPU (:func:`crossdiff.plan.grpo_checks.grpo_gpus`) whose settings are the run's
``grpo`` settings (:meth:`crossdiff.plan.settings.Plan.grpo`), not SFT's. Per run of n prompts (the run's training
items, counted as for SFT) with G = ``num_generations``:

* completions C = ``max_steps`` x ``per_device_train_batch_size`` x ``gradient_accumulation_steps`` when
  ``max_steps`` > 0, else ``num_train_epochs`` x n x G (TRL repeats each prompt G times per epoch);
* each completion is the evaluation prompt (P tokens: the dataset profile's prefill, the prompt evaluation
  renders) + at most L = ``max_completion_length`` tokens: every completion is counted at L, an upper bound
  (a completion that stops early costs less);
* training tokens = C x (P + L) x ``num_iterations``; FLOPs 6 (LoRA: 4) x params x those tokens at the
  training speed;
* generation: 2 x params x C x P at the prefill speed + 2 x params x C x L at the decoding speed (the same
  roofline as evaluation's decoding: a batched vLLM generation runs faster, so this is an upper bound too);
* a reference model (``beta`` > 0): one more forward pass, 2 x params x C x (P + L) at the prefill speed.

``train_gpu_h`` is their sum (one GPU); disk as SFT's from the GRPO settings (checkpoints every ``save_steps``
of C / (per-device batch x accumulation) steps).
"""

from __future__ import annotations


def run_cost(g: dict, n_prompts: float, prompt_tokens: float, params: float | None, speed: dict) -> dict:
    """One GRPO run's completions, tokens and GPU-seconds (module docstring); ``g``: its resolved grpo settings."""
    G, L = int(g["num_generations"]), int(g["max_completion_length"])
    per_step = int(g["per_device_train_batch_size"]) * int(g["gradient_accumulation_steps"])
    if int(g.get("max_steps", -1)) > 0:
        completions = int(g["max_steps"]) * per_step
    else:
        completions = float(g["num_train_epochs"]) * n_prompts * G
    seq = prompt_tokens + L
    tokens = completions * seq * int(g["num_iterations"])
    out = {"completions": completions, "train_tokens": tokens, "generated_tokens": completions * L,
           "tokens_per_microbatch": int(g["per_device_train_batch_size"]) * seq, "seconds": None}
    if params is not None:
        train = (4 if g.get("lora") else 6) * params * tokens / speed["train"]
        gen = 2 * params * completions * (prompt_tokens / speed["prefill"] + L / speed["decode"])
        ref = 2 * params * completions * seq / speed["prefill"] if float(g["beta"]) > 0 and not g.get("lora") else 0.0
        out.update(seconds=train + gen + ref, train_s=train, generation_s=gen, reference_s=ref)
    return out


def grpo_row(plan, name: str, slug: str, row: dict, *, runs, n_prompts, prompt_tokens: float, params, cfg, speed: dict,
             disk, on_gpu: bool, job_s: float, io: float, delete_models: bool) -> dict:
    """Fill an estimate row (``_row``'s keys) for the GRPO runs ``runs`` (full labels ``grpo-...``).
    ``n_prompts(run)``: the run's training items; ``disk(cfg, settings, on_gpu, examples, gpus)``: estimate's
    ``_disk``; ``job_s``: start-up + reading the model, seconds per job; ``io``: bytes/s written."""
    from crossdiff.plan.grpo_checks import grpo_gpus

    examples = tokens = seconds = overhead = 0.0
    model_b = peak_b = kept_b = 0.0
    micro = []
    for run in runs:
        g = plan.grpo(name, slug, run)
        n = n_prompts(run)
        c = run_cost(g, n, prompt_tokens, params, speed)
        examples += n
        tokens += c["train_tokens"]
        micro.append(c["tokens_per_microbatch"])
        if params is not None:
            seconds += c["seconds"]
            d = disk(cfg, g, on_gpu=on_gpu, examples=c["completions"], gpus=1)
            model_b = max(model_b, d["model"])
            peak_b = max(peak_b, d["ckpt_peak"] + d["model"])
            kept_b += d["ckpt_kept"] + (0 if delete_models else d["model"])
            overhead += job_s + (d["saves"] * d["ckpt"] + d["model"]) / io
    row.update(fine_tunes=len(runs), train_examples=round(examples), train_tokens=round(tokens),
               tokens_from="grpo",
               tokens_per_microbatch=round(sum(micro) / len(micro)) if micro else None,
               gpus_per_job=max(1, grpo_gpus(plan, slug)))
    if params is not None and runs:
        row.update(train_gpu_h=seconds / 3600, model_gb=model_b / 1e9, peak_gb_per_job=peak_b / 1e9,
                   kept_gb=kept_b / 1e9, overhead_gpu_h=overhead / 3600,
                   wall_h_per_job=(seconds + overhead) / 3600 / len(runs))
    return row
