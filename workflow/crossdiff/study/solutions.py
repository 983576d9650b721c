"""Per-model training targets: one model's solutions joined into a dataset's item table.

The authors train MATH on solutions written in a model family's own format
(``Yeganeh/Model-Format-Consistent-Datasets``: ``math-solutions__meta-llama_Llama-3.1-8B-Instruct``
active, ``math-solutions__Qwen_Qwen2.5-14B-Instruct`` beside it). ``models[].solutions.<dataset>``
(the same keys as ``items.solutions``) gives each model its own source; rule ``attach_model_solutions``
writes ``results/items/{dataset}/solutions-{model}.parquet`` (the item table plus ``model_solution``)
and that model's fine-tunes train on ``results/sft/{dataset}/solutions-{model}/{label}.jsonl``.
"""

from __future__ import annotations

import argparse
import re

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_parquet
from crossdiff.items.adapters import attach_solutions


_USES = re.compile(r"\{model_solution(?:[!:][^}]*)?\}")


def uses_model_solution(prompt: dict) -> bool:
    """Whether a dataset's prompt format renders ``{model_solution}`` (its training target, usually)."""
    return any(isinstance(v, str) and _USES.search(v) for v in prompt.values())


def check_model_solutions(models: dict, datasets: dict) -> list[str]:
    """Parse-time problems of per-model solutions.

    ``models``: slug -> models[] entry; ``datasets``: name -> (its resolved prompt section, its
    ``items.solutions`` or None) for the datasets that are fine-tuned. A dataset whose prompt uses
    ``{model_solution}`` without ``items.solutions`` needs ``models[].solutions.<name>`` for every model;
    a model's solutions for a dataset whose prompt does not use them would be silently unused.
    """
    problems = []
    for slug, m in models.items():
        own = m.get("solutions") or {}
        for name, (prompt, shared) in datasets.items():
            uses = uses_model_solution(prompt)
            if uses and not shared and name not in own:
                problems.append(f"model {m['id']!r} has no solutions for dataset {name!r}, whose prompt trains on "
                                f"{{model_solution}}: set models[id={m['id']}].solutions.{name} (or "
                                f"datasets.{name}.items.solutions for every model)")
            if name in own and not uses:
                problems.append(f"models[id={m['id']}].solutions.{name} is set but datasets.{name}.prompt never uses "
                                f"{{model_solution}} (e.g. prompt.target: \" {{model_solution}}\"); the solutions "
                                f"would not be trained on")
    return problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="the dataset's item table")
    p.add_argument("--settings", type=json_arg, required=True,
                   help="JSON: the model's solutions source (models[].solutions.<dataset>: path or hub_id, config, "
                        "split, column, key, key_column)")
    p.add_argument("--dataset", required=True, help="dataset name (messages)")
    p.add_argument("--model-id", required=True, help="the model these solutions are for (messages)")
    p.add_argument("--output", required=True, help="item table with column model_solution")


def run(args: argparse.Namespace) -> None:
    items = read_table(args.items, "item table")
    try:
        df = attach_solutions(items, args.settings, args.dataset)
    except CrossdiffError as exc:  # name the model's entry, not the dataset's items.solutions
        raise CrossdiffError(str(exc).replace(f"datasets.{args.dataset}.items.solutions",
                                              f"models[id={args.model_id}].solutions.{args.dataset}")) from None
    write_parquet(df, args.output)
    print(f"joined {df.height} solutions of {args.model_id} into {args.dataset}'s items: {args.output}")
