import functools
import json
import re
import shlex

from crossdiff.errors import CrossdiffError


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    replicate=r"seed\d+|fast|py-irt-compatible|py-irt",
    train=r"zero-shot|train\d+",
    b=r"\d+",
    t=r"\d+",


DATASETS = sorted(config["datasets"])
DIFFICULTY_FIGURES = ["histogram", "bin_accuracy", "calibration", "spearman"]


def cli_json(obj):
    """A config section as one shell-quoted JSON argument for the crossdiff CLI."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def dataset(name):
    return config["datasets"][name]


def is_simulated(name):
    return dataset(name)["responses"]["source"] == "simulated"


def items_table(name):
    """The dataset's item table, or [] when it has none (items.source: none)."""
    src = dataset(name)["items"]["source"]
    if src in ("synthetic", "hub", "lm_eval_task"):
        return f"results/items/{name}.parquet"
    if src == "file":
        return dataset(name)["items"]["path"]
    return []


def local_files(path):
    """A local path as Snakemake inputs: the file, or every file under a folder (a folder's mtime does
    not change when a file in it is edited). A missing path stays as it is: Snakemake names it."""
    import os

    if path and os.path.isdir(path):
        return sorted(
            os.path.join(root, f) for root, _, files in os.walk(path) for f in files
        )
    return [path] if path else []


def prepare_items_inputs(wildcards):
    """The local files prepare_items reads: items.path (file or folder) and items.solutions.path."""
    items = dataset(wildcards.dataset)["items"]
    solutions = items.get("solutions") or {}
    return local_files(items.get("path")) + local_files(solutions.get("path"))


def response_files(wildcards):
    """Every file of a local responses source (a folder of lm-eval samples: each file in it)."""
    r = dataset(wildcards.dataset)["responses"]
    return local_files(r["path"]) if r["source"] in ("table", "lm_eval_samples") else []


def published_spec(name):
    """datasets.<name>.bins.published when bins.by is 'published' (crossdiff.bins.published), else None."""
    if dataset(name)["bins"]["by"] != "published":
        return None
    spec = dataset(name)["bins"].get("published")
    if not spec:
        raise CrossdiffError(
            f"datasets.{name}.bins.by = 'published' needs datasets.{name}.bins.published "
            "(source: file with path, or source: hub with hub_id/config; column, key, match, rule)"
        )
    if spec["match"] == "question" and not items_table(name):
        raise CrossdiffError(
            f"datasets.{name}.bins.published.match = 'question' needs an item table; items.source is none"
        )
    return spec


def published_inputs(wildcards):
    """The published table when it is a local file; the IRT items; the item table for match: question."""
    spec = published_spec(wildcards.dataset)
    out = {"irt": f"results/irt/{wildcards.dataset}/items.parquet"}
    if spec["source"] == "file":
        out["table"] = spec["path"]
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
    return {**config["filters"], **dataset(name).get("filters", {})}


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
    out = [
        f"results/responses/{name}.parquet",
        f"results/irt/{name}/items.parquet",
        f"results/bins/{name}/bins.parquet",
    ]
    figures = DIFFICULTY_FIGURES
    if (
        config["irt"]["holdout_fraction"] == 0
    ):  # no held-out cells, no calibration figure
        figures = [f for f in figures if f != "calibration"]
    out += [f"results/figures/{name}/difficulty/{f}.png" for f in figures]
    if is_simulated(name):
        out.append(f"results/figures/{name}/difficulty/truth.png")
    if replicate_labels():
        out.append(f"results/bins/{name}/stability.csv")
    if dataset(name)["bins"]["by"] != "irt":
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


# ---------------------------------------------------------------- the study half: models x bins
from crossdiff.items.adapters import prompt_for
from crossdiff.slugs import slugify

MODELS = {slugify(m["id"]): m for m in config["models"]}
N_BINS = config["bins"]["n_bins"]


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS) or "(?!)",


