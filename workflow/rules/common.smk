import json
import shlex

import crossdiff.config


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
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
    if src == "synthetic":
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
    return config["irt"]


def difficulty_targets(name):
    out = [
        f"results/responses/{name}.parquet",
        f"results/irt/{name}/items.parquet",
        f"results/bins/{name}/bins.parquet",
    ]
    out += [f"results/figures/{name}/difficulty/{f}.png" for f in DIFFICULTY_FIGURES]
    if is_simulated(name):
        out.append(f"results/figures/{name}/difficulty/truth.png")
    return out


def all_targets():
    return [t for name in DATASETS for t in difficulty_targets(name)]
