"""Study designs: which items train a run, in which order, and how runs are named.

A *run* is one fine-tune. Its label (the folder under ``results/finetune/{model}/{dataset}/``) is

    <source>[-n<size>][-seed<seed>]     source = bin<b> (one difficulty bin) or set-<name> (study.train_sets)

e.g. ``bin3`` (the paper's design and today's default path), ``bin3-n100``, ``set-easy``,
``set-easy-n50-seed2``. Its evaluation folder (``results/eval/{model}/{dataset}/``) is the same label
with ``bin`` replaced by ``train`` (``train3``, ``train3-n100``; sets keep ``set-<name>``), and its
training data is ``results/sft/{dataset}/<label without -seed>.jsonl``. A *cell* of the results table
is a run label without its seed: seeds of one cell are averaged (see :mod:`crossdiff.results.aggregate`).

Item accounting (all seeded, all deterministic):

* held-out split (``bins.holdout_fraction``, :func:`crossdiff.bins.holdout.holdout_split`): in every bin,
  ``round(fraction * size)`` items drawn with ``SeedSequence([holdout_seed, bin])`` are held out. Training
  uses only the other items; evaluation uses only the held-out ones (of every bin);
* subsamples (``study.train_sizes``, a set's ``size``, :func:`select_training_items`): each bin's
  training items are permuted once with ``SeedSequence([sample_seed, bin])`` and a run takes the
  first ``k`` of that permutation, so smaller samples are nested in larger ones. A set of several bins
  takes equal shares of its size from each bin (sizes differ by at most one, easier bins first);
* order: ``shuffle`` (the trainer's random sampler, as for single bins) or a curriculum,
  ``easy_to_hard`` / ``hard_to_easy``: examples sorted by bin, then within a bin by the binning measure
  (ties by IRT difficulty, then item_id), so the bins follow each other whatever broke the binning's ties, and
  trained in that order with the trainer's sequential sampler (``finetune`` setting ``shuffle: false``),
  the same order in every epoch;
* schedule (a set's ``schedule``, GRPO only): E2H Reasoner's task sampler draws each generation round's prompts
  by level (the set's bins, easiest first) from a schedule over the run (:mod:`crossdiff.study.schedules`;
  drawn by :mod:`crossdiff.finetune.grpo_schedule`).
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import polars as pl

from crossdiff.bins.holdout import bin_items, training_part
from crossdiff.errors import CrossdiffError

SET_NAME = r"[A-Za-z0-9_]+"
#: finetune folder label of any run
RUN_PATTERN = rf"(?:bin\d+|set-{SET_NAME})(?:-n\d+)?(?:-seed\d+)?"
#: training data label beyond today's ``bin{b}`` (those keep their own rule)
SFT_PATTERN = rf"bin\d+-n\d+|set-{SET_NAME}(?:-n\d+)?"
#: evaluation folder label of a fine-tuned run
EVAL_PATTERN = rf"(?:train\d+|set-{SET_NAME})(?:-n\d+)?(?:-seed\d+)?"
ORDERS = ("shuffle", "easy_to_hard", "hard_to_easy")

_LABEL = re.compile(rf"^(?:(?:bin|train)?(?P<bin>\d+)|set-(?P<set>{SET_NAME}))(?:-n(?P<n>\d+))?(?:-seed(?P<seed>\d+))?$")


def parse_label(label: str) -> dict:
    """Parts of a run / eval label or of a results ``train_bin`` string (``3-n100-seed1``, ``set-easy``)."""
    m = _LABEL.match(str(label))
    if not m:
        raise CrossdiffError(
            f"train label {label!r}: expected bin<b> / train<b> / <b> or set-<name>, optionally -n<size> and -seed<seed>"
        )
    d = m.groupdict()
    out = {
        "bin": int(d["bin"]) if d["bin"] is not None else None,
        "set": d["set"],
        "n": int(d["n"]) if d["n"] is not None else None,
        "seed": int(d["seed"]) if d["seed"] is not None else None,
    }
    source = str(out["bin"]) if out["bin"] is not None else f"set-{out['set']}"
    out["cell"] = source + (f"-n{out['n']}" if out["n"] is not None else "")
    return out


def run_label(source, n=None, seed=None) -> str:
    """``source`` is a bin number or a set name."""
    base = f"bin{source}" if isinstance(source, (int, np.integer)) else f"set-{source}"
    return base + (f"-n{n}" if n is not None else "") + (f"-seed{seed}" if seed is not None else "")


def eval_label(run: str) -> str:
    return "train" + run[3:] if run.startswith("bin") else run


def run_of_eval(label: str) -> str:
    return "bin" + label[5:] if label.startswith("train") else label


def sft_label(run: str) -> str:
    return re.sub(r"-seed\d+$", "", run)


def result_train_bin(run: str) -> str:
    """The ``train_bin`` string a run's result JSONs carry (today's ``3`` for ``bin3``)."""
    return run[3:] if run.startswith("bin") else run


# ------------------------------------------------------------------------------- the design grid
def check_design(study: dict, n_bins: int) -> None:
    for name, spec in (study.get("train_sets") or {}).items():
        if not re.fullmatch(SET_NAME, name):
            raise CrossdiffError(f"study.train_sets: set name {name!r}: use letters, digits and _ only")
        if len(name) > 100:
            raise CrossdiffError(f"study.train_sets: set name {name[:20]!r}... has {len(name)} characters; expected at "
                                 "most 100 (it is part of file names, which end at 255 bytes)")
        bins = spec["bins"]
        if bins != "all":
            bad = [b for b in bins if not 0 <= b < n_bins]
            if bad:
                raise CrossdiffError(f"study.train_sets.{name}.bins: {bad} outside 0..{n_bins - 1} (bins.n_bins = {n_bins})")
            if len(set(bins)) != len(bins):
                raise CrossdiffError(f"study.train_sets.{name}.bins: {bins} lists a bin twice")
        if spec.get("schedule") is not None:
            check_schedule(study, name, spec, n_bins)
    bad = [b for b in (study.get("train_bins") or []) if not 0 <= b < n_bins]
    if bad:
        raise CrossdiffError(f"study.train_bins: {bad} outside 0..{n_bins - 1} (bins.n_bins = {n_bins})")
    for key in ("train_bins", "train_sizes", "seeds"):
        vals = study.get(key) or []
        if len(set(map(str, vals))) != len(vals):
            raise CrossdiffError(f"study.{key}: {vals} lists a value twice")


def check_schedule(study: dict, name: str, spec: dict, n_bins: int) -> None:
    """A train set with E2H's task sampler: GRPO only, two bins or more, the order left to the schedule."""
    from crossdiff.study.schedules import check_args
    from crossdiff.study.methods import METHODS

    where = f"study.train_sets.{name}"
    bins = list(range(n_bins)) if spec["bins"] == "all" else list(spec["bins"])
    if len(bins) < 2:
        raise CrossdiffError(f"{where}.schedule: a schedule draws prompts across levels; this set has {len(bins)} bin")
    if spec.get("order", "shuffle") != "shuffle":
        raise CrossdiffError(f"{where}: order {spec['order']!r} and schedule {spec['schedule']!r}: the schedule draws the "
                             "order itself (E2H's task sampler); leave order at shuffle")
    others = [m for m in study.get("methods") or ["sft"]
              if m in METHODS and METHODS[m].trains and METHODS[m].design and m != "grpo"]
    if others:
        raise CrossdiffError(f"{where}.schedule {spec['schedule']!r} is E2H Reasoner's GRPO sampler; study.methods "
                             f"{others} would train this set without it. Run the scheduled set in a design whose "
                             "trained method is grpo (other sets train SFT on the same bins in a design of their own)")
    check_args(spec["schedule"], spec.get("schedule_args"), len(bins), where)


