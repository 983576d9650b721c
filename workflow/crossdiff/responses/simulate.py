"""A simulated leaderboard for the embedded default: models answering the generated benchmark.

Abilities, discriminations and difficulties are drawn from a known 2PL; each item's true difficulty
is a function of its generator features (more operations, bigger operands, multiplication make it
harder) plus noise, so "human" difficulty metrics correlate with IRT difficulty as on real data.
Some cells are missing, and a few models are exact copies of others (as merged or re-uploaded
models are on the real leaderboard) so the de-duplication filter has work to do. The truth is
written out so tests and the report can show recovery.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.io import read_table, require_columns, write_parquet

# weight of each generator feature in the true difficulty (missing features count 0)
FEATURE_WEIGHTS = {"n_ops": 0.8, "max_digits": 0.9, "has_mul": 0.6}


def true_difficulty(items: pl.DataFrame, rng: np.random.Generator, noise_sd: float = 0.5) -> np.ndarray:
    score = np.zeros(items.height)
    for name, w in FEATURE_WEIGHTS.items():
        if name in items.columns:
            score += w * items[name].cast(pl.Float64).to_numpy()
    if score.std() > 0:
        score = (score - score.mean()) / score.std()
    b = 1.2 * score + rng.normal(0.0, noise_sd, items.height)
    return b - b.mean()


def simulate(items: pl.DataFrame, n_models: int, missing_rate: float, n_duplicates: int, seed: int,
             ability_mean: float = 0.0, ability_sd: float = 1.3, discrimination_sd: float = 0.3):
    """Return (responses long table, true item table, true model table)."""
    rng = np.random.default_rng(seed)
    item_ids = items["item_id"].cast(pl.Utf8).to_list()
    b = true_difficulty(items, rng)
    a = rng.lognormal(0.0, discrimination_sd, len(item_ids))
    theta = rng.normal(ability_mean, ability_sd, n_models)
    p = 1.0 / (1.0 + np.exp(-a[None, :] * (theta[:, None] - b[None, :])))
    y = (rng.random(p.shape) < p).astype(np.int8)
    observed = rng.random(p.shape) >= missing_rate
    width = len(str(n_models - 1))
    model_ids = [f"sim-{i:0{width}d}" for i in range(n_models)]
    # exact copies of some models under new names (same answers, same missing pattern)
    src = rng.choice(n_models, size=min(n_duplicates, n_models), replace=False)
    y = np.vstack([y, y[src]])
    observed = np.vstack([observed, observed[src]])
    model_ids += [f"{model_ids[s]}-reupload" for s in src]
    rows, cols = np.nonzero(observed)
    responses = pl.DataFrame({
        "model_id": np.asarray(model_ids)[rows],
        "item_id": np.asarray(item_ids)[cols],
        "correct": y[rows, cols],
    })
    truth_items = pl.DataFrame({"item_id": item_ids, "difficulty": b, "discrimination": a})
    truth_models = pl.DataFrame({"model_id": model_ids[:n_models], "ability": theta})
    return responses, truth_items, truth_models


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table with generator features")
    p.add_argument("--settings", type=json_arg, required=True,
                   help='JSON: {"n_models", "missing_rate", "n_duplicates", "seed"}')
    p.add_argument("--output", required=True, help="simulated responses (long parquet)")
    p.add_argument("--truth-items", required=True)
    p.add_argument("--truth-models", required=True)


def run(args: argparse.Namespace) -> None:
    items = read_table(args.items, "item table")
    require_columns(items, ["item_id"], args.items, "item table")
    s = args.settings
    responses, ti, tm = simulate(items, int(s["n_models"]), float(s["missing_rate"]),
                                 int(s.get("n_duplicates", 0)), int(s["seed"]))
    write_parquet(ti, args.truth_items)
    write_parquet(tm, args.truth_models)
    write_parquet(responses, args.output)
    print(f"simulated {tm.height} models (+{int(s.get('n_duplicates', 0))} copies) x {ti.height} items: "
          f"{responses.height} responses")
