import json
import shlex

import crossdiff.config


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    replicate=r"seed\d+|fast|py-irt-compatible|py-irt",
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
    if src in ("synthetic", "hub"):
        return f"results/items/{name}.parquet"
    if src == "file":
        return dataset(name)["items"]["path"]
    return []


def raw_responses(wildcards):
    r = dataset(wildcards.dataset)["responses"]
    if r["source"] == "simulated":
        return f"results/simulated/{wildcards.dataset}/responses.parquet"
    return r["path"]


def filters_for(name):
    return {**config["filters"], **dataset(name).get("filters", {})}


def irt_settings():
    return {k: v for k, v in config["irt"].items() if k != "stability"}


def difficulty_targets(name):
    out = [
        f"results/responses/{name}.parquet",
        f"results/irt/{name}/items.parquet",
        f"results/bins/{name}/bins.parquet",
    ]
    out += [f"results/figures/{name}/difficulty/{f}.png" for f in DIFFICULTY_FIGURES]
    if is_simulated(name):
        out.append(f"results/figures/{name}/difficulty/truth.png")
    if replicate_labels():
        out.append(f"results/bins/{name}/stability.csv")
    return out


def all_targets():
    return [t for name in DATASETS for t in difficulty_targets(name)]


def replicate_labels():
    """Replicate IRT fits for the bin-stability table: seed<N> of the chosen engine, or an engine name."""
    st = config["irt"]["stability"]
    labels = [f"seed{s}" for s in st["seeds"] if s != config["irt"]["seed"]]
    return labels + [e for e in st["engines"] if e != config["irt"]["engine"]]


def replicate_settings(label):
    s = dict(config["irt"])
    s.pop("stability")
    if label.startswith("seed"):
        s["seed"] = int(label[4:])
    else:
        s["engine"] = label
    return s