def design_runs(study: dict, n_bins: int) -> list[str]:
    """Every run label of the design: (train bins + train sets) x train_sizes x seeds."""
    check_design(study, n_bins)
    bins = list(range(n_bins)) if study.get("train_bins") is None else list(study["train_bins"])
    sources = bins + list((study.get("train_sets") or {}))
    sizes = study.get("train_sizes") or [None]
    seeds = study.get("seeds") or [None]
    return [run_label(src, n, seed) for src in sources for n in sizes for seed in seeds]


def set_spec(study: dict, name: str) -> dict:
    sets = study.get("train_sets") or {}
    if name not in sets:
        raise CrossdiffError(f"train set {name!r} is not in study.train_sets ({sorted(sets)})")
    return {"size": None, "order": "shuffle", "schedule": None, "schedule_args": None, **sets[name]}


def training_spec(study: dict, label: str, n_bins: int) -> dict:
    """Which bins, how many items and in which order a run (or its training data label) trains on."""
    p = parse_label(label)
    if p["bin"] is not None:
        bins, size, order, schedule, schedule_args = [p["bin"]], p["n"], "shuffle", None, None
    else:
        spec = set_spec(study, p["set"])
        bins = list(range(n_bins)) if spec["bins"] == "all" else list(spec["bins"])
        size = p["n"] if p["n"] is not None else spec["size"]
        order, schedule, schedule_args = spec["order"], spec["schedule"], spec["schedule_args"]
    return {"bins": bins, "size": size, "order": order, "seed": p["seed"], "schedule": schedule,
            "schedule_args": schedule_args}


