# {run}: bin<b> (the paper's design), or set-<name> / -n<size> / -seed<s> (crossdiff.study.designs)
rule finetune:
    input:
        base=base_model_input,
        train=sft_data_path,
    output:
        **finetuned_metrics_output(),
        model=finetuned_model_output(),
    log:
        "logs/finetune/{model}/{dataset}/{run}.log",
    wildcard_constraints:
        run=study_methods.trained_pattern(design.RUN_PATTERN, train_rule="finetune"),
    threads: lambda wc: finetune_resources(wc.model)["threads"]
    resources:
        # resources nodes > 1: nodes, tasks, mpi, slurm_extra (finetune_common.smk)
        **finetune_multinode_resources(),
        gpu=lambda wc: finetune_job_gpus(wc.model),
        # ONE SLURM task holding all the job's GPUs (its command starts the ranks): 0 keeps the
        # slurm plugin from adding --ntasks-per-gpu even when a profile sets `tasks`
        tasks_per_gpu=0,
        mem_mb=lambda wc, attempt: finetune_mem_mb(wc.model) * attempt,
        runtime=lambda wc, attempt: finetune_resources(wc.model)["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=run_settings,
        prompt=lambda wc: prompt_json(wc.dataset),
        metrics_copy=metrics_copy_arg,
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + finetune_gpu_prefix()
        + "crossdiff finetune --model {params.base} "
        "--train {input.train:q} --output {output.model:q} --settings {params.settings} "
        "--prompt {params.prompt} --gpus {resources.gpu}"
        + finetune_nodes_arg()
        + " {params.metrics_copy} > {log:q} 2>&1"
