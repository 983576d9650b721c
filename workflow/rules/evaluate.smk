rule make_task:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        bins="results/bins/{dataset}/bins.parquet",
    output:
        directory("results/tasks/{dataset}/bin{t}"),
    log:
        "logs/make_task/{dataset}/bin{t}.log",
    params:
        prompt=lambda wc: prompt_json(wc.dataset),
    shell:
        "crossdiff make-task --items {input.item_table:q} --bins {input.bins:q} --bin {wildcards.t} "
        "--dataset {wildcards.dataset} --prompt {params.prompt} --output {output:q} > {log:q} 2>&1"


# One process per model: the model is loaded once and scored on every test bin in one
# lm-eval call. Any single cell (one bin's JSON) is still a valid target.
rule evaluate_zero_shot:
    input:
        base=base_model_input,
        task_config=task_config_files,
        tasks=expand("results/tasks/{{dataset}}/bin{t}", t=range(N_BINS)),
    output:
        results=expand(
            "results/eval/{{model}}/{{dataset}}/zero-shot/bin{t}.json", t=range(N_BINS)
        ),
        samples=expand(
            "results/eval/{{model}}/{{dataset}}/zero-shot/bin{t}.samples.jsonl",
            t=range(N_BINS),
        ),
    log:
        "logs/evaluate/{model}/{dataset}/zero-shot.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=eval_settings,
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff evaluate --model {params.base} "
        "--model-name {wildcards.model} --train-bin zero-shot --tasks {input.tasks:q} "
        "--outputs {output.results:q} --settings {params.settings} > {log:q} 2>&1"


# {trained}: train<b> for the fine-tune bin<b>, or another design's label (crossdiff.study.designs)
rule evaluate_checkpoint:
    input:
        checkpoint=lambda wc: (
            f"results/finetune/{wc.model}/{wc.dataset}/{PLAN.run_of_eval(wc.trained)}"
        ),
        task_config=task_config_files,
        tasks=expand("results/tasks/{{dataset}}/bin{t}", t=range(N_BINS)),
    output:
        results=expand(
            "results/eval/{{model}}/{{dataset}}/{{trained}}/bin{t}.json",
            t=range(N_BINS),
        ),
        samples=expand(
            "results/eval/{{model}}/{{dataset}}/{{trained}}/bin{t}.samples.jsonl",
            t=range(N_BINS),
        ),
    log:
        "logs/evaluate/{model}/{dataset}/{trained}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        settings=eval_settings,
        train=lambda wc: result_train_label(wc.trained),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff evaluate --model {input.checkpoint:q} "
        "--model-name {wildcards.model} --train-bin {params.train} --tasks {input.tasks:q} "
        "--outputs {output.results:q} --settings {params.settings} > {log:q} 2>&1"


# bins.by: zero_shot:<model slug>: that base model scored once on every item of the dataset
# (one task over all IRT items, independent of the bins: no cycle; one model load)
rule zero_shot_measure:
    input:
        base=measure_base_input,
        task_config=task_config_files,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        table="results/bins/{dataset}/zero_shot_measure.parquet",
        samples="results/bins/{dataset}/zero_shot_measure.samples.jsonl",
    log:
        "logs/zero_shot_measure/{dataset}.log",
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
        settings=lambda wc: eval_settings_json(wc.dataset, measure_model(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff zero-shot-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {params.model:q} --dataset {wildcards.dataset} "
        "--prompt {params.prompt} --settings {params.settings} --output {output.table:q} > {log:q} 2>&1"


# bins.by: loss:<model slug>: that base model's mean NLL of every item's training target
# (one model load, batched; independent of the bins: no cycle)
rule loss_measure:
    input:
        base=measure_base_input,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        "results/bins/{dataset}/loss_measure.parquet",
    log:
        "logs/loss_measure/{dataset}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),  # gpu_prefix names them
        model=lambda wc: measure_model(wc.dataset),
        base=lambda wc: shlex.quote(base_model_ref(measure_model(wc.dataset))),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: eval_settings_json(wc.dataset, measure_model(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff loss-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {params.model:q} --prompt {params.prompt} "
        "--settings {params.settings} --output {output:q} > {log:q} 2>&1"


# study.methods: icl. The base model with k demonstrations from each train bin's training items, on
# every test bin's items: every (k, train bin, test bin) cell of a model in one process, one model load
if icl_ks():

    rule evaluate_icl:
        input:
            base=base_model_input,
            item_table=model_items_table,  # a model with its own solutions: its demonstrations train targets
            bins="results/bins/{dataset}/bins.parquet",
            tasks=expand("results/tasks/{{dataset}}/bin{t}", t=range(N_BINS)),
        output:
            results=[
                f"results/eval/{{model}}/{{dataset}}/{label}/bin{t}.json"
                for label in icl_labels()
                for t in range(N_BINS)
            ],
            samples=[
                f"results/eval/{{model}}/{{dataset}}/{label}/bin{t}.samples.jsonl"
                for label in icl_labels()
                for t in range(N_BINS)
            ],
        log:
            "logs/evaluate/{model}/{dataset}/icl.log",
        threads: config["resources"]["evaluate"]["threads"]
        resources:
            gpu=config["resources"]["evaluate"]["gpu"],
            mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"]
            * attempt,
            runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"]
            * attempt,
        params:
            base=lambda wc: shlex.quote(base_model_ref(wc.model)),
            ks=" ".join(map(str, icl_ks())),
            train_bins=" ".join(map(str, train_bins())),
            seed=config["study"]["icl"]["seed"],
            settings=eval_settings,
        shell:
            "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
            + gpu_prefix("evaluate")
            + "crossdiff evaluate-icl --model {params.base} --model-name {wildcards.model} "
            "--tasks {input.tasks:q} --items {input.item_table:q} --bins {input.bins:q} "
            "--k {params.ks} --train-bins {params.train_bins} --seed {params.seed} "
            "--outdir results/eval/{wildcards.model}/{wildcards.dataset} "
            "--settings {params.settings} > {log:q} 2>&1"