def design_layer(study: dict, run: str, n_bins: int) -> dict | None:
    """The settings a run's design sets over the config's (:mod:`crossdiff.plan.settings`, the last layer):
    the seed of ``-seed<s>``, and no shuffling for curricula. None for a plain run (its settings are the
    config's)."""
    spec = training_spec(study, run, n_bins)
    out = {}
    if spec["seed"] is not None:
        out["seed"] = spec["seed"]
    if spec["order"] != "shuffle":
        out["shuffle"] = False
    return out or None


def schedule_layer(study: dict, run: str, n_bins: int) -> dict | None:
    """A GRPO run's schedule settings from its train set (E2H's task sampler), or None."""
    spec = training_spec(study, run, n_bins)
    if spec["schedule"] is None:
        return None
    from crossdiff.study.schedules import check_args

    return {"schedule": spec["schedule"],
            "schedule_args": check_args(spec["schedule"], spec["schedule_args"], len(spec["bins"]), "study.train_sets")}


def _quotas(size: int, n: int) -> list[int]:
    base, extra = divmod(size, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def select_training_items(bins: pl.DataFrame, train_bins: list[int], size: int | None = None,
                          order: str = "shuffle", sample_seed: int = 0, where: str = "bins table") -> pl.DataFrame:
    """The training items of a run, in training order (see the module doc for the rules)."""
    if order not in ORDERS:
        raise CrossdiffError(f"train order {order!r}: expected one of {list(ORDERS)}")
    pool = training_part(bins).with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("bin").cast(pl.Int64))
    quotas = _quotas(size, len(train_bins)) if size is not None else [None] * len(train_bins)
    parts = []
    for b, q in zip(train_bins, quotas):
        ids = sorted(pool.filter(pl.col("bin") == b)["item_id"].to_list())
        if not ids:
            raise CrossdiffError(f"{where}: bin {b} has no training items")
        if q is not None:
            if q > len(ids):
                raise CrossdiffError(
                    f"{where}: a training size of {size} over bins {train_bins} needs {q} items from bin {b}, "
                    f"which has only {len(ids)} training items; lower the size (study.train_sizes or the set's size)"
                )
            rng = np.random.default_rng(np.random.SeedSequence([int(sample_seed), int(b)]))
            ids = [ids[i] for i in rng.permutation(len(ids))[:q]]
        parts.extend(ids)
    chosen = pool.filter(pl.col("item_id").is_in(parts))
    key = "measure" if "measure" in chosen.columns else "difficulty"
    if order == "shuffle":
        return chosen.sort("item_id")
    if key not in chosen.columns:
        raise CrossdiffError(f"{where}: a curriculum needs a 'difficulty' (or 'measure') column to order items by")
    desc = order == "hard_to_easy"
    # bin first: the bins were cut with their own tie-breaks (zero-shot 0/1 measures tie on IRT difficulty)
    keys = ["bin", key, *(["difficulty"] if key != "difficulty" and "difficulty" in chosen.columns else []), "item_id"]
    return chosen.sort(keys, descending=desc)


def make_train_set(items_path, bins_path, train_bins, output, size=None, order="shuffle", sample_seed=0,
                   prompt: dict | None = None) -> int:
    """Write the prompt/completion JSONL of one run's training data, rows in training order."""
    from crossdiff.io import read_table, write_jsonl
    from crossdiff.prompts.format import PromptFormat

    fmt = PromptFormat.from_config(prompt)
    bins = read_table(bins_path, "bins table")
    chosen = select_training_items(bins, list(train_bins), size, order, sample_seed, where=str(bins_path))
    items = bin_items(items_path, bins_path, None)
    ordered = pl.DataFrame({"item_id": chosen["item_id"]}).with_row_index("_pos").join(items, on="item_id").sort("_pos")
    from crossdiff.study.sft_data import option_fields  # finetune.objective multiple_choice's options

    rows = [{**fmt.sft_record(item), "item_id": item["item_id"], "bin": int(item["bin"]), **option_fields(fmt, item)}
            for item in ordered.to_dicts()]
    write_jsonl(rows, output)
    return len(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from crossdiff.cli import json_arg

    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet: item_id, difficulty, bin[, heldout])")
    p.add_argument("--train-bins", type=int, nargs="+", required=True, help="bins the run trains on")
    p.add_argument("--size", type=int, help="number of training examples (default: every training item of those bins)")
    p.add_argument("--order", choices=ORDERS, default="shuffle")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the subsample (study.sample_seed)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--output", required=True, help="prompt/completion JSONL to write")


def run(args: argparse.Namespace) -> None:
    n = make_train_set(args.items, args.bins, args.train_bins, args.output, args.size, args.order, args.sample_seed, args.prompt)
    print(f"wrote {n} training examples from bins {args.train_bins} ({args.order}) to {args.output}")
