"""Tidy results table: every (model, dataset, train bin, test bin) cell with gain and paired bootstrap CI.

Input: result JSONs written by :func:`crossdiff.evaluate.run.evaluate_model` (each with its per-sample
log beside it). Output columns:

model, dataset, train_bin ("zero-shot" or the bin number as a string), train_bin_index (int, null for
zero-shot), test_bin, metric, value, stderr, n_items, zero_shot (value of the zero-shot cell on that
test bin), gain (value - zero_shot), gain_lo, gain_hi (95% paired bootstrap interval of the gain),
significant (interval excludes 0), bin_gap (train_bin_index - test_bin), result (path), method (``sft``,
``icl-k<k>`` for in-context learning cells of :mod:`crossdiff.evaluate.icl`, whose train_bin is the bin
the demonstrations come from, or ``zero-shot``), test_dataset (the dataset whose bin ``test_bin`` is: ``dataset``
itself, or another one for a checkpoint of ``dataset`` scored on it, ``datasets.<d>.test_on``; a zero-shot row's
``dataset`` and ``test_dataset`` are the scored dataset, and a cross-dataset cell's gain is over that dataset's
zero-shot cell of the same test bin).

The bootstrap resamples a test bin's items with replacement; the SAME resample indexes the
checkpoint's and the zero-shot model's per-item scores (paired by item_id), so item difficulty
variance cancels. Seeded (``seed``), ``n_boot`` resamples.

Study designs (:mod:`crossdiff.study.designs`): ``train_bin`` is the cell label, today's bin number or e.g.
``set-easy``, ``3-n100``, ``set-easy-n50``; extra columns ``train_set`` (set name or null),
``train_size`` (subsample size or null = full) and ``n_seeds`` / ``seed_sd`` (fine-tunes averaged in
the cell, standard deviation of their accuracies). A cell with several seeds (``study.seeds``)
reports the mean over seeds; its interval is a two-level (hierarchical) paired bootstrap
(:func:`hierarchical_bootstrap`): each resample draws the seeds with replacement and, independently,
the test items with replacement, the same items for every seed and for the zero-shot model, so it
covers both seed variance and item sampling. A single-seed cell gets exactly the paired bootstrap.
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


def _resample_weights(rng, n_boot: int, size: int) -> np.ndarray:
    """(n_boot, size) share of each index in a resample of ``size`` indices drawn with replacement."""
    idx = rng.integers(0, size, size=(n_boot, size)) + size * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * size).reshape(n_boot, size) / size


def hierarchical_bootstrap(runs: np.ndarray, base: np.ndarray, n_boot: int = 1000, seed: int = 0,
                           confidence: float = 0.95):
    """Percentile interval of mean over seeds of mean(runs[s]) - mean(base), seeds AND items resampled.

    ``runs``: (n_seeds, n_items) per-item scores of each fine-tune seed; ``base``: (n_items,) the
    zero-shot scores of the same items. Each resample draws n_seeds seeds with replacement and n_items
    items with replacement (one item draw shared by every seed and the base: paired).
    """
    runs = np.asarray(runs, float)
    base = np.asarray(base, float)
    if runs.ndim != 2 or base.ndim != 1 or runs.shape[1] != base.size or base.size == 0 or runs.shape[0] == 0:
        raise CrossdiffError(f"hierarchical bootstrap needs (seeds, items) and (items,) arrays, got {runs.shape} and {base.shape}")
    rng = np.random.default_rng(seed)
    diff = runs - base
    u = _resample_weights(rng, n_boot, runs.shape[0])
    w = _resample_weights(rng, n_boot, base.size)
    boots = np.einsum("bk,kn,bn->b", u, diff, w)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:4], "little")


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
        # a cross-dataset cell (datasets.<d>.test_on): trained on train_dataset, scored on dataset's bins
        train_ds = str(rec.get("train_dataset") or rec["dataset"])
        key = (rec["model"], train_ds, rec["dataset"], str(rec["train_bin"]), int(rec["test_bin"]))
        if key in samples:
            raise CrossdiffError(f"{p}: duplicate result for model={key[0]} dataset={key[1]} test_dataset={key[2]} "
                                 f"train={key[3]} test={key[4]}")
        samples[key] = _read_samples(p, rec)
        rows.append({
            "model": rec["model"], "dataset": train_ds, "test_dataset": rec["dataset"], "train_bin": str(rec["train_bin"]),
            "test_bin": int(rec["test_bin"]), "metric": rec["metric"], "value": float(rec["value"]),
            "stderr": rec.get("stderr"), "n_items": int(rec["n_items"]), "result": str(p),
        })
    if not rows:
        raise CrossdiffError("no result files given")
    return pl.DataFrame(rows, schema_overrides={"stderr": pl.Float64}), samples


def _cells(df: pl.DataFrame) -> pl.DataFrame:
    """One row per result with its cell label (train_bin without -seed), bin, set, size, seed and method
    (:mod:`crossdiff.study.methods`: ``<label>-<design label>``, sft's without a prefix)."""
    from crossdiff.study.designs import parse_label
    from crossdiff.study.methods import prefixed, split_label

    parts = []
    for r in df.iter_rows(named=True):
        if r["train_bin"] == "zero-shot":
            parts.append({"cell": "zero-shot", "bin": None, "set": None, "n": None, "seed": None, "method": "zero-shot"})
            continue
        method, rest = split_label(r["train_bin"])
        try:
            p = parse_label(rest)
        except CrossdiffError as exc:
            raise CrossdiffError(f"{r['result']}: {exc}") from None
        parts.append({**{k: p[k] for k in ("bin", "set", "n", "seed")}, "cell": prefixed(method, p["cell"]),
                      "method": method})
    extra = pl.DataFrame(parts, schema={"cell": pl.Utf8, "bin": pl.Int64, "set": pl.Utf8, "n": pl.Int64, "seed": pl.Int64,
                                        "method": pl.Utf8})
    return pl.concat([df, extra], how="horizontal")


def design_part(cell: str, method: str) -> str:
    """A cell's ``train_bin`` column: its design label without the method (``icl-k8-3`` -> ``3``)."""
    from crossdiff.study.methods import split_label

    return cell if method in ("zero-shot", "sft") else split_label(cell)[1]


def aggregate(paths, settings: dict | None = None) -> pl.DataFrame:
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"aggregate settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    df, samples = load_results(paths)
    df = _cells(df)
    zero = {(r["model"], r["test_dataset"], r["test_bin"]): r["value"] for r in df.filter(pl.col("cell") == "zero-shot").iter_rows(named=True)}
    out = []
    for key, grp in df.group_by(["model", "dataset", "test_dataset", "cell", "test_bin"], maintain_order=True):
        model, dataset, test_dataset, cell, test_bin = key
        grp = grp.sort("seed", nulls_last=False)
        if cell != "zero-shot" and grp["seed"].null_count() not in (0, grp.height):
            raise CrossdiffError(f"{grp['result'][0]}: cell {cell} mixes runs with and without a seed label")
        first = grp.row(0, named=True)
        row = {k: first[k] for k in ("model", "dataset", "test_dataset", "test_bin", "metric", "n_items")}
        zs_value = zero.get((model, test_dataset, test_bin))
        values = grp["value"].to_numpy()
        row.update({
            "train_bin": design_part(cell, first["method"]), "method": first["method"],
            "train_bin_index": first["bin"], "train_set": first["set"], "train_size": first["n"],
            "value": float(values.mean()), "stderr": first["stderr"] if grp.height == 1 else None,
            "zero_shot": zs_value, "gain_lo": None, "gain_hi": None,
            "result": ";".join(grp["result"].to_list()), "n_seeds": grp.height,
            "seed_sd": float(values.std(ddof=1)) if grp.height > 1 else None,
        })
        zs = samples.get((model, test_dataset, test_dataset, "zero-shot", test_bin))
        if cell != "zero-shot" and zs is not None:
            runs = []
            for r in grp.iter_rows(named=True):
                mine = samples[(model, dataset, test_dataset, r["train_bin"], test_bin)]
                if set(mine) != set(zs):
                    raise CrossdiffError(
                        f"{r['result']}: its items differ from the zero-shot result's items on test bin {test_bin} "
                        f"({len(set(mine) ^ set(zs))} item_id(s) not in both); cannot pair them"
                    )
                runs.append(mine)
            ids = sorted(zs)
            # a stable per-cell seed, distinct per model and dataset: the same cell gets the same
            # resamples on every run, and different models or datasets get independent ones
            names = [_stable_int(model), _stable_int(dataset)]
            if test_dataset != dataset:  # a cross-dataset cell: its own resamples (own cells keep today's seeds)
                names.append(_stable_int(test_dataset))
            cell_id = int(cell) if cell.lstrip("-").isdigit() else _stable_int(cell)
            cell_seed = np.random.SeedSequence([s["seed"], *names, test_bin, cell_id]).generate_state(1)[0]
            base = np.array([zs[i] for i in ids])
            if len(runs) == 1:
                lo, hi = paired_bootstrap(np.array([runs[0][i] for i in ids]), base, n_boot=s["n_boot"],
                                          seed=cell_seed, confidence=s["confidence"])
            else:
                lo, hi = hierarchical_bootstrap(np.array([[m[i] for i in ids] for m in runs]), base, n_boot=s["n_boot"],
                                                seed=cell_seed, confidence=s["confidence"])
            row["gain_lo"], row["gain_hi"] = lo, hi
        out.append(row)
    schema = {"model": pl.Utf8, "dataset": pl.Utf8, "train_bin": pl.Utf8, "train_bin_index": pl.Int64,
              "test_bin": pl.Int64, "metric": pl.Utf8, "value": pl.Float64, "stderr": pl.Float64, "n_items": pl.Int64,
              "zero_shot": pl.Float64, "gain_lo": pl.Float64, "gain_hi": pl.Float64, "result": pl.Utf8,
              "train_set": pl.Utf8, "train_size": pl.Int64, "n_seeds": pl.Int64, "seed_sd": pl.Float64, "method": pl.Utf8,
              "test_dataset": pl.Utf8}
    table = pl.DataFrame(out, schema=schema).with_columns(
        (pl.col("value") - pl.col("zero_shot")).alias("gain"),
        ((pl.col("gain_lo") > 0) | (pl.col("gain_hi") < 0)).alias("significant"),
        (pl.col("train_bin_index") - pl.col("test_bin")).alias("bin_gap"),
    )
    order = ["model", "dataset", "train_bin", "train_bin_index", "test_bin", "metric", "value", "stderr", "n_items",
             "zero_shot", "gain", "gain_lo", "gain_hi", "significant", "bin_gap", "result",
             "train_set", "train_size", "n_seeds", "seed_sd", "method", "test_dataset"]
    return table.select(order).sort(["model", "dataset", "test_dataset", "train_bin_index", "train_set", "train_size",
                                     "method", "test_bin"], nulls_last=False)


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
