# The optimal training difficulty per data size (study.train_sizes; crossdiff.results.optimum): the best
# train bin per n for every model x dataset x test dataset x method, its interval and its shift with n.


rule optimum_by_n:
    input:
        table="results/tables/results.parquet",
        bins=[f"results/bins/{d}/bins.parquet" for d in study_datasets()],
    output:
        table=report(
            "results/tables/optimum_by_n.csv",
            caption="../report/optimum.rst",
            category="Summary",
        ),
        shift=report(
            "results/tables/optimum_shift.csv",
            caption="../report/optimum.rst",
            category="Summary",
        ),
        figure=report(
            "results/figures/optimum_by_n.png",
            caption="../report/optimum.rst",
            category="Summary",
        ),
        text="results/summary/optimum.rst",
    log:
        "logs/optimum_by_n.log",
    params:
        settings=lambda wc: cli_json(
            {k: config["summary"][k] for k in ("n_boot", "seed", "confidence")}
        ),
        bins=lambda wc, input: " ".join(
            shlex.quote(f"{d}={p}") for d, p in zip(study_datasets(), input.bins)
        ),
    shell:
        "crossdiff optimum-by-n --table {input.table:q} --bins {params.bins} --csv {output.table:q} "
        "--shift {output.shift:q} --figure {output.figure:q} --text {output.text:q} "
        "--settings {params.settings} > {log:q} 2>&1"
