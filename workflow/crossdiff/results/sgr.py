"""Supervision Gap Recovered (Hase et al. 2024, arXiv 2401.06751), per model x dataset x method x test bin.

``SGR = (easy - unsupervised) / (hard - unsupervised)`` (their ``analysis.Rmd:867, 889``), where *easy* and *hard*
are the test accuracies of the cells trained on (or with demonstrations from) the easy and the hard train bin
(``summary.sgr.easy`` / ``hard``: bin numbers, negative ones from the last; default the first and the last bin)
and *unsupervised* is the results table's zero-shot row on that test bin: the base model with neither training
nor demonstrations, one baseline for every method, as their analysis copies the zero-shot decoding run into the
linear-probe and LoRA rows (``analysis.Rmd:873-885``). They report it on the hard test level; crossdiff reports
every test bin.

Interval: their ``bootstrapBminusAoverCminusA`` (``analysis.Rmd:1128-1180``), with U, E, H the (test items x
runs) correctness matrices of the three cells (runs: the shared-ICL protocol's demonstration bootstraps,
``study.seeds``' fine-tunes; one otherwise; NaN where a run did not test the item, a shared-ICL demonstration on
its own bin): each replicate resamples the item rows with replacement, the SAME rows for U, E and H (paired,
``:1152``), and each matrix's run columns on their own (``:1153-1155``); the statistic is
``mean(E* - U*, na.rm) / mean(H* - U*, na.rm)`` (``:1159``: the mean of the paired differences over the cells
where both are known, U* broadcast over E*'s runs when U has one run, R's recycling, column k against column k
when both have as many runs, anything else not conformable as in R); non-finite replicates are dropped
(``:1163``); percentile interval at ``confidence`` (``:1164-1167``). The point value is their ``SGR_point``
(``analysis.Rmd:1302``): ``(mean(E, na.rm) - mean(U, na.rm)) / (mean(H, na.rm) - mean(U, na.rm))`` over the
matrices' known cells, i.e. each cell's accuracy averaged over its runs (the results table's value for every cell
whose runs test the same items; for a shared-ICL cell on its own bin, the mean of its bootstraps' accuracies,
``value_mean_over_bootstraps``, as their boot-averaged ``test_acc``). The gap ``hard - unsupervised`` and the
easy gain get the same paired replicates' intervals.

A denominator near zero makes the ratio meaningless: the supervision gap ``hard - unsupervised`` gets its own
interval, and when that interval includes 0 the row says so (``sgr_status: gap_interval_includes_0``) and
``sgr_lo``/``sgr_hi`` stay empty (the point value is still given); a gap of exactly 0 gives no SGR
(``zero_gap``); a gap whose interval lies below 0 (hard training worse than none) keeps its interval but says so
(``negative_gap``: there is no gap to recover, the ratio compares two losses). Nothing is divided silently.

Outputs: ``results/tables/sgr.csv`` (columns :data:`COLUMNS`), ``results/figures/sgr.png`` (test accuracy by
train level, unsupervised / easy / hard, per test bin, one panel per model x dataset x method: their main figure's
layout) and ``results/summary/sgr.rst`` (the report's front page shows it after the gain heatmaps).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import iter_jsonl, read_table, require_columns, write_csv, write_text

DEFAULTS = {"easy": 0, "hard": -1, "n_boot": 10000, "seed": 0, "confidence": 0.95}
COLUMNS = ["model", "dataset", "method", "train_size", "test_bin", "easy_bin", "hard_bin", "unsupervised", "easy", "hard",
           "unsupervised_lo", "unsupervised_hi", "easy_lo", "easy_hi", "hard_lo", "hard_hi",
           "easy_gain", "easy_gain_lo", "easy_gain_hi", "gap", "gap_lo", "gap_hi",
           "sgr", "sgr_lo", "sgr_hi", "sgr_status", "n_items", "n_runs_easy", "n_runs_hard", "n_boot", "n_finite"]


def resolve_settings(settings: dict | None, n_bins: int | None = None) -> dict:
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"summary.sgr settings: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    if not (isinstance(s["n_boot"], int) and s["n_boot"] >= 100):
        raise CrossdiffError(f"summary.sgr.n_boot: expected an integer >= 100, got {s['n_boot']!r}")
    if not 0 < float(s["confidence"]) < 1:
        raise CrossdiffError(f"summary.sgr confidence: expected a number in (0, 1), got {s['confidence']!r}")
    for key in ("easy", "hard"):
        b = int(s[key])
        if b < 0:
            if n_bins is None:
                raise CrossdiffError(f"summary.sgr.{key} = {b}: a bin counted from the last needs the number of bins")
            b += n_bins
        s[key] = b
    if s["easy"] == s["hard"]:
        raise CrossdiffError(f"summary.sgr: easy and hard are the same bin ({s['easy']})")
    return s


def sgr(easy: float, hard: float, unsupervised: float) -> float:
    """(easy - unsupervised) / (hard - unsupervised); NaN when the denominator is 0."""
    gap = hard - unsupervised
    return (easy - unsupervised) / gap if gap != 0 else math.nan


# ---------------------------------------------------------------------------------------- per-item runs
def _samples_of(result: Path) -> Path:
    rec = json.loads(result.read_text())
    return result.with_name(rec.get("samples") or (result.stem + ".samples.jsonl"))


def read_runs(result: str) -> dict[str, list[float]]:
    """item_id -> one score per run of a results-table cell: a ';'-joined list of result JSONs (seeds) each of
    whose samples give ``correct`` or, for shared-protocol ICL, ``correct_by_bootstrap`` (null: not tested), for
    probes ``by_bootstrap`` (one ``{"correct": ...}`` per bootstrap's probe)."""
    out: dict[str, list[float]] = {}
    paths = [Path(p) for p in str(result).split(";")]
    for n_path, p in enumerate(paths):
        if not p.exists():
            raise CrossdiffError(f"{p}: result JSON named in the results table not found (SGR's interval needs every "
                                 "result and its per-sample log)")
        sp = _samples_of(p)
        if not sp.exists():
            raise CrossdiffError(f"{p}: per-sample log {sp} not found")
        mine = {}
        for line, row in iter_jsonl(sp):
            if "item_id" not in row or "correct" not in row:
                raise CrossdiffError(f"{sp}: line {line}: expected keys 'item_id' and 'correct'")
            runs = row.get("correct_by_bootstrap")
            if not runs and row.get("by_bootstrap"):  # probe cells: one record per bootstrap's probe
                runs = [None if x is None else x.get("correct") for x in row["by_bootstrap"]]
            mine[str(row["item_id"])] = ([math.nan if v is None else float(v) for v in runs] if runs
                                         else [float(row["correct"])])
        if n_path and set(mine) != set(out):
            raise CrossdiffError(f"{p}: its items differ from {paths[0]}'s; cannot put the runs of one cell together")
        for k, v in mine.items():
            out.setdefault(k, []).extend(v)
    return out


def _matrix(runs: dict[str, list[float]], ids: list[str], where: str) -> np.ndarray:
    if set(runs) != set(ids):
        raise CrossdiffError(f"{where}: its items differ from the zero-shot result's on that test bin "
                             f"({len(set(runs) ^ set(ids))} item_id(s) not in both); cannot pair them")
    widths = {len(runs[i]) for i in ids}
    if len(widths) != 1:
        raise CrossdiffError(f"{where}: items carry different numbers of runs {sorted(widths)}")
    return np.array([runs[i] for i in ids], float)


def _resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float) if n > 1 else np.ones((n_boot, 1))


