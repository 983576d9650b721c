rule prepare_items:
    input:
        prepare_items_inputs,
    output:
        "results/items/{dataset}.parquet",
    log:
        "logs/prepare_items/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["items"]),
    shell:
        "crossdiff prepare-items --settings {params.settings} --dataset {wildcards.dataset} "
        "--output {output:q} > {log:q} 2>&1"
