"""Difficulty as the base model's own zero-shot error (``datasets.<name>.bins.by: zero_shot:<model slug>``).

The base model is scored ONCE on every item of the dataset's IRT table (one lm-eval task over all
items, independent of the bins, so binning by it makes no cycle; one model load through
:func:`crossdiff.evaluate.run.evaluate_model`). The output table has one row per item:
``item_id``, ``correct`` (0/1, the dataset's primary metric and filter) and ``measure = 1 - correct``
(1 = the model gets it wrong = hard). ``crossdiff make-bins --by zero_shot:<slug> --measure-table``
then bins by it; with a 0/1 measure nearly every item ties, so ties are broken by IRT difficulty
and then item_id (:func:`crossdiff.bins.make.make_bins` with ``tiebreak``): bins stay equal-size and
reproducible, and within the "wrong" (or "right") items the order is the IRT order.

The per-item samples (prediction, target) are kept beside the table (``<output>.samples.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_jsonl, write_parquet

PREFIX = "zero_shot:"


def model_of(by: str) -> str | None:
    """The model slug of a ``zero_shot:<slug>`` bins.by value, else None."""
    return by[len(PREFIX):] if by.startswith(PREFIX) else None


def check_by(dataset: str, by: str, models) -> None:
    """Config-time check: ``zero_shot:<slug>`` must name one of the configured models (crossdiff.bins.measures)."""
    from crossdiff.bins.measures import check_by as check

    if model_of(by) is not None:
        check(dataset, by, models)


def measure_table(samples: list[dict], item_ids: list[str], path="samples") -> pl.DataFrame:
    """Per-item table from evaluate's per-sample rows; every IRT item must have exactly one sample."""
    scored = {}
    for row in samples:
        iid = str(row["item_id"])
        if iid in scored:
            raise CrossdiffError(f"{path}: item {iid!r} was scored twice; expected one sample per item")
        scored[iid] = int(row["correct"])
    missing = [i for i in item_ids if i not in scored]
    if missing:
        raise CrossdiffError(
            f"{path}: {len(missing)} item(s) of the IRT table were not scored, e.g. {missing[:3]}; "
            "expected one sample per item (is evaluate.limit set?)"
        )
    table = pl.DataFrame({"item_id": item_ids, "correct": [scored[i] for i in item_ids]},
                         schema={"item_id": pl.Utf8, "correct": pl.Int64})
    return table.with_columns((1 - pl.col("correct")).cast(pl.Float64).alias("measure"))


def score_all_items(items_path, irt_path, model, output, dataset: str, prompt: dict | None = None,
                    settings: dict | None = None, model_name: str | None = None) -> pl.DataFrame:
    from crossdiff.compute import require_device
    from crossdiff.evaluate.run import evaluate_model, make_task, samples_path

    require_device((settings or {}).get("device"), "evaluate.device")  # at job start, before any model loads
    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    if (settings or {}).get("limit"):
        raise CrossdiffError(f"evaluate.limit = {settings['limit']} would score only part of {dataset}'s items; "
                             "bins.by zero_shot needs every item scored: unset evaluate.limit")
    with tempfile.TemporaryDirectory(prefix="crossdiff-zero-shot-") as tmp:
        tmp = Path(tmp)
        all_bins = tmp / "all.parquet"  # every IRT item in one pseudo-bin 0: the task is independent of the bins
        write_parquet(pl.DataFrame({"item_id": ids, "bin": [0] * len(ids)}), all_bins)
        task = tmp / "task"
        make_task(items_path, all_bins, 0, task, f"{dataset}_all", prompt)
        result = tmp / "all.json"
        evaluate_model(model, [task], [result], settings, model_name, "zero-shot")
        samples = [json.loads(line) for line in samples_path(result).read_text().splitlines() if line.strip()]
    table = measure_table(samples, ids, f"zero-shot samples of {model_name or model} on {dataset}")
    write_jsonl(samples, samples_path(Path(str(output)[: -len(".parquet")] + ".json")
                                       if str(output).endswith(".parquet") else Path(str(output) + ".json")))
    write_parquet(table, output)
    return table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet): the items' text")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items to score (all of them)")
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the log")
    p.add_argument("--dataset", required=True, help="dataset name (task name)")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings")
    p.add_argument("--output", required=True, help="per-item table (parquet: item_id, correct, measure)")


def run(args: argparse.Namespace) -> None:
    table = score_all_items(args.items, args.irt, args.model, args.output, args.dataset, args.prompt,
                            args.settings, args.model_name)
    n_wrong = int(table["measure"].sum())
    print(f"{args.model_name or args.model} zero-shot on {table.height} items of {args.dataset}: "
          f"{table.height - n_wrong} correct, {n_wrong} wrong (measure = 1 - correct)")
