# Helpers of every rules file. The study plan (crossdiff.plan) is built once from the validated config;
# each job's resolved settings (crossdiff.plan.settings), the files a config names (crossdiff.plan.inputs),
# and every check before work (crossdiff.plan.checks). Functions here only turn it into paths, inputs and
# shell arguments; they hold no settings logic of their own.
import functools
import json
import re
import shlex

import crossdiff.plan.checks as plan_checks
import crossdiff.plan.inputs as plan_inputs
import crossdiff.study.designs as design
import crossdiff.study.methods as study_methods
import crossdiff.bins.measures as bin_measures
from crossdiff.plan.settings import Plan

PLAN = Plan(config)
plan_checks.check(
    PLAN
)  # every problem found before any job runs, whatever resources.memory_check says

DATASETS = PLAN.datasets
MODELS = PLAN.models
N_BINS = PLAN.n_bins
DIFFICULTY_FIGURES = ["histogram", "bin_accuracy", "calibration", "spearman"]


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    replicate=r"seed\d+|fast|py-irt-compatible|py-irt",
    train=r"zero-shot|train\d+",
    b=r"\d+",
    t=r"\d+",
    model="|".join(re.escape(m) for m in MODELS) or "(?!)",
    run=study_methods.trained_pattern(design.RUN_PATTERN),
    sftset=design.SFT_PATTERN,
    trained=study_methods.trained_pattern(design.EVAL_PATTERN),


def cli_json(obj):
    """A config section as one shell-quoted JSON argument for the crossdiff CLI."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def dataset(name):
    return config["datasets"][name]


def is_simulated(name):
    return dataset(name)["responses"]["source"] == "simulated"


def items_table(name):
    """The dataset's item table, or [] when it has none (items.source: none)."""
    return PLAN.items_table(name) or []


# ---------------------------------------------------------------- files a config names (crossdiff.plan.inputs)
def prepare_items_inputs(wildcards):
    return plan_inputs.item_files(dataset(wildcards.dataset))


def response_files(wildcards):
    return plan_inputs.response_files(dataset(wildcards.dataset))


def task_config_files(wildcards):
    """An lm_eval_task dataset's own task files (include_path tree, override data): evaluation reads them."""
    return plan_inputs.task_files(dataset(wildcards.dataset))


def base_model_input(wildcards):
    """The base model's files: the built model's directory, a local directory's files; nothing for hub ids."""
    return base_model_files(wildcards.model)


def base_model_files(model):
    if MODELS[model]["build"]:
        return [f"results/models/{model}"]
    return plan_inputs.model_files(MODELS[model])


def base_model_ref(model):
    return PLAN.base_model_ref(model)


# ---------------------------------------------------------------- the difficulty half
def published_spec(name):
    """datasets.<name>.bins.published when bins.by is 'published', else None (checked in crossdiff.plan.checks)."""
    return (
        dataset(name)["bins"].get("published")
        if dataset(name)["bins"]["by"] == "published"
        else None
    )


def published_inputs(wildcards):
    """The published table when it is a local file; the IRT items; the item table for match: question."""
    spec = published_spec(wildcards.dataset)
    out = {"irt": f"results/irt/{wildcards.dataset}/items.parquet"}
    files = plan_inputs.published_files(dataset(wildcards.dataset))
    if files:
        out["table"] = files
    if spec["match"] == "question":
        out["item_table"] = items_table(wildcards.dataset)
    return out


def raw_responses(wildcards):
    r = dataset(wildcards.dataset)["responses"]
    if r["source"] == "simulated":
        return f"results/simulated/{wildcards.dataset}/responses.parquet"
    if r["source"] == "leaderboard":
        return f"results/leaderboard/{wildcards.dataset}.parquet"
    return r["path"]


def filters_for(name):
    return PLAN.filters(name)


def irt_settings():
    return {k: v for k, v in config["irt"].items() if k != "stability"}


