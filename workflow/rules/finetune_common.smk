# Fine-tuning helpers used by the finetune rule: per-model resources, the GPU prefix, the
# memory-plan check at parse time (so `snakemake -n` stops an impossible fine-tune), storage.


@functools.cache
def finetune_resources(model):
    """resources.finetune, overridden key by key by the model's own models[].resources (read-only:
    cached, one dict per model)."""
    return {**config["resources"]["finetune"], **(MODELS[model].get("resources") or {})}


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
    """Stop the dry run when a model's fine-tune cannot run: batch split, GPU memory, host RAM
    (crossdiff/finetune/plan_check.py). Returns {model: planned host mem_mb}."""
    from snakemake.exceptions import WorkflowError

    from crossdiff.errors import CrossdiffError
    from crossdiff.finetune.plan_check import check_models
    from crossdiff.finetune.settings import resolve_settings

    mode = config["resources"]["memory_check"]
    if mode == "off":
        return {}
    # one check per distinct setting (datasets.<name>.finetune and models[].finetune may change batch,
    # length, checkpointing); each model requests the largest host plan of its fine-tunes
    by_setting = {}
    for d in study_datasets():
        for model in MODELS:
            s = finetune_config(d, model)
            entry = by_setting.setdefault(cli_json(s), (s, {}, []))
            entry[1][model] = MODELS[model]
            entry[2].append(d)
    planned = {}
    for s, models, names in by_setting.values():
        try:
            mem = check_models(
                models,
                resolve_settings(s),
                finetune_resources,
                config["resources"]["model_config_cache"],
                mode,
            )
        except CrossdiffError as exc:
            names = ", ".join(sorted(set(names)))
            raise WorkflowError(f"fine-tune settings of datasets {names}:\n{exc}")
        for model, mb in mem.items():
            planned[model] = max(planned.get(model, 0), mb)
    return planned


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