# ---------------------------------------------------------------- study designs (crossdiff.study.designs)
# A run is one fine-tune: bin<b> (today's paths) or set-<name>, with -n<size> / -seed<s> suffixes.
import crossdiff.errors
import crossdiff.study.designs as design

design.check_design(config["study"], N_BINS)
design.check_seed_variance(config["study"], config["finetune"])
import crossdiff.evaluate.zero_shot as zsm
import crossdiff.evaluate.loss_measure as lsm

for _name in DATASETS:
    zsm.check_by(_name, dataset(_name)["bins"]["by"], MODELS)
    lsm.check_by(_name, dataset(_name)["bins"]["by"], MODELS)
    if published_spec(_name) is not None:
        continue
    if dataset(_name)["bins"]["by"] != "irt" and not items_table(_name):
        raise crossdiff.errors.CrossdiffError(
            f"datasets.{_name}.bins.by = {dataset(_name)['bins']['by']!r} bins by an item-table "
            "column, but items.source is none; give the dataset an item table or use by: irt"
        )


wildcard_constraints:
    run=design.RUN_PATTERN,
    sftset=design.SFT_PATTERN,
    trained=design.EVAL_PATTERN,


# Helpers of the validated config are pure: the ones called once per job are cached (functools),
# so a paper-scale dry run (1,084 jobs) computes each distinct value once.
@functools.cache
def study_runs():
    """Every fine-tune of the design: (train bins + train sets) x train_sizes x seeds."""
    return tuple(design.design_runs(config["study"], N_BINS))


@functools.cache
def eval_labels():
    """The train labels of every evaluation: zero-shot, then one per fine-tune (study.methods: sft)."""
    if "sft" not in config["study"]["methods"]:
        return ("zero-shot",)
    return ("zero-shot",) + tuple(design.eval_label(r) for r in study_runs())


# ---------------------------------------------------------------- in-context learning (crossdiff.evaluate.icl)
import crossdiff.evaluate.icl as icl


def icl_ks():
    """study.icl.k as a list when study.methods has icl, else []."""
    if "icl" not in config["study"]["methods"]:
        return []
    return icl.ks_of(config["study"]["icl"])


def icl_labels():
    return [icl.eval_label(k, b) for k in icl_ks() for b in train_bins()]


def sft_data_path(wildcards):
    """The run's training data: the dataset's, or the model's own when it has solutions for it."""
    d, label = wildcards.dataset, design.sft_label(wildcards.run)
    if own_solutions(wildcards.model, d):
        return f"results/sft/{d}/solutions-{wildcards.model}/{label}.jsonl"
    return f"results/sft/{d}/{label}.jsonl"


def finetune_config(name, model=None):
    """The fine-tuning settings of a dataset (and model), merged in this order (later wins, key by key):
    crossdiff's defaults (crossdiff/finetune/settings.py) < `finetune` < `datasets.<name>.finetune`
    < `models[].finetune`; the run's design (seed, curriculum order) then applies on top
    (run_settings_json).
    """
    per_model = (MODELS[model].get("finetune") or {}) if model else {}
    return {**config["finetune"], **(dataset(name).get("finetune") or {}), **per_model}


def run_settings(wildcards):
    """finetune settings of one run: the dataset's and model's (finetune_config), with the run's
    seed and, for curricula, no shuffling."""
    return run_settings_json(wildcards.dataset, wildcards.model, wildcards.run)


@functools.cache
def run_settings_json(name, model, run):
    return cli_json(
        design.finetune_settings(
            finetune_config(name, model), config["study"], run, N_BINS
        )
    )


def train_set_args(wildcards):
    spec = design.training_spec(config["study"], wildcards.sftset, N_BINS)
    size = f" --size {spec['size']}" if spec["size"] is not None else ""
    bins = " ".join(map(str, spec["bins"]))
    return f"--train-bins {bins}{size} --order {spec['order']} --sample-seed {config['study']['sample_seed']}"


