"""The study's answer as numbers, per model x dataset (and any extra design columns).

From the tidy results table (``aggregate``) of one group's fine-tuned cells (train bin b, test bin t,
gain g = accuracy - zero-shot accuracy on bin t):

* ``slope``: ordinary least-squares slope of g on |b - t| (gain per bin of train/test gap; negative
  when gains fade with the gap), with its intercept;
* ``easy_to_hard``: mean g over cells trained on an easier bin than tested (b < t);
  ``hard_to_easy``: mean g over b > t; ``asymmetry`` = easy_to_hard - hard_to_easy;
* ``near_gain`` / ``far_gain``: mean g over cells with |b - t| <= ``near_gap`` / beyond it;
* the best train bin of each test bin (largest gain) and the share of bootstrap resamples in which
  that same bin is the best.

The diagonal (b = t) takes part only when ``diagonal`` is ``include``: when train and test items are
the same (no held-out split) its gain measures memorisation, not generalisation, so the default
leaves it out. Cross-dataset cells (``datasets.<d>.test_on``: ``test_dataset`` differs from ``dataset``) are
summarized per (dataset, test_dataset) against the test dataset's zero-shot cells
(:mod:`crossdiff.results.transfer`), their diagonal always included (bins of two datasets, different items).

Intervals are percentile bootstrap intervals at ``confidence``. ``resample: items`` (default)
resamples each test bin's items with replacement, the same resample for every checkpoint and the
zero-shot model on that bin (the paired scheme of ``aggregate``), recomputes every cell's gain from
the per-item scores and then every statistic: the interval covers the test-item sampling noise of
the whole heatmap. ``resample: cells`` resamples the cells themselves (no per-item logs needed;
``best_share`` is then left empty).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.results.ties import split_share, winners
from crossdiff.results.transfer import with_test_datasets

DEFAULTS = {
    "n_boot": 1000,
    "seed": 0,
    "confidence": 0.95,
    "resample": "items",
    "diagonal": "exclude",
    "near_gap": 1,
    "group_by": [],
}
REQUIRED = ["model", "dataset", "train_bin", "test_bin", "value", "gain"]
STATS = ("slope", "intercept", "easy_to_hard", "hard_to_easy", "asymmetry", "near_gain", "far_gain")


def resolve_settings(settings: dict | None) -> dict:
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"summary settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    if s["resample"] not in ("items", "cells"):
        raise CrossdiffError(f"summary settings.resample: expected 'items' or 'cells', got {s['resample']!r}")
    if s["diagonal"] not in ("include", "exclude"):
        raise CrossdiffError(f"summary settings.diagonal: expected 'include' or 'exclude', got {s['diagonal']!r}")
    if not (isinstance(s["n_boot"], int) and s["n_boot"] >= 10):
        raise CrossdiffError(f"summary settings.n_boot: expected an integer >= 10, got {s['n_boot']!r}")
    if not (0 < float(s["confidence"]) < 1):
        raise CrossdiffError(f"summary settings.confidence: expected a number in (0, 1), got {s['confidence']!r}")
    if not isinstance(s["group_by"], list):
        raise CrossdiffError(f"summary settings.group_by: expected a list of column names, got {s['group_by']!r}")
    return s


# ---------------------------------------------------------------------------------- statistics
def statistics(train: np.ndarray, test: np.ndarray, gains: np.ndarray, near_gap: int) -> dict[str, np.ndarray]:
    """Every statistic for one or many gain vectors: ``gains`` is (n_cells,) or (n_boot, n_cells);
    ``train``/``test`` the cells' bins. NaN where a statistic has no cells (e.g. no b > t cell)."""
    g = np.atleast_2d(np.asarray(gains, float))
    gap = np.abs(np.asarray(train) - np.asarray(test)).astype(float)
    out: dict[str, np.ndarray] = {}
    xc = gap - gap.mean()
    sxx = float((xc**2).sum())
    if sxx > 0:
        out["slope"] = (g * xc).sum(axis=1) / sxx
        out["intercept"] = g.mean(axis=1) - out["slope"] * gap.mean()
    else:  # a single gap value: no slope
        out["slope"] = out["intercept"] = np.full(g.shape[0], np.nan)

    def mean_over(mask):
        return g[:, mask].mean(axis=1) if mask.any() else np.full(g.shape[0], np.nan)

    out["easy_to_hard"] = mean_over(np.asarray(train) < np.asarray(test))
    out["hard_to_easy"] = mean_over(np.asarray(train) > np.asarray(test))
    out["asymmetry"] = out["easy_to_hard"] - out["hard_to_easy"]
    out["near_gain"] = mean_over(gap <= near_gap)
    out["far_gain"] = mean_over(gap > near_gap)
    return out


