"""Tidy results table: every (model, dataset, train bin, test bin) cell with gain and paired bootstrap CI.

Input: result JSONs written by :func:`crossdiff.evaluate.evaluate_model` (each with its per-sample
log beside it). Output columns:

model, dataset, train_bin ("zero-shot" or the bin number as a string), train_bin_index (int, null for
zero-shot), test_bin, metric, value, stderr, n_items, zero_shot (value of the zero-shot cell on that
test bin), gain (value - zero_shot), gain_lo, gain_hi (95% paired bootstrap interval of the gain),
significant (interval excludes 0), bin_gap (train_bin_index - test_bin), result (path).

The bootstrap resamples a test bin's items with replacement; the SAME resample indexes the
checkpoint's and the zero-shot model's per-item scores (paired by item_id), so item difficulty
variance cancels. Seeded (``seed``), ``n_boot`` resamples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import iter_jsonl, write_csv, write_parquet

DEFAULTS = {"n_boot": 1000, "seed": 0, "confidence": 0.95}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95):
    """Percentile interval of mean(a) - mean(b) with items resampled jointly (a[i] paired with b[i])."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise CrossdiffError(f"paired bootstrap needs two equal-length non-empty vectors, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    diff = a - b
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    boots = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _read_samples(result_path: Path, record: dict) -> dict[str, float]:
    sp = result_path.with_name(record.get("samples") or (result_path.stem + ".samples.jsonl"))
    if not sp.exists():
        raise CrossdiffError(f"{result_path}: per-sample log {sp} not found")
    out = {}
    for n, row in iter_jsonl(sp):
        if "item_id" not in row or "correct" not in row:
            raise CrossdiffError(f"{sp}: line {n}: expected keys 'item_id' and 'correct'")
        out[str(row["item_id"])] = float(row["correct"])
    return out


def load_results(paths) -> tuple[pl.DataFrame, dict]:
    rows, samples = [], {}
    for p in map(Path, paths):
        if not p.exists():
            raise CrossdiffError(f"{p}: result JSON not found")
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise CrossdiffError(f"{p}: not valid JSON ({exc.msg})") from None
        for key in ("model", "dataset", "train_bin", "test_bin", "metric", "value", "n_items"):
            if key not in rec:
                raise CrossdiffError(f"{p}: result lacks key {key!r}")
        key = (rec["model"], rec["dataset"], str(rec["train_bin"]), int(rec["test_bin"]))
        if key in samples:
            raise CrossdiffError(f"{p}: duplicate result for model={key[0]} dataset={key[1]} train={key[2]} test={key[3]}")
        samples[key] = _read_samples(p, rec)
        rows.append({
            "model": rec["model"], "dataset": rec["dataset"], "train_bin": str(rec["train_bin"]),
            "test_bin": int(rec["test_bin"]), "metric": rec["metric"], "value": float(rec["value"]),
            "stderr": rec.get("stderr"), "n_items": int(rec["n_items"]), "result": str(p),
        })
    if not rows:
        raise CrossdiffError("no result files given")
    return pl.DataFrame(rows, schema_overrides={"stderr": pl.Float64}), samples


def aggregate(paths, settings: dict | None = None) -> pl.DataFrame:
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"aggregate settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    df, samples = load_results(paths)
    lo_col, hi_col, zs_col = [], [], []
    for row in df.iter_rows(named=True):
        zkey = (row["model"], row["dataset"], "zero-shot", row["test_bin"])
        zs = samples.get(zkey)
        zrow = df.filter(
            (pl.col("model") == row["model"]) & (pl.col("dataset") == row["dataset"])
            & (pl.col("train_bin") == "zero-shot") & (pl.col("test_bin") == row["test_bin"])
        )
        zs_col.append(float(zrow["value"][0]) if zrow.height else None)
        if row["train_bin"] == "zero-shot" or zs is None:
            lo_col.append(None)
            hi_col.append(None)
            continue
        mine = samples[(row["model"], row["dataset"], row["train_bin"], row["test_bin"])]
        if set(mine) != set(zs):
            raise CrossdiffError(
                f"{row['result']}: its items differ from the zero-shot result's items on test bin {row['test_bin']} "
                f"({len(set(mine) ^ set(zs))} item_id(s) not in both); cannot pair them"
            )
        ids = sorted(mine)
        # a stable per-cell seed, distinct per model and dataset: the same cell gets the same
        # resamples on every run, and different models or datasets get independent ones
        names = [int.from_bytes(hashlib.sha256(str(row[k]).encode()).digest()[:4], "little") for k in ("model", "dataset")]
        cell_seed = [s["seed"], *names, row["test_bin"], int(row["train_bin"]) if row["train_bin"].lstrip("-").isdigit() else 0]
        lo, hi = paired_bootstrap(
            np.array([mine[i] for i in ids]), np.array([zs[i] for i in ids]),
            n_boot=s["n_boot"], seed=np.random.SeedSequence(cell_seed).generate_state(1)[0], confidence=s["confidence"],
        )
        lo_col.append(lo)
        hi_col.append(hi)
    out = df.with_columns(
        pl.Series("zero_shot", zs_col, dtype=pl.Float64),
        pl.Series("gain_lo", lo_col, dtype=pl.Float64),
        pl.Series("gain_hi", hi_col, dtype=pl.Float64),
        pl.when(pl.col("train_bin") == "zero-shot").then(None)
        .otherwise(pl.col("train_bin").cast(pl.Int64, strict=False)).alias("train_bin_index"),
    ).with_columns(
        (pl.col("value") - pl.col("zero_shot")).alias("gain"),
        ((pl.col("gain_lo") > 0) | (pl.col("gain_hi") < 0)).alias("significant"),
        (pl.col("train_bin_index") - pl.col("test_bin")).alias("bin_gap"),
    )
    order = ["model", "dataset", "train_bin", "train_bin_index", "test_bin", "metric", "value", "stderr", "n_items",
             "zero_shot", "gain", "gain_lo", "gain_hi", "significant", "bin_gap", "result"]
    return out.select(order).sort(["model", "dataset", "train_bin_index", "test_bin"], nulls_last=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", nargs="+", required=True, help="result JSON files (from evaluate)")
    p.add_argument("--output", required=True, help="tidy table (parquet)")
    p.add_argument("--csv", help="also write this CSV")
    p.add_argument("--settings", type=json_arg, default={}, help='JSON object: {"n_boot": 1000, "seed": 0, "confidence": 0.95}')


def run(args: argparse.Namespace) -> None:
    df = aggregate(args.results, args.settings)
    write_parquet(df, args.output)
    if args.csv:
        write_csv(df, args.csv)
    n_sig = int(df["significant"].sum() or 0)
    print(f"wrote {df.height} cells to {args.output}; {n_sig} fine-tuned cell(s) with a gain interval excluding 0")
