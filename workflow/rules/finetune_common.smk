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
    """Stop the dry run when a model's fine-tune cannot fit its GPUs (crossdiff/finetune/memory_plan.py)."""
    import sys

    from snakemake.exceptions import WorkflowError

    from crossdiff.finetune.settings import resolve_settings, world_size
    from crossdiff.finetune.memory_plan import fit_message, read_config, settings_plan

    mode = config["resources"]["memory_check"]
    if mode == "off":
        return
    s = resolve_settings(config["finetune"])
    for model, m in MODELS.items():
        res = finetune_resources(model)
        if not res["gpu"] or m["build"] or s["device"] == "cpu":
            continue
        cfg = read_config(m["id"])
        if cfg is None:
            print(
                f"warning: memory plan skipped for {m['id']}: its config.json is neither local, "
                "cached nor downloadable now; each job checks again when it starts",
                file=sys.stderr,
            )
            continue
        n = world_size(s, res["gpu"])
        msg = fit_message(
            m["id"],
            settings_plan(cfg, s, n),
            res["gpu"],
            res["gpu_mem_gb"],
            replan=lambda g: settings_plan(cfg, s, g),
        )
        if msg and mode == "error":
            raise WorkflowError(msg)
        if msg:
            print(f"warning: {msg}", file=sys.stderr)


if study_datasets():
    check_finetune_memory()


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
