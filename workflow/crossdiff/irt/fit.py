"""Stage 2: fit IRT to one dataset's response matrix.

Reads the canonical long table, builds a dense models x items matrix with a missing mask, holds
out a seeded fraction of observed cells, fits the configured engine on the rest, and writes:
item table (item_id, difficulty, difficulty_sd, discrimination, accuracy, n_responses; 3pl/4pl: lambdas;
4pl-standard: guess, ceiling), model
table (model_id, ability, ability_sd, accuracy, n_responses), the held-out cells with their
predicted probability, and a fit summary JSON (settings, sizes, runtime, convergence, held-out
log-likelihood and accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.compute import require_device
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_json, write_parquet
from crossdiff.irt.base import EngineResult, IrtSettings
from crossdiff.irt.engines import fit_engine


@dataclasses.dataclass
class ResponseMatrix:
    Y: np.ndarray  # uint8, models x items
    observed: np.ndarray  # bool
    model_ids: list[str]
    item_ids: list[str]


def to_matrix(df: pl.DataFrame) -> ResponseMatrix:
    model_ids = sorted(df["model_id"].unique().to_list())
    item_ids = sorted(df["item_id"].unique().to_list())
    mi = pl.DataFrame({"model_id": model_ids, "r": np.arange(len(model_ids))})
    ii = pl.DataFrame({"item_id": item_ids, "c": np.arange(len(item_ids))})
    idx = df.join(mi, on="model_id").join(ii, on="item_id")
    Y = np.zeros((len(model_ids), len(item_ids)), np.uint8)
    observed = np.zeros_like(Y, dtype=bool)
    r, c = idx["r"].to_numpy(), idx["c"].to_numpy()
    Y[r, c] = idx["correct"].to_numpy()
    observed[r, c] = True
    return ResponseMatrix(Y, observed, model_ids, item_ids)


def holdout_mask(observed: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random ``fraction`` of observed cells, never a model's or item's last training cell."""
    if fraction <= 0:
        return np.zeros_like(observed)
    rng = np.random.default_rng(seed)
    held = observed & (rng.random(observed.shape) < fraction)
    train = observed & ~held
    # give back held cells of rows/columns that would have no training data left
    for axis in (0, 1):
        empty = train.sum(axis=axis) == 0
        if empty.any():
            if axis == 0:
                held[:, empty] = False
            else:
                held[empty, :] = False
            train = observed & ~held
    return held


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def heldout_metrics(result: EngineResult, m: ResponseMatrix, held: np.ndarray) -> tuple[dict, pl.DataFrame]:
    rows, cols = np.nonzero(held)
    p = np.clip(result.probability(rows, cols), 1e-12, 1 - 1e-12)
    y = m.Y[rows, cols].astype(float)
    table = pl.DataFrame({"model_id": np.asarray(m.model_ids)[rows], "item_id": np.asarray(m.item_ids)[cols],
                          "correct": y.astype(np.int8), "p": p})
    if not len(y):
        return {"n_cells": 0}, table
    base = y.mean()
    return {
        "n_cells": int(len(y)),
        "log_likelihood_per_cell": float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "accuracy": float(np.mean((p > 0.5) == (y == 1))),
        "majority_baseline_accuracy": float(max(base, 1 - base)),
        "brier": float(np.mean((p - y) ** 2)),
    }, table


def options_per_item(item_table: pl.DataFrame | None, item_ids: list[str]) -> np.ndarray | None:
    """Options count per item (NaN where unknown) from an item table's ``n_choices`` column, else the length
    of its ``choices`` (a list, or a JSON list as text); None without a table or either column."""
    if item_table is None or "item_id" not in item_table.columns:
        return None
    if "n_choices" in item_table.columns:
        counts = item_table.select(pl.col("item_id").cast(pl.Utf8), pl.col("n_choices").cast(pl.Float64).alias("k"))
    elif "choices" in item_table.columns:
        def length(v):
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    return None
            return float(len(v)) if isinstance(v, (list, tuple)) else None

        counts = pl.DataFrame({"item_id": item_table["item_id"].cast(pl.Utf8).to_list(),
                               "k": [length(v) for v in item_table["choices"].to_list()]}, schema={"item_id": pl.Utf8, "k": pl.Float64})
    else:
        return None
    k = dict(zip(counts["item_id"].to_list(), counts["k"].to_list()))
    return np.array([np.nan if k.get(i) is None else k[i] for i in item_ids], dtype=np.float64)