def paired_bootstrap(u: np.ndarray, e: np.ndarray, h: np.ndarray, n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Their ``bootstrapBminusAoverCminusA`` replicates (``analysis.Rmd:1128-1180``): returns (n_boot,) arrays of
    ``mean(U*)``, ``mean(E*)``, ``mean(H*)``, ``mean(E* - U*, na.rm)`` and ``mean(H* - U*, na.rm)``; U, E, H are
    (items x runs) matrices with NaN where a run did not test an item. One item resample (with replacement) shared
    by the three, each matrix's runs resampled on its own. A difference pairs U's single run with every run of the
    other matrix (R's recycling) or, when both have as many runs, the k-th drawn run of each (R's elementwise
    subtraction); other shapes are not conformable, as in R."""
    n = u.shape[0]
    if e.shape[0] != n or h.shape[0] != n:
        raise CrossdiffError("paired bootstrap: the cells hold different numbers of items")
    items = _resample_counts(n, n_boot, rng)
    cols = [_resample_counts(m.shape[1], n_boot, rng) for m in (u, e, h)]
    means = []
    for m, c in zip((u, e, h), cols):
        seen = ~np.isnan(m)
        num = np.einsum("bi,ir,br->b", items, np.where(seen, m, 0.0), c)
        den = np.einsum("bi,ir,br->b", items, seen.astype(float), c)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(num / den)
    # U's drawn runs in their drawn order, one per replicate, subtracted from both E* and H* (their A_sample)
    u_runs = ([rng.permutation(np.repeat(np.arange(u.shape[1]), cols[0][b].astype(int))) for b in range(n_boot)]
              if u.shape[1] > 1 else None)
    diffs = []
    for m, c in ((e, cols[1]), (h, cols[2])):
        if u.shape[1] == 1:  # U recycled over m's runs: mean over m's drawn cells where both are known
            seen = ~np.isnan(m) & ~np.isnan(u)
            d = np.where(seen, m - u, 0.0)
            num = np.einsum("bi,ir,br->b", items, d, c)
            den = np.einsum("bi,ir,br->b", items, seen.astype(float), c)
        elif u.shape[1] == m.shape[1]:  # column k of m* minus column k of U*: draw the runs as index lists
            num, den = np.zeros(n_boot), np.zeros(n_boot)
            for b in range(n_boot):
                mk = np.repeat(np.arange(m.shape[1]), c[b].astype(int))
                diff = m[:, mk] - u[:, u_runs[b]]
                seen = ~np.isnan(diff)
                num[b] = items[b] @ np.where(seen, diff, 0.0).sum(axis=1)
                den[b] = items[b] @ seen.sum(axis=1)
        else:
            raise CrossdiffError(f"paired bootstrap: the zero-shot cell has {u.shape[1]} runs and a trained cell "
                                 f"{m.shape[1]}: not conformable (their bootstrap subtracts the matrices)")
        with np.errstate(invalid="ignore", divide="ignore"):
            diffs.append(num / den)
    return (*means, *diffs)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    a = (1 - confidence) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------- the table
def compute(table: pl.DataFrame, settings: dict, n_bins: int | None = None, runs: dict | None = None) -> pl.DataFrame:
    """One row per model x dataset x method x test bin (columns :data:`COLUMNS`). ``runs`` maps a result path to
    :func:`read_runs`' output (read from disk when absent)."""
    s = resolve_settings(settings, n_bins)
    require_columns(table, ["model", "dataset", "train_bin", "test_bin", "value", "result"], "results table",
                    "results table")
    runs = runs if runs is not None else {}
    df = table
    if "method" not in df.columns:
        df = df.with_columns(pl.when(pl.col("train_bin") == "zero-shot").then(pl.lit("zero-shot"))
                             .otherwise(pl.lit("sft")).alias("method"))
    if "train_bin_index" not in df.columns:
        df = df.with_columns(pl.col("train_bin").cast(pl.Int64, strict=False).alias("train_bin_index"))
    if "train_set" in df.columns:  # single bins only (a set is not "trained on the easy bin")
        df = df.filter(pl.col("train_set").is_null() | (pl.col("method") == "zero-shot"))
    if "train_size" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Int64).alias("train_size"))

    def get(path):
        if path not in runs:
            runs[path] = read_runs(path)
        return runs[path]

    from crossdiff.study.methods import sort_key

    rows = []
    conf = float(s["confidence"])
    for n_group, ((model, dataset), sub) in enumerate(sorted(df.group_by(["model", "dataset"]),
                                                             key=lambda g: (str(g[0][0]), str(g[0][1])))):
        zero = {int(r["test_bin"]): r for r in sub.filter(pl.col("method") == "zero-shot").iter_rows(named=True)}
        methods = sorted((m for m in sub["method"].unique().to_list() if m != "zero-shot"), key=sort_key)
        variants = [(m, n) for m in methods for n in sorted(
            sub.filter(pl.col("method") == m)["train_size"].unique().to_list(), key=lambda v: (v is None, v or 0))]
        for n_method, (method, size) in enumerate(variants):
            cells = sub.filter((pl.col("method") == method)
                               & (pl.col("train_size").is_null() if size is None else pl.col("train_size") == size))
            by = {(int(r["train_bin_index"]), int(r["test_bin"])): r for r in cells.iter_rows(named=True)
                  if r["train_bin_index"] is not None}
            for t in sorted({int(x) for x in cells["test_bin"].to_list()}):
                where = f"{model}/{dataset}/{method}" + (f" (n={size})" if size is not None else "") + f", test bin {t}"
                missing = [name for name, b in (("easy", s["easy"]), ("hard", s["hard"])) if (b, t) not in by]
                if missing or t not in zero:
                    what = ", ".join(f"the {m} train bin's cell ({s[m]})" for m in missing)
                    raise CrossdiffError(f"summary.sgr: {where} lacks " + (what or "")
                                         + (" and " if what and t not in zero else "")
                                         + ("its zero-shot cell" if t not in zero else ""))
                e_row, h_row, u_row = by[(s["easy"], t)], by[(s["hard"], t)], zero[t]
                u_runs = get(u_row["result"])
                ids = sorted(u_runs)
                mats = [_matrix(u_runs, ids, u_row["result"]), _matrix(get(e_row["result"]), ids, e_row["result"]),
                        _matrix(get(h_row["result"]), ids, h_row["result"])]
                rng = np.random.default_rng(np.random.SeedSequence([int(s["seed"]), n_group, n_method, t]))
                u, e, h, e_u, h_u = paired_bootstrap(*mats, int(s["n_boot"]), rng)
                U, E, H = (float(np.nanmean(m)) for m in mats)  # their SGR_point (analysis.Rmd:1302)
                with np.errstate(invalid="ignore", divide="ignore"):
                    boots = e_u / h_u
                finite = boots[np.isfinite(boots)]
                gap_lo, gap_hi = _interval(h_u, conf)
                point = sgr(E, H, U)
                if H - U == 0:
                    status, lo, hi = "zero_gap", math.nan, math.nan
                elif not (gap_lo > 0 or gap_hi < 0):
                    status, lo, hi = "gap_interval_includes_0", math.nan, math.nan
                else:  # hard below unsupervised: no gap to recover, the ratio compares two losses (said so)
                    status = "ok" if gap_lo > 0 else "negative_gap"
                    lo, hi = _interval(boots, conf)
                row = {"model": model, "dataset": dataset, "method": method, "train_size": size, "test_bin": t,
                       "easy_bin": s["easy"], "hard_bin": s["hard"], "unsupervised": U, "easy": E, "hard": H}
                for name, rep in (("unsupervised", u), ("easy", e), ("hard", h)):
                    row[f"{name}_lo"], row[f"{name}_hi"] = _interval(rep, conf)
                row["easy_gain"] = E - U
                row["easy_gain_lo"], row["easy_gain_hi"] = _interval(e_u, conf)
                row.update({"gap": H - U, "gap_lo": gap_lo, "gap_hi": gap_hi, "sgr": point, "sgr_lo": lo,
                            "sgr_hi": hi, "sgr_status": status, "n_items": len(ids), "n_runs_easy": mats[1].shape[1],
                            "n_runs_hard": mats[2].shape[1], "n_boot": int(s["n_boot"]), "n_finite": int(finite.size)})
                rows.append(row)
    if not rows:
        raise CrossdiffError("summary.sgr: the results table has no trained or in-context cells")
    out = pl.DataFrame(rows, schema_overrides={"train_size": pl.Int64}).select(COLUMNS)
    return out.with_columns(pl.col(pl.Float64).fill_nan(None))  # no value: an empty cell, not NaN


