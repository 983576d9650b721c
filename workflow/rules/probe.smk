# Hase et al. 2024's linear probes (study.methods: probe) and MDL measure (bins.by: mdl:<slug> / mdl:avg):
# the base model's hidden states of every (item, option) sequence, one forward pass per model x dataset
# (crossdiff.evaluate.hidden), read by every probe cell (crossdiff.evaluate.probe) and by the MDL fits
# (crossdiff.evaluate.mdl). The states depend on the items and the IRT table only, not on the bins: binning by
# MDL makes no cycle.


rule probe_states:
    input:
        base=base_model_input,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        "results/probe/{model}/{dataset}/hidden.npz",
    log:
        "logs/probe_states/{model}/{dataset}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        prompt=lambda wc: prompt_json(wc.dataset),
        # only what the states depend on: other probe settings rerun no forward pass
        probe=lambda wc: cli_json(
            {k: PLAN.probe(wc.dataset)[k] for k in ("layers", "token")}
        ),
        settings=eval_settings,
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff probe-states --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {wildcards.model} --prompt {params.prompt} "
        "--probe {params.probe} --settings {params.settings} --output {output:q} > {log:q} 2>&1"


# bins.by: mdl:<slug> / mdl:avg: 1 - the mean gold-option probability of probes fitted on n items (cross-fitted),
# or the zero-shot one (variant decoding), averaged over bins.mdl.models
rule mdl_measure:
    input:
        hidden=lambda wc: [
            f"results/probe/{m}/{wc.dataset}/hidden.npz"
            for m in PLAN.mdl(wc.dataset)["models"]
        ],
        irt="results/irt/{dataset}/items.parquet",
    output:
        "results/bins/{dataset}/mdl_measure.parquet",
    log:
        "logs/mdl_measure/{dataset}.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        hidden=lambda wc: " ".join(
            shlex.quote(f"{m}=results/probe/{m}/{wc.dataset}/hidden.npz")
            for m in PLAN.mdl(wc.dataset)["models"]
        ),
        settings=lambda wc: cli_json(PLAN.mdl(wc.dataset)),
        probe=lambda wc: cli_json(PLAN.probe(wc.dataset)),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        "crossdiff mdl-measure --hidden {params.hidden} --irt {input.irt:q} --settings {params.settings} "
        "--probe {params.probe} --output {output:q} > {log:q} 2>&1"


# The same table for an MDL measure listed beside bins.by (datasets.<d>.bins.measures: mdl:<slug> / mdl:avg;
# crossdiff.bins.measures' per-measure path results/bins/<d>/measures/mdl/<slug>.parquet)
use rule mdl_measure as mdl_measure_listed with:
    input:
        hidden=lambda wc: [
            f"results/probe/{m}/{wc.dataset}/hidden.npz"
            for m in PLAN.mdl(wc.dataset, f"mdl:{wc.mdl}")["models"]
        ],
        irt="results/irt/{dataset}/items.parquet",
    output:
        "results/bins/{dataset}/measures/mdl/{mdl}.parquet",
    log:
        "logs/mdl_measure/{dataset}/{mdl}.log",
    wildcard_constraints:
        mdl="|".join(re.escape(m) for m in [*MODELS, "avg"]),
    params:
        hidden=lambda wc: " ".join(
            shlex.quote(f"{m}=results/probe/{m}/{wc.dataset}/hidden.npz")
            for m in PLAN.mdl(wc.dataset, f"mdl:{wc.mdl}")["models"]
        ),
        settings=lambda wc: cli_json(PLAN.mdl(wc.dataset, f"mdl:{wc.mdl}")),
        probe=lambda wc: cli_json(PLAN.probe(wc.dataset)),


# study.methods: probe. One probe per (train bin, bootstrap) on the model's hidden states, scored on every test
# bin's items: every (train bin, test bin) cell of a model in one job (no model load)
if "probe" in config["study"]["methods"]:

    rule evaluate_probe:
        input:
            hidden="results/probe/{model}/{dataset}/hidden.npz",
            item_table=lambda wc: items_table(wc.dataset),
            bins="results/bins/{dataset}/bins.parquet",
            tasks=expand("results/tasks/{{dataset}}/bin{t}", t=range(N_BINS)),
        output:
            results=[
                f"results/eval/{{model}}/{{dataset}}/probe-train{b}/bin{t}.json"
                for b in train_bins()
                for t in range(N_BINS)
            ],
            samples=[
                f"results/eval/{{model}}/{{dataset}}/probe-train{b}/bin{t}.samples.jsonl"
                for b in train_bins()
                for t in range(N_BINS)
            ],
        log:
            "logs/evaluate/{model}/{dataset}/probe.log",
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"]
            * attempt,
            runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"]
            * attempt,
        params:
            train_bins=" ".join(map(str, train_bins())),
            settings=lambda wc: cli_json(PLAN.probe(wc.dataset)),
        shell:
            "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
            "crossdiff evaluate-probe --hidden {input.hidden:q} --items {input.item_table:q} "
            "--bins {input.bins:q} --tasks {input.tasks:q} --train-bins {params.train_bins} "
            "--model-name {wildcards.model} --outdir results/eval/{wildcards.model}/{wildcards.dataset} "
            "--settings {params.settings} > {log:q} 2>&1"
