# Fine-tuning helpers used by the finetune rule: per-model resources (crossdiff.plan.settings), the GPU
# prefix, the GPU memory plan at parse time (resources.memory_check), storage.


def finetune_resources(model):
    """resources.finetune < models[].resources, resolved once (crossdiff.plan.settings)."""
    return PLAN.resources("finetune", model)


def finetune_gpu_prefix():
    """`crossdiff gpu-run` with the job's own GPU count (per model; 0 = no GPU), or nothing when no
    model of the config fine-tunes on a GPU. Devices and lock dir are params (gpu_params, common.smk).
    """
    if not any(finetune_resources(m)["gpu"] for m in MODELS):
        return ""
    return (
        "crossdiff gpu-run --count {resources.gpu} --devices {params.gpu_devices:q} "
        "--lock-dir {params.gpu_lock_dir:q} -- "
    )


def check_finetune_memory():
    """The GPU memory / host RAM plan of every GPU fine-tune (crossdiff.plan.checks.memory_plan; the other
    settings checks already ran on the resolved settings). Returns {model: planned host mem_mb}.
    """
    from snakemake.exceptions import WorkflowError

    from crossdiff.errors import CrossdiffError

    try:
        return plan_checks.memory_plan(PLAN)
    except CrossdiffError as exc:
        raise WorkflowError(str(exc))


PLANNED_HOST_MB = check_finetune_memory() if study_datasets() else {}


def finetune_mem_mb(model):
    """resources mem_mb, raised to the host RAM plan of the model's fine-tune when that is larger."""
    return max(finetune_resources(model)["mem_mb"], PLANNED_HOST_MB.get(model, 0))


def finetuned_model_output():
    """The fine-tuned model; with storage.delete_finetuned_models a temp() that snakemake deletes once
    its evaluation has been written (--notemp keeps it)."""
    out = directory("results/finetune/{model}/{dataset}/{run}")
    return temp(out) if config["storage"]["delete_finetuned_models"] else out


def finetuned_metrics_output():
    """With deleted models, a copy of train_metrics.json that stays."""
    if not config["storage"]["delete_finetuned_models"]:
        return {}
    return {"metrics": "results/finetune/{model}/{dataset}/{run}.train_metrics.json"}


def metrics_copy_arg(wildcards, output):
    return (
        f"--metrics-copy {shlex.quote(output.metrics)}"
        if "metrics" in output.keys()
        else ""
    )