def zero_shot_model(name):
    """The model slug of bins.by: zero_shot:<slug>, else None (crossdiff.evaluate.zero_shot)."""
    return zsm.model_of(dataset(name)["bins"]["by"])


def zero_shot_base_input(wildcards):
    """The built base model behind bins.by: zero_shot:<slug> (nothing for hub ids)."""
    m = zero_shot_model(wildcards.dataset)
    return f"results/models/{m}" if MODELS[m]["build"] else []


def loss_model(name):
    """The model slug of bins.by: loss:<slug>, else None (crossdiff.evaluate.loss_measure)."""
    return lsm.model_of(dataset(name)["bins"]["by"])


def loss_base_input(wildcards):
    """The built base model behind bins.by: loss:<slug> (nothing for hub ids)."""
    m = loss_model(wildcards.dataset)
    return f"results/models/{m}" if MODELS[m]["build"] else []


def measure_table_of(name):
    """The per-item table of a model-based bins.by (zero_shot:/loss:), else None."""
    if zero_shot_model(name):
        return f"results/bins/{name}/zero_shot_measure.parquet"
    if loss_model(name):
        return f"results/bins/{name}/loss_measure.parquet"
    return None


def spearman_measure_arg(name):
    """plot-difficulty --measure NAME=TABLE for a model-based bins.by (joins the Spearman figure)."""
    table = measure_table_of(name)
    by = dataset(name)["bins"]["by"]
    return f"--measure {shlex.quote(f'{by}={table}')}" if table else ""


def bins_args(name):
    """make_bins options beyond today's: bins.by and bins.holdout_fraction (empty when both are off)."""
    out = ""
    if measure_table_of(name):
        out += f" --by {shlex.quote(dataset(name)['bins']['by'])} --measure-table {shlex.quote(measure_table_of(name))}"
    elif published_spec(name) is not None:
        out += f" --by published --rule {shlex.quote(published_spec(name)['rule'])} --measure-table {shlex.quote(f'results/bins/{name}/published.parquet')}"
    elif dataset(name)["bins"]["by"] != "irt":
        out += f" --by {shlex.quote(dataset(name)['bins']['by'])} --item-table {shlex.quote(items_table(name))}"
    if config["bins"]["holdout_fraction"] > 0:
        out += f" --holdout-fraction {config['bins']['holdout_fraction']} --holdout-seed {config['bins']['holdout_seed']}"
    return out


def bins_inputs(wildcards):
    if measure_table_of(wildcards.dataset):
        return {"measure": measure_table_of(wildcards.dataset)}
    if published_spec(wildcards.dataset) is not None:
        return {"measure": f"results/bins/{wildcards.dataset}/published.parquet"}
    by_column = dataset(wildcards.dataset)["bins"]["by"] != "irt"
    return {"item_table": items_table(wildcards.dataset)} if by_column else {}


def measure_datasets():
    return [d for d in DATASETS if dataset(d)["bins"]["by"] != "irt"]


def size_study():
    """study.train_sizes with single train bins: the size x difficulty figure and best-bin table."""
    return bool(config["study"]["train_sizes"]) and config["study"]["train_bins"] != []


def study_datasets():
    names = config["study"]["datasets"]
    if names is None:
        names = [d for d in DATASETS if dataset(d)["items"]["source"] != "none"]
    return names if config["models"] else []


def train_bins():
    bins = config["study"]["train_bins"]
    return list(range(N_BINS)) if bins is None else bins


def prompt_of(name):
    """The dataset's prompt section over its benchmark adapter's defaults (one format for SFT and eval)."""
    return prompt_for(dataset(name)["items"], dataset(name).get("prompt"))


@functools.cache
def prompt_json(name):
    """prompt_of(name) as the CLI's --prompt argument (computed once per dataset)."""
    return cli_json(prompt_of(name))


