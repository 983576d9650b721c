rule make_sft_data:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/bin{b}.jsonl",
    log:
        "logs/make_sft_data/{dataset}/bin{b}.log",
    params:
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
    shell:
        "crossdiff make-sft-data --items {input.item_table} --bins {input.bins} "
        "--bin {wildcards.b} --prompt {params.prompt} --output {output} > {log} 2>&1"


def finetune_resources(model):
    """resources.finetune, overridden key by key by the model's own models[].resources."""
    return {**config["resources"]["finetune"], **(MODELS[model].get("resources") or {})}


def finetune_gpu_prefix():
    """`crossdiff gpu-run` with the job's own GPU count (per model; 0 = no GPU), or nothing when no
    model of the config fine-tunes on a GPU. Not a param: see gpu_prefix in common.smk.
    """
    if not any(finetune_resources(m)["gpu"] for m in MODELS):
        return ""
    devices = config["gpus"]["devices"]
    devices = devices if isinstance(devices, str) else ",".join(map(str, devices))
    return (
        "crossdiff gpu-run --count {resources.gpu} "
        f"--devices {devices} --lock-dir {shlex.quote(config['gpus']['lock_dir'])} -- "
    )


def check_finetune_memory():
    """Stop the dry run when a model's fine-tune cannot fit its GPUs (crossdiff/memory_plan.py)."""
    import sys

    from snakemake.exceptions import WorkflowError

    from crossdiff.finetune.settings import resolve_settings, world_size
    from crossdiff.memory_plan import fit_message, read_config, settings_plan

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
            continue
        n = world_size(s, res["gpu"])
        msg = fit_message(
            m["id"], settings_plan(cfg, s, n), res["gpu"], res["gpu_mem_gb"]
        )
        if msg and mode == "error":
            raise WorkflowError(msg)
        if msg:
            print(f"warning: {msg}", file=sys.stderr)


if study_datasets():
    check_finetune_memory()


rule finetune:
    input:
        base=base_model_input,
        train="results/sft/{dataset}/bin{b}.jsonl",
    output:
        directory("results/finetune/{model}/{dataset}/bin{b}"),
    log:
        "logs/finetune/{model}/{dataset}/bin{b}.log",
    threads: lambda wc: finetune_resources(wc.model)["threads"]
    resources:
        gpu=lambda wc: finetune_resources(wc.model)["gpu"],
        mem_mb=lambda wc, attempt: finetune_resources(wc.model)["mem_mb"] * attempt,
        runtime=lambda wc, attempt: finetune_resources(wc.model)["runtime"] * attempt,
    params:
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=cli_json(config["finetune"]),
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + finetune_gpu_prefix()
        + "crossdiff finetune --model {params.base} "
        "--train {input.train:q} --output {output:q} --settings {params.settings} "
        "--prompt {params.prompt} --gpus {resources.gpu} > {log:q} 2>&1"