def irt_item_table(name):
    """The item table for fit_irt when its options counts centre a floor prior (the fast engine's 3pl
    and 4pl-standard with irt.guess_prior_weight > 0), else []."""
    irt = config["irt"]
    if irt["model"] in ("3pl", "4pl-standard") and irt["guess_prior_weight"] > 0:
        return items_table(name)
    return []


def difficulty_targets(name):
    # responses.source none: bins from an item measure alone (rules/corpora.smk)
    if not PLAN.has_irt(name):
        return [f"results/bins/{name}/bins.parquet"]
    out = [
        f"results/responses/{name}.parquet",
        f"results/irt/{name}/items.parquet",
        f"results/bins/{name}/bins.parquet",
    ]
    figures = DIFFICULTY_FIGURES
    if config["irt"]["holdout_fraction"] == 0:  # no held-out cells, no calibration
        figures = [f for f in figures if f != "calibration"]
    out += [f"results/figures/{name}/difficulty/{f}.png" for f in figures]
    if is_simulated(name):
        out.append(f"results/figures/{name}/difficulty/truth.png")
    if replicate_labels():
        out.append(f"results/bins/{name}/stability.csv")
    if dataset(name)["bins"]["by"] != "irt" or PLAN.extra_measures(name):
        out += [
            f"results/bins/{name}/agreement.csv",
            f"results/figures/{name}/difficulty/agreement.png",
        ]
    return out


def all_targets():
    return [t for name in DATASETS for t in difficulty_targets(name)] + study_targets()


def replicate_labels():
    """Replicate IRT fits for the bin-stability table: seed<N> of the chosen engine, or an engine name."""
    st = config["irt"]["stability"]
    labels = [f"seed{s}" for s in st["seeds"] if s != config["irt"]["seed"]]
    return labels + [e for e in st["engines"] if e != config["irt"]["engine"]]


def replicate_settings(label):
    s = irt_settings()
    if label.startswith("seed"):
        s["seed"] = int(label[4:])
    else:
        s["engine"] = label
    return s


def measure_model(name):
    """The model slug of a measure with its own job (bins.by: <prefix>:<slug>, crossdiff.bins.measures)."""
    found = bin_measures.parse(dataset(name)["bins"]["by"])
    return found[1] if found else None


def measure_table_of(name):
    """The per-item table of such a measure, else None."""
    return bin_measures.table_path(name, dataset(name)["bins"]["by"])


def spearman_measure_arg(name):
    """plot-difficulty --measure NAME=TABLE for a model-based bins.by (joins the Spearman figure)."""
    table = measure_table_of(name)
    by = dataset(name)["bins"]["by"]
    return f"--measure {shlex.quote(f'{by}={table}')}" if table else ""


def bins_args(name):
    """make_bins options beyond equal-size IRT bins: bins.by, bins.holdout_fraction, ICL's minimum."""
    by = dataset(name)["bins"]["by"]
    out = ""
    if measure_table_of(name):
        out += f" --by {shlex.quote(by)} --measure-table {shlex.quote(measure_table_of(name))}"
    elif published_spec(name) is not None:
        out += f" --by published --rule {shlex.quote(published_spec(name)['rule'])} --measure-table {shlex.quote(f'results/bins/{name}/published.parquet')}"
    elif by != "irt":
        out += f" --by {shlex.quote(by)} --item-table {shlex.quote(items_table(name))}"
    cutoffs = dataset(name)["bins"].get("cutoffs")
    if cutoffs:
        out += " --cutoffs " + " ".join(map(repr, map(float, cutoffs)))
    elif config["bins"]["scheme"] == "quantiles":
        out += " --edges " + " ".join(map(repr, map(float, config["bins"]["edges"])))
    if config["bins"]["holdout_fraction"] > 0:
        out += f" --holdout-fraction {config['bins']['holdout_fraction']} --holdout-seed {config['bins']['holdout_seed']}"
    least = plan_checks.icl_min_train_items(PLAN, name)
    if least:
        out += f" --min-train-items {least}"
    return out