# ------------------------------------------------- per-model training targets (crossdiff.study.solutions)
import crossdiff.study.solutions as model_solutions

_problems = model_solutions.check_model_solutions(
    MODELS,
    {d: (prompt_of(d), dataset(d)["items"].get("solutions")) for d in study_datasets()},
)
if _problems:
    raise crossdiff.errors.CrossdiffError(
        "per-model solutions:\n  " + "\n  ".join(_problems)
    )


def own_solutions(model, name):
    """The model's own solutions source for a dataset (models[].solutions.<name>), or None."""
    return (MODELS[model].get("solutions") or {}).get(name)


def base_model_input(wildcards):
    """The built model's directory for locally built models; nothing for hub ids."""
    m = MODELS[wildcards.model]
    return f"results/models/{wildcards.model}" if m["build"] else []


def base_model_ref(model):
    m = MODELS[model]
    return f"results/models/{model}" if m["build"] else m["id"]


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


def study_targets():
    # Every evaluation cell is listed although aggregate takes them too: a removed cell whose table
    # still exists is otherwise not rebuilt (tests/test_study_workflow.py).
    out = []
    for name in study_datasets():
        for model in MODELS:
            for train in eval_labels():
                out += eval_outputs(model, name, train)
            out += [
                f"results/figures/{name}/{model}/accuracy.png",
                f"results/figures/{name}/{model}/gain.png",
            ]
        out += [
            f"results/figures/{name}/gain_vs_gap.png",
            f"results/figures/{name}/zero_shot.png",
        ]
        if "sft" not in config["study"]["methods"]:  # ICL only: no fine-tune heatmaps
            out = [f for f in out if f"/{name}/" not in f]
        for k in icl_ks():  # ICL heatmaps beside SFT's (study.methods: icl)
            out += [
                f"results/figures/{name}/icl-k{k}/{model}/{kind}.png"
                for model in MODELS
                for kind in ("accuracy", "gain")
            ]
        if size_study():
            out += [
                f"results/figures/{name}/{model}/size_difficulty.png"
                for model in MODELS
            ]
            out += [
                f"results/figures/{name}/best_train_bin.png",
                f"results/tables/{name}/best_train_bin.csv",
            ]
    if out:
        out += ["results/tables/results.parquet", "results/models/models.tsv"]
    return out


def all_eval_results(wildcards=None):
    return [
        f
        for name in study_datasets()
        for model in MODELS
        for train in eval_labels() + tuple(icl_labels())
        for f in eval_outputs(model, name, train)
    ]


def dataset_eval_results(wildcards):
    """Every evaluation result of one dataset (all models, zero-shot and every run)."""
    return [
        f
        for model in MODELS
        for train in eval_labels()
        for f in eval_outputs(model, wildcards.dataset, train)
    ]


# ---------------------------------------------------------------- summarize (results.smk): its
# settings, the front-page images and the targets.
def summary_settings():
    """config["summary"] for the CLI: `diagonal: auto` resolved (include the diagonal only when
    each bin's held-out items are its test items, i.e. bins.holdout_fraction > 0)."""
    s = {k: v for k, v in config["summary"].items() if k != "front_figures"}
    if s["diagonal"] == "auto":
        held_out = (config["bins"].get("holdout_fraction") or 0) > 0
        s["diagonal"] = "include" if held_out else "exclude"
    return s


def summary_images(wildcards=None):
    """The gain heatmaps shown on the report's front page (the first summary.front_figures)."""
    pairs = [(name, model) for name in study_datasets() for model in MODELS]
    # SFT's heatmap, then ICL's beside it
    sft = [""] if "sft" in config["study"]["methods"] else []
    methods = sft + [f"icl-k{k}/" for k in icl_ks()]
    return [
        f"results/figures/{name}/{m}{model}/gain.png"
        for name, model in pairs[: config["summary"]["front_figures"]]
        for m in methods
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
