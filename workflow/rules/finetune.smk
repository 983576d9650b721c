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


rule finetune:
    input:
        base=base_model_input,
        train="results/sft/{dataset}/bin{b}.jsonl",
    output:
        directory("results/finetune/{model}/{dataset}/bin{b}"),
    log:
        "logs/finetune/{model}/{dataset}/bin{b}.log",
    threads: config["resources"]["finetune"]["threads"]
    resources:
        gpu=config["resources"]["finetune"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["finetune"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["finetune"]["runtime"] * attempt,
    params:
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        settings=cli_json(config["finetune"]),
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("finetune")
        + "crossdiff finetune --model {params.base} "
        "--train {input.train:q} --output {output:q} --settings {params.settings} "
        "--prompt {params.prompt} > {log:q} 2>&1"
