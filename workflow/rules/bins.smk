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


# bins.by: published: the authors' difficulty table matched to the items (crossdiff.bins.published)
rule published_difficulty:
    input:
        unpack(published_inputs),
    output:
        "results/bins/{dataset}/published.parquet",
    log:
        "logs/published_difficulty/{dataset}.log",
    params:
        spec=lambda wc: cli_json(published_spec(wc.dataset)),
        item_table=lambda wc, input: (
            f" --item-table {shlex.quote(input.item_table)}"
            if "item_table" in input.keys()
            else ""
        ),
    shell:
        "crossdiff published-difficulty --spec {params.spec} --irt-items {input.irt:q}{params.item_table} "
        "--output {output:q} > {log:q} 2>&1"


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
        bins="results/bins/{dataset}/bins.parquet",
        extra=lambda wc: extra_measure_tables(wc.dataset),  # bins.measures
        item_table=lambda wc: agreement_item_table(wc.dataset),
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
        extra=lambda wc: agreement_extra_args(wc.dataset),
    shell:
        "crossdiff bin-agreement --bins {input.bins:q} --n-bins {params.n_bins} --by {params.by}{params.extra} "
        "--title {wildcards.dataset} --output {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"


# difficulty figures (crossdiff plot-difficulty)
rule difficulty_histogram:
    input:
        irt="results/irt/{dataset}/items.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/histogram.png",
            caption="../report/histogram.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/histogram.log",
    shell:
        "crossdiff plot-difficulty --figure histogram --irt-items {input.irt:q} "
        "--bins {input.bins:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_bin_accuracy:
    input:
        irt="results/irt/{dataset}/items.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/bin_accuracy.png",
            caption="../report/bin_accuracy.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/bin_accuracy.log",
    shell:
        "crossdiff plot-difficulty --figure bin_accuracy --irt-items {input.irt:q} "
        "--bins {input.bins:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_calibration:
    input:
        irt="results/irt/{dataset}/items.parquet",
        heldout="results/irt/{dataset}/heldout.parquet",
        fit="results/irt/{dataset}/fit.json",
    output:
        report(
            "results/figures/{dataset}/difficulty/calibration.png",
            caption="../report/calibration.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/calibration.log",
    shell:
        "crossdiff plot-difficulty --figure calibration --irt-items {input.irt:q} "
        "--heldout {input.heldout:q} --fit {input.fit:q} --title {wildcards.dataset} "
        "--output {output:q} "
        "> {log:q} 2>&1"


rule difficulty_spearman:
    input:
        irt="results/irt/{dataset}/items.parquet",
        item_table=lambda wc: items_table(wc.dataset),
        measure=lambda wc: measure_table_of(wc.dataset) or [],
        extra=lambda wc: extra_measure_tables(wc.dataset),  # bins.measures
    output:
        report(
            "results/figures/{dataset}/difficulty/spearman.png",
            caption="../report/spearman.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/spearman.log",
    params:
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
        measure=lambda wc: spearman_measure_arg(wc.dataset),
        extra=lambda wc: extra_measure_args(wc.dataset),
    shell:
        "crossdiff plot-difficulty --figure spearman --irt-items {input.irt:q} "
        "{params.item_table} {params.measure}{params.extra} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_truth:
    input:
        irt="results/irt/{dataset}/items.parquet",
        truth="results/simulated/{dataset}/truth_items.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/truth.png",
            caption="../report/truth.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/truth.log",
    shell:
        "crossdiff plot-difficulty --figure truth --irt-items {input.irt:q} "
        "--truth {input.truth:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"