def fit_dataset(responses: pl.DataFrame, settings: IrtSettings, holdout_fraction: float, progress: bool = False,
                item_table: pl.DataFrame | None = None):
    """Fit one response matrix. ``item_table`` (optional): its options counts centre the floor prior of the
    fast engine's 3pl / 4pl-standard (``n_choices``, or the length of ``choices``)."""
    m = to_matrix(responses)
    held = holdout_mask(m.observed, holdout_fraction, settings.seed)
    train = m.observed & ~held
    n_options = options_per_item(item_table, m.item_ids)
    start = time.perf_counter()
    result = fit_engine(m.Y, train, settings, progress=progress, n_options=n_options)
    runtime = time.perf_counter() - start
    n_obs = m.observed.sum(0)
    acc_items = (m.Y * m.observed).sum(0) / np.maximum(n_obs, 1)
    n_obs_m = m.observed.sum(1)
    acc_models = (m.Y * m.observed).sum(1) / np.maximum(n_obs_m, 1)
    nan = np.full(len(m.item_ids), np.nan)
    items = pl.DataFrame({
        "item_id": m.item_ids,
        "difficulty": result.difficulty,
        "difficulty_sd": result.difficulty_sd if result.difficulty_sd is not None else nan,
        "discrimination": result.discrimination if result.discrimination is not None else np.ones(len(m.item_ids)),
        "accuracy": acc_items,
        "n_responses": n_obs.astype(np.int64),
    })
    if result.lambdas is not None:  # 3PL guessing floor / 4PL upper asymptote, py-irt's "lambdas"
        items = items.with_columns(pl.Series("lambdas", result.lambdas, dtype=pl.Float64))
    if result.guess is not None:  # the standard 4PL's floor c and ceiling d
        items = items.with_columns(pl.Series("guess", result.guess, dtype=pl.Float64),
                                   pl.Series("ceiling", result.ceiling, dtype=pl.Float64))
    models = pl.DataFrame({
        "model_id": m.model_ids,
        "ability": result.ability,
        "ability_sd": result.ability_sd if result.ability_sd is not None else np.full(len(m.model_ids), np.nan),
        "accuracy": acc_models,
        "n_responses": n_obs_m.astype(np.int64),
    })
    metrics, held_table = heldout_metrics(result, m, held)
    summary = {
        "settings": dataclasses.asdict(settings),
        "model": settings.model,
        "difficulty_column": "difficulty (the model's b)",
        "holdout_fraction": holdout_fraction,
        "n_models": len(m.model_ids), "n_items": len(m.item_ids),
        "n_responses": int(m.observed.sum()), "n_train_responses": int(train.sum()),
        "density": float(m.observed.mean()),
        "runtime_s": runtime,
        "engine_info": result.info,
        "heldout": metrics,
    }
    return items, models, held_table, summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--responses", required=True, help="canonical long parquet")
    p.add_argument("--settings", type=json_arg, required=True, help="JSON: the irt config section")
    p.add_argument("--items-out", required=True)
    p.add_argument("--models-out", required=True)
    p.add_argument("--heldout-out", required=True)
    p.add_argument("--summary-out", required=True)
    p.add_argument("--items", help="item table (optional): options counts (n_choices / choices) centre the floor "
                                   "prior of the fast engine's 3pl and 4pl-standard")
    p.add_argument("--progress", action="store_true")


def run(args: argparse.Namespace) -> None:
    require_device(dict(args.settings).get("device"), "irt.device")  # at job start, before reading anything
    df = read_table(args.responses, "response matrix")
    require_columns(df, ["model_id", "item_id", "correct"], args.responses, "response matrix")
    if df.height == 0:
        raise CrossdiffError(f"{args.responses}: response matrix is empty")
    for column in ("model_id", "item_id", "correct"):
        nulls = df[column].is_null()
        if nulls.any():
            raise CrossdiffError(f"{args.responses}: row {int(nulls.arg_max()) + 1}: empty {column}; the response matrix "
                                 f"needs a {column} in every row (rebuild it with crossdiff import-responses)")
    s = dict(args.settings)
    holdout = float(s.pop("holdout_fraction", 0.05))
    settings = IrtSettings.from_dict(s)
    print(f"fitting {settings.model} with engine {settings.engine} on {df['model_id'].n_unique()} models x "
          f"{df['item_id'].n_unique()} items ({df.height} responses)", flush=True)
    item_table = read_table(args.items, "item table") if getattr(args, "items", None) else None
    items, models, held, summary = fit_dataset(df, settings, holdout, progress=args.progress, item_table=item_table)
    write_parquet(items, args.items_out)
    write_parquet(models, args.models_out)
    write_parquet(held, args.heldout_out)
    write_json(summary, args.summary_out)
    print(f"done in {summary['runtime_s']:.1f} s; held-out: {summary['heldout']}")
