rule make_bins:
    input:
        unpack(bins_inputs),
        irt="results/irt/{dataset}/items.parquet",
    output:
        bins="results/bins/{dataset}/bins.parquet",
        summary=report(
            "results/bins/{dataset}/summary.csv",
            caption="../report/bin_summary.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/make_bins/{dataset}.log",
    params:
        n_bins=config["bins"]["n_bins"],
        design=lambda wc: bins_args(wc.dataset),
    shell:
        "crossdiff make-bins --items {input.irt:q} --n-bins {params.n_bins}{params.design} "
        "--output {output.bins:q} --summary {output.summary:q} > {log:q} 2>&1"


rule bin_stability:
    input:
        reference="results/irt/{dataset}/items.parquet",
        replicates=lambda wc: expand(
            "results/irt/{dataset}/replicates/{replicate}/items.parquet",
            dataset=wc.dataset,
            replicate=replicate_labels(),
        ),
    output:
        report(
            "results/bins/{dataset}/stability.csv",
            caption="../report/bin_stability.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/bin_stability/{dataset}.log",
    params:
        replicates=lambda wc, input: " ".join(
            f"--replicate {shlex.quote(f'{label}={path}')}"
            for label, path in zip(replicate_labels(), input.replicates)
        ),
        n_bins=config["bins"]["n_bins"],
    shell:
        "crossdiff bin-stability --reference {input.reference:q} {params.replicates} "
        "--n-bins {params.n_bins} --output {output:q} > {log:q} 2>&1"


# datasets binned by an item measure (datasets.<name>.bins.by): how far it agrees with IRT
rule bin_agreement:
    input:
        "results/bins/{dataset}/bins.parquet",
    output:
        table=report(
            "results/bins/{dataset}/agreement.csv",
            caption="../report/bin_agreement.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
        figure=report(
            "results/figures/{dataset}/difficulty/agreement.png",
            caption="../report/bin_agreement.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/bin_agreement/{dataset}.log",
    params:
        n_bins=config["bins"]["n_bins"],
        by=lambda wc: shlex.quote(dataset(wc.dataset)["bins"]["by"]),
    shell:
        "crossdiff bin-agreement --bins {input:q} --n-bins {params.n_bins} --by {params.by} "
        "--title {wildcards.dataset} --output {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"


# bins.by: zero_shot:<model slug>: that base model scored once on every item of the dataset
# (one task over all IRT items, independent of the bins: no cycle; one model load)
rule zero_shot_measure:
    input:
        base=zero_shot_base_input,
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
        model=lambda wc: zero_shot_model(wc.dataset),
        base=lambda wc: shlex.quote(base_model_ref(zero_shot_model(wc.dataset))),
        prompt=lambda wc: cli_json(prompt_of(wc.dataset)),
        settings=cli_json(config["evaluate"]),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff zero-shot-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {params.model:q} --dataset {wildcards.dataset} "
        "--prompt {params.prompt} --settings {params.settings} --output {output.table:q} > {log:q} 2>&1"
