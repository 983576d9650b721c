# study.methods: grpo (issue 29): one GRPO job per model x dataset x run (crossdiff.finetune.grpo), evaluated on
# every bin by evaluate_checkpoint like SFT; the pass-rate difficulty (bins.by: pass_rate:<slug>); the GRPO jobs'
# diagnostics (reward curves, learnable shares) as a table and a figure of the report.


localrules:
    grpo_diagnostics,


# {run}: grpo-bin<b>, grpo-set-<name>[-n<size>][-seed<s>] (crossdiff.study.designs with the method's prefix)
rule finetune_grpo:
    input:
        base=base_model_input,
        train=grpo_train_data,
        item_table=lambda wc: items_table(wc.dataset),
        task_config=task_config_files,
    output:
        **finetuned_metrics_output(),
        model=finetuned_model_output(),
    log:
        "logs/finetune/{model}/{dataset}/{run}.log",
    wildcard_constraints:
        run=GRPO_RUN_PATTERN,
    threads: lambda wc: grpo_resources(wc.model)["threads"]
    resources:
        gpu=lambda wc: grpo_resources(wc.model)["gpu"],
        tasks_per_gpu=0,
        mem_mb=lambda wc, attempt: grpo_mem_mb(wc.model) * attempt,
        runtime=lambda wc, attempt: grpo_resources(wc.model)["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=lambda wc: grpo_settings_json(wc.dataset, wc.model, wc.run),
        prompt=lambda wc: prompt_json(wc.dataset),
        metrics_copy=metrics_copy_arg,
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + grpo_gpu_prefix()
        + "crossdiff grpo --model {params.base} --train {input.train:q} --items {input.item_table:q} "
        "--output {output.model:q} --settings {params.settings} --prompt {params.prompt} "
        "--dataset {wildcards.dataset} {params.metrics_copy} > {log:q} 2>&1"


# bins.by: pass_rate:<model slug>: k samples per item from that base model, scored as evaluation scores
# (one model load; independent of the bins: no cycle)
rule pass_rate_measure:
    input:
        base=measure_base_input,
        task_config=task_config_files,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        table="results/bins/{dataset}/pass_rate_measure.parquet",
        samples="results/bins/{dataset}/pass_rate_measure.samples.jsonl",
    log:
        "logs/pass_rate_measure/{dataset}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        model=lambda wc: measure_model(wc.dataset),
        base=lambda wc: shlex.quote(base_model_ref(measure_model(wc.dataset))),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: cli_json(PLAN.pass_rate(wc.dataset)),
        eval_settings=lambda wc: eval_settings_json(
            wc.dataset, measure_model(wc.dataset)
        ),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff pass-rate-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {params.model:q} --dataset {wildcards.dataset} "
        "--prompt {params.prompt} --settings {params.settings} --eval-settings {params.eval_settings} "
        "--output {output.table:q} > {log:q} 2>&1"


# bins.measures: pass_rate:<slug> of a model other than bins.by's (same job as rule pass_rate_measure; the
# sampling settings are the dataset's bins.pass_rate, the evaluation settings that model's)
rule pass_rate_measure_model:
    input:
        base=lambda wc: base_model_files(wc.model),
        task_config=task_config_files,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        table="results/bins/{dataset}/measures/pass_rate/{model}.parquet",
        samples="results/bins/{dataset}/measures/pass_rate/{model}.samples.jsonl",
    log:
        "logs/pass_rate_measure/{dataset}/{model}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: cli_json(PLAN.pass_rate(wc.dataset)),
        eval_settings=lambda wc: eval_settings_json(wc.dataset, wc.model),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff pass-rate-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {wildcards.model:q} --dataset {wildcards.dataset} "
        "--prompt {params.prompt} --settings {params.settings} --eval-settings {params.eval_settings} "
        "--output {output.table:q} > {log:q} 2>&1"


rule grpo_diagnostics:
    input:
        grpo_metrics_files,
    output:
        table=report(
            "results/tables/grpo_diagnostics.csv",
            caption="../report/grpo_diagnostics.rst",
            category="Results",
        ),
        figure=report(
            "results/figures/grpo_reward_curves.png",
            caption="../report/grpo_diagnostics.rst",
            category="Results",
        ),
    log:
        "logs/grpo_diagnostics.log",
    shell:
        "crossdiff grpo-diagnostics --metrics {input:q} --table {output.table:q} "
        "--figure {output.figure:q} > {log:q} 2>&1"
