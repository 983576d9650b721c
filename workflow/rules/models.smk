rule model_table:
    output:
        "results/models/models.tsv",
    log:
        "logs/model_table.log",
    params:
        ids=lambda wc: " ".join(shlex.quote(m["id"]) for m in config["models"]),
    shell:
        "crossdiff register-models --output {output:q} {params.ids} > {log:q} 2>&1"


rule build_base_model:
    input:
        item_table=lambda wc: (
            items_table(MODELS[wc.model]["warmup_dataset"])
            if MODELS[wc.model]["warmup_dataset"]
            else []
        ),
    output:
        directory("results/models/{model}"),
    log:
        "logs/build_base_model/{model}.log",
    threads: 2
    params:
        settings=lambda wc: cli_json(MODELS[wc.model]["build_settings"]),
        prompt=lambda wc: cli_json(
            prompt_of(MODELS[wc.model]["warmup_dataset"])
            if MODELS[wc.model]["warmup_dataset"]
            else {}
        ),
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} crossdiff build-base-model --output {output:q} "
        "{params.item_table} --settings {params.settings} --prompt {params.prompt} "
        "> {log:q} 2>&1"
