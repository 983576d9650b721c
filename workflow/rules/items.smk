rule prepare_items:
    output:
        "results/items/{dataset}.parquet",
    log:
        "logs/prepare_items/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["items"]),
    shell:
        "crossdiff prepare-items --settings {params.settings} --dataset {wildcards.dataset} "
        "--output {output:q} > {log:q} 2>&1"


rule simulate_leaderboard:
    input:
        item_table="results/items/{dataset}.parquet",
    output:
        responses="results/simulated/{dataset}/responses.parquet",
        truth_items="results/simulated/{dataset}/truth_items.parquet",
        truth_models="results/simulated/{dataset}/truth_models.parquet",
    log:
        "logs/simulate_leaderboard/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["responses"]),
    shell:
        "crossdiff simulate-leaderboard --items {input.item_table:q} --settings {params.settings} "
        "--output {output.responses:q} --truth-items {output.truth_items:q} "
        "--truth-models {output.truth_models:q} > {log:q} 2>&1"
