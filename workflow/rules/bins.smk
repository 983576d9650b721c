rule make_bins:
    input:
        "results/irt/{dataset}/items.parquet",
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
    shell:
        "crossdiff make-bins --items {input:q} --n-bins {params.n_bins} "
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
