"""Prompt/completion JSONL for fine-tuning on one difficulty bin (``results/sft/{dataset}/bin{b}.jsonl``).

Each row holds both renderings produced by :meth:`crossdiff.prompts.PromptFormat.sft_record`
(plain ``prompt``/``completion`` and chat ``system``/``user``/``assistant``); ``finetune`` picks one
according to the model's tokenizer. Items are written in item_id order.
"""

from __future__ import annotations

import argparse
import os

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_jsonl
from crossdiff.prompts import PromptFormat
from crossdiff.study import training_part


def bin_items(items_path, bins_path, b: int | None) -> pl.DataFrame:
    """Items of bin ``b`` (all binned items if None) joined with their bin and difficulty."""
    items = read_table(items_path, "item table")
    require_columns(items, ["item_id", "question", "answer"], items_path, "item table")
    bins = read_table(bins_path, "bins table")
    require_columns(bins, ["item_id", "bin"], bins_path, "bins table")
    items = items.with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("answer").cast(pl.Utf8))
    bins = bins.with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("bin").cast(pl.Int64))
    if items["item_id"].is_duplicated().any():
        dup = items.filter(pl.col("item_id").is_duplicated())["item_id"][0]
        raise CrossdiffError(f"{items_path}: duplicate item_id {dup!r}")
    if b is not None:
        known = sorted(bins["bin"].unique().to_list())
        if b not in known:
            raise CrossdiffError(f"{bins_path}: no items in bin {b}; bins present: {known}")
        bins = bins.filter(pl.col("bin") == b)
    keep = [c for c in ("item_id", "bin", "difficulty", "measure", "heldout") if c in bins.columns]
    joined = bins.select(keep).join(items, on="item_id", how="left", suffix="_bins")
    missing = joined.filter(pl.col("question").is_null())["item_id"].to_list()
    if missing:
        raise CrossdiffError(
            f"{bins_path}: {len(missing)} item_id(s) not in item table {items_path}, e.g. {missing[:3]}"
        )
    return joined.sort("item_id")


def make_sft_data(items_path, bins_path, b: int, output: str | os.PathLike, prompt: dict | None = None) -> int:
    fmt = PromptFormat.from_config(prompt)
    df = training_part(bin_items(items_path, bins_path, b))  # without bins.holdout_fraction's held-out items
    rows = [{**fmt.sft_record(item), "bin": int(item["bin"])} for item in df.to_dicts()]
    write_jsonl(rows, output)
    return len(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet: item_id, difficulty, bin)")
    p.add_argument("--bin", type=int, required=True, help="training bin (0 = easiest)")
    p.add_argument("--output", required=True, help="prompt/completion JSONL to write")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")


def run(args: argparse.Namespace) -> None:
    n = make_sft_data(args.items, args.bins, args.bin, args.output, args.prompt)
    print(f"wrote {n} training examples for bin {args.bin} to {args.output}")
