# Helpers of the GRPO rules (workflow/rules/grpo.smk; issue 29): resources, the GPU memory plan at parse time
# (crossdiff.finetune.grpo_memory), the run's training data, the diagnostics' inputs.
import crossdiff.plan.grpo_checks as grpo_checks

#: fine-tune folder labels of GRPO runs: grpo-<design run label> (crossdiff.study.designs)
GRPO_RUN_PATTERN = f"grpo-(?:{design.RUN_PATTERN})"


def grpo_resources(model):
    """resources.finetune < models[].resources, with one GPU at most: a GRPO job is one process (vLLM colocate
    shares its GPU; a vLLM server generates elsewhere)."""
    r = dict(PLAN.resources("finetune", model))
    r["gpu"] = grpo_checks.grpo_gpus(PLAN, model)
    return r


def check_grpo_memory():
    """The GPU memory plan of every GPU GRPO job (crossdiff.finetune.grpo_memory): the dry run stops on a plan
    that does not fit (resources.memory_check). Returns {model: planned host mem_mb}."""
    from snakemake.exceptions import WorkflowError

    from crossdiff.errors import CrossdiffError
    from crossdiff.finetune.grpo_memory import study_plan

    try:
        return study_plan(PLAN)
    except CrossdiffError as exc:
        raise WorkflowError(str(exc))


GRPO_PLANNED_HOST_MB = check_grpo_memory() if study_datasets() else {}


def grpo_mem_mb(model):
    return max(grpo_resources(model)["mem_mb"], GRPO_PLANNED_HOST_MB.get(model, 0))


def grpo_gpu_prefix():
    if not any(grpo_resources(m)["gpu"] for m in MODELS):
        return ""
    return (
        "crossdiff gpu-run --count {resources.gpu} --devices {params.gpu_devices:q} "
        "--lock-dir {params.gpu_lock_dir:q} -- "
    )


def grpo_train_data(wildcards):
    """The run's items in training order: the SFT data file of its design label (a bin, a train set, a
    subsample, a curriculum); GRPO reads their item ids, the item table gives prompts and rewards.
    """
    label = design.sft_label(study_methods.split_run(wildcards.run)[1])
    return f"results/sft/{wildcards.dataset}/{label}.jsonl"


@functools.cache
def grpo_settings_json(name, model, run):
    return cli_json(PLAN.grpo(name, model, run))


def grpo_metrics_files(wildcards=None):
    """Every GRPO job's train_metrics.json holder: the model folder, or its kept copy when models are deleted."""
    keep = config["storage"]["delete_finetuned_models"]
    return [
        f"results/finetune/{m}/{d}/{run}" + (".train_metrics.json" if keep else "")
        for d in study_datasets()
        for m in MODELS
        for run in grpo_checks.grpo_runs(PLAN)
    ]


def grpo_targets():
    if "grpo" not in config["study"]["methods"] or not study_datasets():
        return []
    return [
        "results/tables/grpo_diagnostics.csv",
        "results/figures/grpo_reward_curves.png",
    ]