# ---------------------------------------------------------------------------------------- figure and text
def _level_names(n: int) -> list[str]:
    return ["easy", "medium", "hard"] if n == 3 else [f"bin {t}" for t in range(n)]


def figure(df: pl.DataFrame, path, confidence: float = 0.95) -> None:
    """Their main figure's layout: test accuracy by train level (unsupervised / easy / hard) per test bin, one
    panel per model x dataset (rows) x method (columns), with the SGR of each test bin above its bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossdiff.io import write_figure
    from crossdiff.study.methods import sort_key

    df = _with_variant(df)
    pairs = sorted({(r["model"], r["dataset"]) for r in df.iter_rows(named=True)})
    methods = sorted(set(df["variant"].to_list()), key=sort_key)
    n_test = int(df["test_bin"].max()) + 1
    fig, axes = plt.subplots(len(pairs), len(methods), figsize=(1.2 + 1.3 * n_test * len(methods), 3.2 * len(pairs)),
                             squeeze=False, sharey=True)
    colors = {"unsupervised": "0.6", "easy": "tab:blue", "hard": "tab:orange"}
    names = _level_names(n_test)
    for i, (model, dataset) in enumerate(pairs):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            part = df.filter((pl.col("model") == model) & (pl.col("dataset") == dataset) & (pl.col("variant") == method))
            part = part.sort("test_bin")
            x = part["test_bin"].to_numpy().astype(float)
            for n, kind in enumerate(("unsupervised", "easy", "hard")):
                v = part[kind].cast(pl.Float64).fill_null(np.nan).to_numpy()
                lo = part[f"{kind}_lo"].cast(pl.Float64).fill_null(np.nan).to_numpy()
                hi = part[f"{kind}_hi"].cast(pl.Float64).fill_null(np.nan).to_numpy()
                label = {"unsupervised": "unsupervised (zero-shot)", "easy": f"easy (train bin {part['easy_bin'][0]})",
                         "hard": f"hard (train bin {part['hard_bin'][0]})"}[kind] if len(part) else kind
                ax.bar(x + (n - 1) * 0.27, v, 0.27, color=colors[kind], label=label,
                       yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], capsize=2)
            for r in part.iter_rows(named=True):
                top = np.nanmax([_num(r[k]) for k in ("unsupervised_hi", "easy_hi", "hard_hi", "hard", "easy")])
                txt = "SGR n/a" if not math.isfinite(_num(r["sgr"])) else f"SGR {r['sgr']:.2f}"
                if r["sgr_status"] == "gap_interval_includes_0":
                    txt += "\n(gap CI has 0)"
                elif r["sgr_status"] == "negative_gap":
                    txt += "\n(hard < zero-shot)"
                ax.text(r["test_bin"], (top if math.isfinite(top) else 0) + 0.03, txt, ha="center", va="bottom",
                        fontsize=7)
            ax.set_xticks(range(n_test), [names[t] for t in range(n_test)], fontsize=8)
            ax.set_xlabel("test level")
            ax.set_title(f"{model} / {dataset} [{method}]", fontsize=9)
            ax.set_ylim(0, 1.15)
            if j == 0:
                ax.set_ylabel("test accuracy")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Supervision Gap Recovered (Hase et al. 2024): accuracy by train level, {round(confidence * 100)}% "
                 "paired bootstrap intervals", fontsize=10)
    fig.tight_layout()
    write_figure(fig, path)


def _with_variant(df: pl.DataFrame) -> pl.DataFrame:
    """A ``variant`` column: the method, with its train size when study.train_sizes made one (``sft n=160``)."""
    return df.with_columns(pl.when(pl.col("train_size").is_null()).then(pl.col("method"))
                           .otherwise(pl.format("{} n={}", pl.col("method"), pl.col("train_size"))).alias("variant"))


def _f(x, digits=3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _num(x) -> float:
    return math.nan if x is None else float(x)


def text_rst(df: pl.DataFrame, confidence: float, image=None) -> str:
    """The report's SGR section: what it is, one table row per model x dataset x method x test bin, the figure."""
    conf = round(confidence * 100)
    n_test = int(df["test_bin"].max()) + 1
    names = _level_names(n_test)
    e, h = int(df["easy_bin"][0]), int(df["hard_bin"][0])
    lines = ["Supervision Gap Recovered (Hase et al. 2024)", "--------------------------------------------", "",
             (f"SGR = (easy - unsupervised) / (hard - unsupervised) on each test bin: easy and hard are the cells "
              f"trained on (or with demonstrations from) train bin {e} and train bin {h}, unsupervised the zero-shot row "
              "(the base model without training or demonstrations, one baseline for every method, as Hase et al.'s "
              "analysis copies the zero-shot decoding run into every method's rows). 1 means easy data recovers the "
              f"whole gain of hard data. {conf}% intervals: paired bootstrap over test items (and, within a cell, its "
              "runs: demonstration bootstraps or seeds). Where the supervision gap (hard - unsupervised) has an "
              "interval that includes 0 the ratio is unstable: no SGR interval is given and the row says so."), "",
             ".. list-table::", "   :header-rows: 1", "",
             "   * - model", "     - dataset", "     - method", "     - test bin", "     - unsupervised",
             "     - easy", "     - hard", "     - SGR", f"     - {conf}% CI", "     - note"]
    for r in _with_variant(df).iter_rows(named=True):
        note = {"ok": "", "zero_gap": "hard = unsupervised: no SGR",
                "negative_gap": f"hard below unsupervised (gap {_f(r['gap'])}, {_f(r['gap_lo'])} to {_f(r['gap_hi'])}): "
                                "no gap to recover, the ratio compares two losses",
                "gap_interval_includes_0": f"gap {_f(r['gap'])} ({_f(r['gap_lo'])} to {_f(r['gap_hi'])}) includes 0"}[r["sgr_status"]]
        ci = f"{_f(r['sgr_lo'], 2)} to {_f(r['sgr_hi'], 2)}" if r["sgr_lo"] is not None else "n/a"
        lines += [f"   * - {r['model']}", f"     - {r['dataset']}", f"     - {r['variant']}",
                  f"     - {r['test_bin']} ({names[r['test_bin']]})", f"     - {_f(r['unsupervised'])}",
                  f"     - {_f(r['easy'])}", f"     - {_f(r['hard'])}", f"     - {_f(r['sgr'], 2)}", f"     - {ci}",
                  f"     - {note or '-'}"]
    lines.append("")
    if image is not None and Path(image).exists():
        data = base64.encodebytes(Path(image).read_bytes()).decode("ascii").split()
        lines += [".. raw:: html", "", f'   <p><img alt="{Path(image).name}" style="max-width: 100%" src="data:image/png;base64,',
                  *(f"   {chunk}" for chunk in data), '   "/></p>', ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="tidy results table (parquet, from aggregate)")
    p.add_argument("--csv", required=True, help="SGR table to write (CSV)")
    p.add_argument("--figure", help="the figure (PNG)")
    p.add_argument("--text", help="the report section (reStructuredText, figure embedded)")
    p.add_argument("--n-bins", type=int, help="number of bins (resolves negative easy/hard)")
    p.add_argument("--settings", type=json_arg, default={},
                   help='JSON object: {"easy": 0, "hard": -1, "n_boot": 10000, "seed": 0, "confidence": 0.95}')


def run(args: argparse.Namespace) -> None:
    s = resolve_settings(args.settings, args.n_bins)
    df = compute(read_table(args.table, "results table"), s, args.n_bins)
    write_csv(df, args.csv)
    if args.figure:
        figure(df, args.figure, float(s["confidence"]))
    if args.text:
        write_text(text_rst(df, float(s["confidence"]), args.figure), args.text)
    for r in df.iter_rows(named=True):
        print(f"{r['model']}/{r['dataset']}/{r['method']} test bin {r['test_bin']}: unsupervised {_f(r['unsupervised'])}, "
              f"easy {_f(r['easy'])}, hard {_f(r['hard'])}, SGR {_f(r['sgr'], 2)} [{_f(r['sgr_lo'], 2)}, "
              f"{_f(r['sgr_hi'], 2)}] ({r['sgr_status']})")