def best_train_bins(train: np.ndarray, test: np.ndarray, gains: np.ndarray) -> dict[int, np.ndarray]:
    """test bin -> index (into the cells) of its best cell, per row of ``gains`` (n_boot, n_cells)."""
    g = np.atleast_2d(gains)
    out = {}
    for t in sorted(set(np.asarray(test).tolist())):
        idx = np.flatnonzero(np.asarray(test) == t)
        out[int(t)] = idx[np.argmax(g[:, idx], axis=1)]
    return out


def _interval(boots: np.ndarray, confidence: float) -> tuple[float, float]:
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------- resampling
def _read_scores(result: str) -> dict[str, float]:
    """Per-item scores of one result JSON (its per-sample log beside it, as ``aggregate`` reads it)."""
    p = Path(result)
    if not p.exists():
        raise CrossdiffError(f"{p}: result JSON named in the results table not found (resample: items needs "
                             f"every result and its per-sample log; use resample: cells without them)")
    from crossdiff.results.aggregate import _read_samples

    return _read_samples(p, json.loads(p.read_text()))


def item_bootstrap(cells: pl.DataFrame, zero: pl.DataFrame, n_boot: int, rng: np.random.Generator,
                   scores: dict | None = None) -> np.ndarray:
    """(n_boot, n_cells) bootstrap gains: each test bin's items resampled once per replicate and
    shared by all its cells and its zero-shot result. ``scores`` maps a result path to its per-item
    scores (read from disk when absent)."""
    scores = scores if scores is not None else {}

    def get(path):
        if path not in scores:
            # a cell averaged over seeds (study.seeds) names each seed's result, ';'-joined: its per-item
            # score is the mean over seeds (so the cell's gain is recovered; the interval is item-only)
            parts = [scores[p] if p in scores else _read_scores(p) for p in path.split(";")]
            if any(set(x) != set(parts[0]) for x in parts[1:]):
                raise CrossdiffError(f"{path}: the seeds' results hold different items; cannot average them")
            scores[path] = {k: float(np.mean([x[k] for x in parts])) for k in parts[0]}
        return scores[path]

    out = np.empty((n_boot, cells.height))
    zero_by_test = {int(r["test_bin"]): r for r in zero.iter_rows(named=True)}
    for t in sorted(cells["test_bin"].unique().to_list()):
        if t not in zero_by_test:
            raise CrossdiffError(f"summary: no zero-shot result for test bin {t} of "
                                 f"{cells['model'][0]}/{cells['dataset'][0]}; gains cannot be resampled")
        zrow = zero_by_test[t]
        zs = get(zrow["result"])
        ids = sorted(zs)
        rows = [i for i, v in enumerate(cells["test_bin"].to_list()) if v == t]
        mat = [np.array([zs[i] for i in ids])]
        for i in rows:
            mine = get(cells["result"][i])
            if set(mine) != set(zs):
                raise CrossdiffError(f"{cells['result'][i]}: its items differ from the zero-shot result's "
                                     f"({zrow['result']}) on test bin {t}; cannot pair them")
            mat.append(np.array([mine[k] for k in ids]))
        m = np.vstack(mat)  # (1 + cells of bin t, items)
        for j, i in enumerate(rows, start=1):
            got = m[j].mean() - m[0].mean()
            if abs(got - cells["gain"][i]) > 1e-6:
                raise CrossdiffError(f"{cells['result'][i]}: per-sample scores give gain {got:.6f} but the "
                                     f"results table says {cells['gain'][i]:.6f}; re-run aggregate")
        counts = rng.multinomial(m.shape[1], np.full(m.shape[1], 1.0 / m.shape[1]), size=n_boot)
        means = counts @ m.T / m.shape[1]  # (n_boot, rows)
        out[:, rows] = means[:, 1:] - means[:, :1]
    return out


