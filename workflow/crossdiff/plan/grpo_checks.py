"""Checks before work of GRPO jobs and pass-rate measures (issue 29), on the resolver's values (every level).

Called from :func:`crossdiff.plan.checks.problems`; each problem names its config key. The GPU memory plan of GRPO
jobs is :func:`crossdiff.finetune.grpo_memory.study_plan` (workflow/rules/grpo.smk, ``resources.memory_check``).
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError


def grpo_gpus(plan, slug: str) -> int:
    """GPUs of a model's GRPO job: one when its fine-tunes get any (``resources.finetune`` / models[].resources), else 0."""
    return min(1, int(plan.resources("finetune", slug)["gpu"]))


def grpo_runs(plan) -> list[str]:
    return [r for r in plan.finetune_runs() if r.startswith("grpo-")]


def problems(plan) -> list[str]:
    from crossdiff.finetune.grpo_settings import launch_problems

    out = []
    if "grpo" in plan.study["methods"]:
        for name in plan.study_datasets():
            if not plan.items_table(name):
                out.append(f"study.methods grpo on dataset {name!r}: its items.source is none; GRPO's prompts and rewards "
                           "come from the item table (give the dataset items, or leave it out of study.datasets)")
                continue
            for slug in plan.models:
                try:
                    shared = plan.grpo(name, slug)
                    for run in grpo_runs(plan):
                        plan.grpo(name, slug, run)
                except CrossdiffError as exc:
                    out.append(str(exc))
                    continue
                out += [f"{plan.grpo_where(name, slug)}: {p}" for p in launch_problems(shared, grpo_gpus(plan, slug))]
    for name in plan.datasets:
        by = plan.dataset(name)["bins"]["by"]
        if not str(by).startswith("pass_rate:"):
            continue
        try:
            s = plan.pass_rate(name)
        except CrossdiffError as exc:
            out.append(str(exc))
            continue
        if not plan.items_table(name):
            out.append(f"datasets.{name}.bins.by = {by!r}: the pass rate samples the items' prompts, but items.source "
                       "is none")
        if s["backend"] == "vllm" and not plan.config["resources"]["evaluate"]["gpu"]:
            out.append(f"datasets.{name}.bins.pass_rate.backend is 'vllm' but resources.evaluate.gpu is 0: vLLM needs a "
                       "CUDA GPU (backend auto samples with transformers on CPU)")
    return list(dict.fromkeys(out))
