# Fine-tuning helpers used by the finetune rule: per-model resources (crossdiff.plan.settings), the GPU
# prefix, the GPU memory plan at parse time (resources.memory_check), storage.


from crossdiff.runtime.executor import snakemake_executor


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


# ---- one fine-tune on several nodes (resources nodes > 1; crossdiff.finetune.multinode) ----
def finetune_nodes(model):
    return finetune_resources(model)["nodes"]


def finetune_job_gpus(model):
    """The job's GPUs, all its nodes' (the slurm plugin's `gpu` is per job: sbatch --gpus)."""
    return finetune_resources(model)["gpu"] * finetune_nodes(model)


# refused at parse unless the executor is SLURM (crossdiff.plan.checks.executor_problems)
plan_checks.check_executor(PLAN, snakemake_executor())
MULTINODE = any(finetune_nodes(m) > 1 for m in MODELS)


def _if_multinode(value):
    """A resource only for the multi-node jobs; None drops the key for the others (snakemake's
    rules.expand_resources), so a one-node job is submitted exactly as before."""
    return lambda wc: value(wc.model) if finetune_nodes(wc.model) > 1 else None


def profile_gpu_model():
    """The gpu_model the profile (or --set-resources / --default-resources) gives the finetune rule: sbatch
    refuses a typed --gpus=<model>:N beside an untyped --gpus-per-node=G ("Invalid GRES specification (with
    and without type identification)", measured on SLURM 22.05), so --gpus-per-node takes the same type.
    """
    settings = workflow.resource_settings
    for res in (
        (settings.overwrite_resources or {}).get("finetune"),
        settings.default_resources,
    ):
        if res is None:
            continue
        for name, value in res.items():
            raw = getattr(value, "raw", None)
            if name == "gpu_model" and isinstance(raw, str) and raw:
                return raw.strip("'\"")
    return None


def finetune_multinode_resources():
    """The finetune rule's extra resources when some model spans several nodes ({} otherwise). With
    snakemake-executor-plugin-slurm 2.8, `mpi` makes sbatch --nodes=N --ntasks=N and its jobstep run the
    shell once on the first node without srun; the shell (crossdiff finetune --nodes N) starts one
    launcher per node itself. --gpus-per-node pins G GPUs on every node (a bare --gpus=N*G may split
    unevenly)."""
    if not MULTINODE:
        return {}
    gpu_type = f"{profile_gpu_model()}:" if profile_gpu_model() else ""
    return dict(
        nodes=_if_multinode(finetune_nodes),
        tasks=_if_multinode(finetune_nodes),
        mpi=_if_multinode(lambda m: "srun"),
        slurm_extra=_if_multinode(
            lambda m: f"--gpus-per-node={gpu_type}{finetune_resources(m)['gpu']}"
        ),
        finetune_nodes=lambda wc: finetune_nodes(wc.model),
    )


def finetune_nodes_arg():
    """`--nodes N` of crossdiff finetune, in configs with a multi-node model only (the command of every
    other config stays as it was)."""
    return " --nodes {resources.finetune_nodes}" if MULTINODE else ""