def bins_inputs(wildcards):
    name = wildcards.dataset
    if measure_table_of(name):
        return {"measure": measure_table_of(name)}
    if published_spec(name) is not None:
        return {"measure": f"results/bins/{name}/published.parquet"}
    by_column = dataset(name)["bins"]["by"] != "irt"
    return {"item_table": items_table(name)} if by_column else {}


def measure_datasets():
    return [d for d in DATASETS if dataset(d)["bins"]["by"] != "irt"]


# ---------------------------------------------------------------- the study half: models x bins x methods
def study_datasets():
    return PLAN.study_datasets()


def train_bins():
    return PLAN.train_bins()


def size_study():
    """study.train_sizes with single train bins: the size x difficulty figure and best-bin table."""
    return bool(config["study"]["train_sizes"]) and config["study"]["train_bins"] != []


def eval_labels(name):
    """Every evaluation folder of a model on a dataset: zero-shot, then each method's cells."""
    return PLAN.eval_labels(name)


def trained_eval_labels(name):
    """The evaluation folders of fine-tuned checkpoints (rule evaluate_checkpoint)."""
    return [
        l
        for l in eval_labels(name)
        if l != "zero-shot"
        and study_methods.method_of_label(study_methods.split_label(l)[0]).trains
    ]


def icl_ks():
    """study.icl.k as a list when study.methods has icl, else []."""
    if "icl" not in config["study"]["methods"]:
        return []
    return study_methods.ks_of(config["study"]["icl"])


def icl_labels(name=None):
    """The ICL evaluation folders of a dataset (its own k: study.icl < datasets.<d>.icl)."""
    if name is None:
        return [f"icl-k{k}-train{b}" for k in icl_ks() for b in train_bins()]
    if "icl" not in config["study"]["methods"]:
        return []
    ks = study_methods.ks_of(PLAN.icl(name))
    return [f"icl-k{k}-train{b}" for k in ks for b in train_bins()]


def icl_rule_groups():
    """(ICL folders, datasets) per distinct folder list: one evaluate_icl rule each (outputs cannot depend on
    the dataset wildcard, and k may differ per dataset)."""
    groups = {}
    for name in study_datasets():
        labels = tuple(icl_labels(name))
        if labels:
            groups.setdefault(labels, []).append(name)
    return list(groups.items())


def icl_command(name):
    """The ICL command of a dataset: the per-item protocol (lm-eval's sampler) or Hase et al.'s shared one."""
    return (
        "evaluate-icl-shared"
        if PLAN.icl(name).get("protocol") == "shared"
        else "evaluate-icl"
    )


def icl_args(name):
    """The ICL command's own arguments for a dataset (its resolved study.icl, the train bins)."""
    icl = PLAN.icl(name)
    bins = " ".join(map(str, train_bins()))
    if icl.get("protocol") == "shared":
        return f"--train-bins {bins} --icl {cli_json(icl)}"
    ks = " ".join(map(str, study_methods.ks_of(icl)))
    return f"--k {ks} --train-bins {bins} --seed {int(icl['seed'])}"


def prompt_of(name):
    """The dataset's prompt section over its benchmark adapter's defaults (one format for SFT and eval)."""
    return PLAN.prompt(name)


@functools.cache
def prompt_json(name):
    return cli_json(prompt_of(name))


def own_solutions(model, name):
    return PLAN.own_solutions(model, name)


def sft_data_path(wildcards):
    """The run's training data: the dataset's, or the model's own when it has solutions for it."""
    d = wildcards.dataset
    label = design.sft_label(study_methods.split_run(wildcards.run)[1])
    if own_solutions(wildcards.model, d):
        return f"results/sft/{d}/solutions-{wildcards.model}/{label}.jsonl"
    return f"results/sft/{d}/{label}.jsonl"


