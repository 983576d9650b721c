rule fit_irt:
    input:
        "results/responses/{dataset}.parquet",
    output:
        irt_items="results/irt/{dataset}/items.parquet",
        irt_models="results/irt/{dataset}/models.parquet",
        heldout="results/irt/{dataset}/heldout.parquet",
        summary="results/irt/{dataset}/fit.json",
    log:
        "logs/fit_irt/{dataset}.log",
    threads: config["irt"]["threads"] or 2
    params:
        settings=lambda wc: cli_json(irt_settings()),
    shell:
        "OMP_WAIT_POLICY=PASSIVE crossdiff fit-irt --responses {input:q} "
        "--settings {params.settings} --items-out {output.irt_items:q} "
        "--models-out {output.irt_models:q} --heldout-out {output.heldout:q} "
        "--summary-out {output.summary:q} > {log:q} 2>&1"


rule fit_irt_replicate:
    input:
        "results/responses/{dataset}.parquet",
    output:
        irt_items="results/irt/{dataset}/replicates/{replicate}/items.parquet",
        irt_models="results/irt/{dataset}/replicates/{replicate}/models.parquet",
        heldout="results/irt/{dataset}/replicates/{replicate}/heldout.parquet",
        summary="results/irt/{dataset}/replicates/{replicate}/fit.json",
    log:
        "logs/fit_irt_replicate/{dataset}/{replicate}.log",
    threads: config["irt"]["threads"] or 2
    params:
        settings=lambda wc: cli_json(replicate_settings(wc.replicate)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE crossdiff fit-irt --responses {input:q} "
        "--settings {params.settings} --items-out {output.irt_items:q} "
        "--models-out {output.irt_models:q} --heldout-out {output.heldout:q} "
        "--summary-out {output.summary:q} > {log:q} 2>&1"
