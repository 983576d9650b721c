rule generate_benchmark:
    output:
        "results/items/{dataset}.parquet",
    log:
        "logs/generate_benchmark/{dataset}.log",
    params:
        n_items=lambda wc: dataset(wc.dataset)["items"]["n_items"],
        max_ops=lambda wc: dataset(wc.dataset)["items"]["max_ops"],
        max_digits=lambda wc: dataset(wc.dataset)["items"]["max_digits"],
        seed=lambda wc: dataset(wc.dataset)["items"]["seed"],
    shell:
        "crossdiff generate-benchmark --output {output} --n-items {params.n_items} "
        "--max-ops {params.max_ops} --max-digits {params.max_digits} "
        "--seed {params.seed} --prefix {wildcards.dataset} > {log} 2>&1"


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
        "crossdiff simulate-leaderboard --items {input.item_table} --settings {params.settings} "
        "--output {output.responses} --truth-items {output.truth_items} "
        "--truth-models {output.truth_models} > {log} 2>&1"
