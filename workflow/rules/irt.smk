rule fit_irt:
    input:
        responses="results/responses/{dataset}.parquet",
        item_table=lambda wc: irt_item_table(wc.dataset),
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
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
    shell:
        "OMP_WAIT_POLICY=PASSIVE crossdiff fit-irt --responses {input.responses:q} "
        "--settings {params.settings} {params.item_table} --items-out {output.irt_items:q} "
        "--models-out {output.irt_models:q} --heldout-out {output.heldout:q} "
        "--summary-out {output.summary:q} > {log:q} 2>&1"


rule fit_irt_replicate:
    input:
        responses="results/responses/{dataset}.parquet",
        item_table=lambda wc: irt_item_table(wc.dataset),
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
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
    shell:
        "OMP_WAIT_POLICY=PASSIVE crossdiff fit-irt --responses {input.responses:q} "
        "--settings {params.settings} {params.item_table} --items-out {output.irt_items:q} "
        "--models-out {output.irt_models:q} --heldout-out {output.heldout:q} "
        "--summary-out {output.summary:q} > {log:q} 2>&1"