def cell_bootstrap(gains: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_cells) resampled cell indices (not gains): the caller indexes train/test too."""
    return rng.integers(0, gains.size, size=(n_boot, gains.size))


# ---------------------------------------------------------------------------------- driver
def _groups(df: pl.DataFrame, by: list[str]):
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise CrossdiffError(f"summary settings.group_by: column(s) {missing} not in the results table "
                             f"(columns: {df.columns})")
    return df.group_by(by, maintain_order=True)


def with_methods(df: pl.DataFrame, s: dict) -> tuple[pl.DataFrame, dict]:
    """A table with cells of several methods (``method``, :mod:`crossdiff.study.methods`): each method is
    summarized apart, against the same zero-shot cells (copied per method), with ``method`` added to
    ``group_by`` (a column of the summary and the best-bin tables). A table of fine-tunes only: unchanged."""
    if "method" not in df.columns or "method" in s["group_by"]:
        return df, s
    zero = df.filter(pl.col("train_bin") == "zero-shot")
    rest = df.filter(pl.col("train_bin") != "zero-shot")
    from crossdiff.study.methods import sort_key

    methods = sorted(rest["method"].unique().to_list(), key=sort_key)  # the methods table's order, icl-k by k
    if methods in ([], ["sft"]):
        return df, s
    df = pl.concat([rest.filter(pl.col("method") == m) for m in methods]
                   + [zero.with_columns(pl.lit(m).alias("method")) for m in methods], how="vertical_relaxed")
    return df, {**s, "group_by": [*s["group_by"], "method"]}


def summarize(df: pl.DataFrame, settings: dict | None = None, scores: dict | None = None):
    """(summary table, best-train-bin table) for a tidy results table."""
    s = resolve_settings(settings)
    df, s = with_methods(df, s)
    df, s = with_test_datasets(df, s)  # cross-dataset cells (test_on): one group per (dataset, test_dataset)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CrossdiffError(f"results table lacks column(s) {missing}; expected the table written by aggregate")
    if s["resample"] == "items" and "result" not in df.columns:
        raise CrossdiffError("results table lacks column 'result' (paths of the result JSONs) needed by "
                             "summary resample: items; use resample: cells")
    by = ["model", "dataset", *s["group_by"]]
    if "train_set" in df.columns:  # study.train_sets rows have no single train bin, hence no gap
        sets = df.filter(pl.col("train_set").is_not_null())
        if sets.height:
            print(f"summary: train sets {sorted(sets['train_bin'].unique().to_list())} have no single train bin; "
                  f"the gap statistics use the single-bin runs (the sets are in the heatmaps)")
        df = df.filter(pl.col("train_set").is_null())
    # study.train_sizes: one summary per subsample size (null = the full bin), each against the same zero-shot
    by_size = "train_size" in df.columns and "train_size" not in by and df["train_size"].drop_nulls().len() > 0
    bin_of = pl.col("train_bin_index") if "train_bin_index" in df.columns else pl.col("train_bin").cast(pl.Int64, strict=False)
    groups = []
    for key, sub in _groups(df, by):
        key = dict(zip(by, key))
        zero = sub.filter(pl.col("train_bin") == "zero-shot")
        tuned = sub.filter(pl.col("train_bin") != "zero-shot")
        if by_size:
            for size in sorted(tuned["train_size"].unique().to_list(), key=lambda v: (v is None, v or 0)):
                part = tuned.filter(pl.col("train_size").is_null() if size is None else pl.col("train_size") == size)
                groups.append(({**key, "train_size": size}, zero, part))
        else:
            groups.append((key, zero, tuned))
    rows, best_rows = [], []
    for n_group, (key, zero, cells) in enumerate(groups):
        label = "/".join(str(v) for v in key.values())
        cells = cells.with_columns(bin_of.cast(pl.Int64).alias("_b"), pl.col("test_bin").cast(pl.Int64).alias("_t"))
        bad = cells.filter(pl.col("_b").is_null())
        if bad.height:
            raise CrossdiffError(f"results table: train_bin {bad['train_bin'][0]!r} of {label} is neither "
                                 f"'zero-shot' nor a bin number")
        dup = cells.filter(pl.struct("_b", "_t").is_duplicated())
        if dup.height:
            others = [c for c in df.columns if c not in (*by, "train_bin", "train_bin_index", "test_bin")
                      and dup[c].n_unique() > 1 and c not in ("value", "gain", "gain_lo", "gain_hi", "result",
                                                              "stderr", "zero_shot", "significant", "n_items")]
            raise CrossdiffError(f"results table: {label} has several cells for train bin {dup['_b'][0]}, test bin "
                                 f"{dup['_t'][0]}; add the column(s) that tell them apart to summary.group_by"
                                 + (f" (candidates: {others})" if others else ""))
        diagonal_present = bool((cells["_b"] == cells["_t"]).any())
        # a cross-dataset group's diagonal pairs bins of two datasets, never the same items: always included
        cross = key.get("test_dataset", key["dataset"]) != key["dataset"]
        if s["diagonal"] == "exclude" and not cross:
            cells = cells.filter(pl.col("_b") != pl.col("_t"))
        if cells.height == 0:
            raise CrossdiffError(f"results table: {label} has no fine-tuned cells to summarize"
                                 + (" besides the diagonal (summary.diagonal: exclude)" if diagonal_present else ""))
        cells = cells.sort(["_b", "_t"])
        b, t, g = cells["_b"].to_numpy(), cells["_t"].to_numpy(), cells["gain"].to_numpy().astype(float)
        point = {k: float(v[0]) for k, v in statistics(b, t, g, s["near_gap"]).items()}
        rng = np.random.default_rng(np.random.SeedSequence([s["seed"], n_group]))
        best_boot = None
        if s["resample"] == "items":
            boot_g = item_bootstrap(cells, zero, s["n_boot"], rng, scores)
            boots = statistics(b, t, boot_g, s["near_gap"])
            best_boot = best_train_bins(b, t, boot_g)
        else:
            idx = cell_bootstrap(g, s["n_boot"], rng)
            boots = {k: np.empty(s["n_boot"]) for k in point}
            for r in range(s["n_boot"]):
                one = statistics(b[idx[r]], t[idx[r]], g[idx[r]], s["near_gap"])
                for k in boots:
                    boots[k][r] = one[k][0]
        row = {**key, "n_cells": cells.height,
               "diagonal": "included" if s["diagonal"] == "include" or cross else "excluded",
               "resample": s["resample"], "n_boot": s["n_boot"]}
        for k in STATS:
            lo, hi = _interval(boots[k], float(s["confidence"]))
            row.update({k: point[k], f"{k}_lo": lo, f"{k}_hi": hi})
        best = best_train_bins(b, t, g[None, :])
        n_near = 0
        for test_bin in best:
            idx = np.flatnonzero(t == test_bin)
            top = winners(g[idx])  # tied train bins are reported as a tie, not as the easiest of them
            i = int(idx[top[0]])
            near = all(abs(int(b[idx[k]]) - test_bin) <= s["near_gap"] for k in top)
            n_near += near
            share = split_share(boot_g[:, idx], top) if best_boot is not None else None
            tied = len(top) > 1
            best_rows.append({**key, "test_bin": test_bin, "best_train_bin": None if tied else int(b[i]),
                              "tied_train_bins": " ".join(str(int(b[idx[k]])) for k in top),
                              "gap": None if tied else int(b[i]) - test_bin,
                              "gain": float(g[i]), "best_share": share,
                              "significant": bool(cells["significant"][i]) if "significant" in cells.columns
                              and cells["significant"][i] is not None else None})
        row["best_within_near_gap"] = n_near
        row["n_test_bins"] = len(best)
        rows.append(row)
    return pl.DataFrame(rows), pl.DataFrame(best_rows, schema_overrides={
        "best_share": pl.Float64, "best_train_bin": pl.Int64, "gap": pl.Int64})