def model_items_table(wildcards):
    """The items a model trains on and draws ICL demonstrations from (its own solutions when it has them)."""
    return PLAN.model_items_table(wildcards.dataset, wildcards.model)


@functools.cache
def run_settings_json(name, model, run):
    """One fine-tune's resolved settings (crossdiff.plan.settings), as the CLI's --settings."""
    return cli_json(PLAN.finetune(name, model, run))


def result_train_label(trained):
    """The train_bin string a trained method's result JSONs carry: ``3`` for train3, ``<label>-3`` else."""
    method, rest = study_methods.split_label(trained)
    return study_methods.prefixed(
        method, design.result_train_bin(design.run_of_eval(rest))
    )


def run_settings(wildcards):
    return run_settings_json(wildcards.dataset, wildcards.model, wildcards.run)


@functools.cache
def eval_settings_json(name, model=None):
    """A model's resolved evaluation settings on a dataset (evaluate < datasets.<d>.evaluate < models[].evaluate)."""
    return cli_json(PLAN.evaluate(name, model))


def eval_settings(wildcards):
    return eval_settings_json(wildcards.dataset, wildcards.model)


def train_set_args(wildcards):
    spec = design.training_spec(config["study"], wildcards.sftset, N_BINS)
    size = f" --size {spec['size']}" if spec["size"] is not None else ""
    bins = " ".join(map(str, spec["bins"]))
    return f"--train-bins {bins}{size} --order {spec['order']} --sample-seed {config['study']['sample_seed']}"


def measure_base_input(wildcards):
    """The base model behind a measure's table (bins.by: <prefix>:<slug>)."""
    return base_model_files(measure_model(wildcards.dataset))


def gpu_prefix(stage):
    """Run a GPU job through `crossdiff gpu-run`, which gives it its own device(s) locally.

    The template holds no config string: the device list and lock dir reach the shell as
    {params.gpu_devices:q} / {params.gpu_lock_dir:q} (gpu_params), so Snakemake never formats a
    config value as template text (issue 20, item 1).
    """
    if not config["resources"][stage]["gpu"]:
        return ""
    return (
        "crossdiff gpu-run --count {resources.gpu} --devices {params.gpu_devices:q} "
        "--lock-dir {params.gpu_lock_dir:q} -- "
    )


def gpu_params():
    """params of a GPU rule: the device list and lock dir of `crossdiff gpu-run`.

    Functions of `resources`, hence "derived" params that are no rerun trigger: editing the device
    list must not rerun every fine-tune (profiles/workstation leaves the `code` trigger off).
    """

    def devices(wildcards, resources):
        d = config["gpus"]["devices"]
        return d if isinstance(d, str) else ",".join(map(str, d))

    def lock_dir(wildcards, resources):
        return config["gpus"]["lock_dir"]

    return {"gpu_devices": devices, "gpu_lock_dir": lock_dir}


def eval_outputs(model, name, train):
    return [f"results/eval/{model}/{name}/{train}/bin{t}.json" for t in range(N_BINS)]


def method_figures(name):
    """Heatmaps per method label (sft's in results/figures/<d>/<model>/, others' in <d>/<label>/<model>/)."""
    out = []
    for label in PLAN.method_labels(name):
        sub = study_methods.figure_dir(label)
        out += [
            f"results/figures/{name}/{sub}{model}/{kind}.png"
            for model in MODELS
            for kind in ("accuracy", "gain")
        ]
        if label == "sft":
            out += [
                f"results/figures/{name}/gain_vs_gap.png",
                f"results/figures/{name}/zero_shot.png",
            ]
    return out


