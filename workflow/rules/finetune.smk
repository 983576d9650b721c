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
        "crossdiff make-sft-data --items {input.item_table:q} --bins {input.bins:q} "
        "--bin {wildcards.b} --prompt {params.prompt} --output {output:q} > {log:q} 2>&1"


# Training data of the other study designs (crossdiff.study): a train set (set-<name>), a
# subsample (-n<size>), or both; curricula are written in training order.
rule make_train_set:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/{sftset}.jsonl",
    log:
        "logs/make_train_set/{dataset}/{sftset}.log",
    params:
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
        design=train_set_args,
    shell:
        "crossdiff make-train-set --items {input.item_table:q} --bins {input.bins:q} "
        "{params.design} --prompt {params.prompt} --output {output:q} > {log:q} 2>&1"


# {run}: bin<b> (the paper's design), or set-<name> / -n<size> / -seed<s> (crossdiff.study)
rule finetune:
    input:
        base=base_model_input,
        train=sft_data_path,
    output:
        directory("results/finetune/{model}/{dataset}/{run}"),
    log:
        "logs/finetune/{model}/{dataset}/{run}.log",
    threads: config["resources"]["finetune"]["threads"]
    resources:
        gpu=config["resources"]["finetune"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["finetune"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["finetune"]["runtime"] * attempt,
    params:
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=run_settings,
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("finetune")
        + "crossdiff finetune --model {params.base} "
        "--train {input.train:q} --output {output:q} --settings {params.settings} "
        "--prompt {params.prompt} > {log:q} 2>&1"