def study_targets():
    # Every evaluation cell is listed although aggregate takes them too: a removed cell whose table
    # still exists is otherwise not rebuilt (tests/test_study_workflow.py).
    out = []
    for name in study_datasets():
        for model in MODELS:
            for train in eval_labels(name):
                out += eval_outputs(model, name, train)
        out += method_figures(name)
        if size_study() and "sft" in config["study"]["methods"]:
            out += [
                f"results/figures/{name}/{model}/size_difficulty.png"
                for model in MODELS
            ]
            out += [
                f"results/figures/{name}/best_train_bin.png",
                f"results/tables/{name}/best_train_bin.csv",
            ]
    # datasets.<d>.test_on; the optimum per n (issue 28)
    out += transfer_targets() + optimum_targets()
    if out:
        out += ["results/tables/results.parquet", "results/models/models.tsv"]
    return out


def all_eval_results(wildcards=None):
    return [
        f
        for name in study_datasets()
        for model in MODELS
        for train in eval_labels(name)
        for f in eval_outputs(model, name, train)
    ] + transfer_eval_results()  # datasets.<d>.test_on (rules/transfer.smk)


def sgr_targets():
    """summary.sgr's outputs (rule sgr, sgr.smk), or none."""
    if PLAN.sgr() is None or not study_datasets():
        return []
    return [
        "results/tables/sgr.csv",
        "results/figures/sgr.png",
        "results/summary/sgr.rst",
    ]


def dataset_eval_results(wildcards):
    """Every evaluation result of one dataset (all models, zero-shot and every method's cells)."""
    return [
        f
        for model in MODELS
        for train in eval_labels(wildcards.dataset)
        for f in eval_outputs(model, wildcards.dataset, train)
    ]


# ---------------------------------------------------------------- summarize (results.smk)
def summary_settings():
    return PLAN.summary()


def summary_images(wildcards=None):
    """The gain heatmaps shown on the report's front page (the first summary.front_figures pairs),
    each method's beside the others."""
    pairs = [(name, model) for name in study_datasets() for model in MODELS]
    return [
        f"results/figures/{name}/{study_methods.figure_dir(label)}{model}/gain.png"
        for name, model in pairs[: config["summary"]["front_figures"]]
        for label in PLAN.method_labels(name)
    ]


def summary_targets():
    if not study_datasets():
        return []
    return [
        "results/tables/summary.csv",
        "results/tables/best_train_bin.csv",
        "results/figures/summary.png",
        "results/summary/summary.rst",
    ]


# ---------------------------------------------------------------- bins.measures (crossdiff.bins.measure_set)
def extra_measures(name):
    """datasets.<name>.bins.measures: shown beside IRT difficulty and bins.by (checked in crossdiff.plan.checks)."""
    return PLAN.extra_measures(name)


def extra_measure_table(name, spec):
    return bin_measures.extra_table_path(name, spec, dataset(name)["bins"]["by"])


def extra_measure_tables(name):
    """The per-item tables of the entries that have a job of their own (workflow/rules/measures.smk)."""
    return [
        t for t in (extra_measure_table(name, s) for s in extra_measures(name)) if t
    ]


def extra_measure_args(name):
    """--measure SPEC=TABLE / --column SPEC per entry, for plot-difficulty spearman and bin-agreement."""
    out = ""
    for spec in extra_measures(name):
        table = extra_measure_table(name, spec)
        out += (
            f" --measure {shlex.quote(f'{spec}={table}')}"
            if table
            else f" --column {shlex.quote(spec)}"
        )
    return out


def agreement_extra_args(name):
    """bin-agreement's options for the entries: their tables and columns, the item table, quantile edges."""
    out = extra_measure_args(name)
    if any(not extra_measure_table(name, s) for s in extra_measures(name)):
        out += f" --items {shlex.quote(items_table(name))}"
    if extra_measures(name) and config["bins"]["scheme"] == "quantiles":
        out += " --edges " + " ".join(map(repr, map(float, config["bins"]["edges"])))
    return out


def agreement_item_table(name):
    """The item table when an entry reads a column of it, else []."""
    if any(not extra_measure_table(name, s) for s in extra_measures(name)):
        return items_table(name)
    return []
