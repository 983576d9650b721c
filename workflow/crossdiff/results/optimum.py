"""The optimal training difficulty per data size n, and whether it moves with n (Liu et al. 2026; issue 28).

Liu et al. explain the field's contradictory "easy / medium / hard data is best" findings by one observation: the
best training difficulty moves toward harder data as the number of training examples n grows. This module
answers that in numbers for every (model, train dataset, test dataset, method) of a ``study.train_sizes``
design, from the evaluation results of the single-bin runs (``bin<b>-n<k>`` and the full bins ``bin<b>``, with
or without seeds; cross-dataset runs of ``datasets.<d>.test_on`` included):

* **accuracy** of a run = its accuracy over every test item of the test dataset (all its test bins pooled:
  the benchmark score Liu et al. compare), the mean over seeds;
* **best train bin per n** = the train bin of highest accuracy among the runs of that n (a tie is reported as a
  tie: ``best_train_bin`` empty, ``tied_train_bins`` lists them), with its percentile interval over bootstrap
  replicates and the share of replicates it wins (:func:`crossdiff.results.sizes.best_row`, a replicate's tie
  among k bins counting 1/k each);
* **the shift** = B(n_max) - B(n_min), the best train bin at the largest n minus the one at the smallest, where
  B(n) of a replicate is the mean index of the bins that are best in it (one bin, or the tied ones): positive =
  the optimum moves toward harder data as n grows. Its point value uses the point estimates, its interval is the
  percentile interval over the same replicates (every n is resampled jointly: one draw of test items per test
  bin per replicate, shared by every run; each run's seeds drawn with replacement: the two-level bootstrap of
  :func:`crossdiff.results.sizes.size_grid`), and ``share_harder`` / ``share_easier`` are the shares of
  replicates with a positive / negative shift;
* **the slope** = the OLS slope of B(n) on log10(n) over every n of the design (bins per decade of data), with
  its percentile interval over the replicates;
* ``verdict``: "harder with n" when the shift's interval lies above 0, "easier with n" when below, else
  "no clear shift".

The full-size runs (``bin<b>``: every training item of the bin) are the row with ``train_size`` empty; their
``n_train`` is the mean number of training items of the bins (the bins table: bin size minus held-out items)
and is the n of the log-n slope. Replicates are seeded per group (``SeedSequence([seed, model, dataset,
test_dataset if another, method if not sft])``, names hashed): sft's own-dataset group draws exactly the
replicates of ``crossdiff size-difficulty``, so the two tables agree.

Input: the results table (``--table``; the result JSONs and per-sample logs it names are read). Outputs: ``--csv`` (``results/tables/optimum_by_n.csv``: one row per group x n), ``--shift``
(``results/tables/optimum_shift.csv``: one row per group), ``--figure`` (the (n, difficulty) map of every group:
accuracy over train bin x n, the best bin of each n boxed and its interval drawn as a bar), ``--text`` (the
report's paragraph, ``results/summary/optimum.rst``).
"""

from __future__ import annotations

import argparse
import base64
import math
from pathlib import Path

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, write_csv

DEFAULTS = {"n_boot": 1000, "seed": 0, "confidence": 0.95}
FULL = 10**15  # the full-size runs' place in the size order (after every subsample size)


def _settings(settings: dict | None) -> dict:
    s = {**DEFAULTS, **{k: v for k, v in (settings or {}).items() if k in DEFAULTS}}
    if not (isinstance(s["n_boot"], int) and s["n_boot"] >= 10):
        raise CrossdiffError(f"optimum settings.n_boot: expected an integer >= 10, got {s['n_boot']!r}")
    return s


def _rng(s: dict, model: str, dataset: str, test_dataset: str, method: str):
    from crossdiff.results.aggregate import _stable_int

    names = [_stable_int(model), _stable_int(dataset)]
    if test_dataset != dataset:
        names.append(_stable_int(test_dataset))
    if method != "sft":
        names.append(_stable_int(method))
    return np.random.default_rng(np.random.SeedSequence([s["seed"], *names]))


def expected_best(values: np.ndarray, labels) -> np.ndarray:
    """B per row of ``values`` (rows: replicates, columns: train bins ``labels``): the mean label of the columns
    holding the row's maximum (one bin, or the tied ones)."""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    win = np.isclose(v, np.nanmax(v, axis=1, keepdims=True), rtol=1e-12, atol=1e-12)
    return (win * np.asarray(labels, dtype=float)).sum(axis=1) / win.sum(axis=1)


def _interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(x, [alpha, 1 - alpha])
    return float(lo), float(hi)


def optimum(runs: dict, train_counts: dict, settings: dict | None = None):
    """(per-n table, shift table, long accuracy table) of :func:`crossdiff.results.sizes.collect_runs`' groups
    (full-size runs with n None)."""
    from crossdiff.results.sizes import best_row, size_grid

    s = _settings(settings)
    rows, shifts, acc = [], [], []
    for (model, dataset, test_dataset, method), cells in sorted(runs.items()):
        counts = train_counts.get(dataset) or {}
        cells = {(b, FULL if n is None else n): v for (b, n), v in cells.items()}
        grid = size_grid(model, f"{dataset} on {test_dataset}" if test_dataset != dataset else dataset, cells, s,
                         _rng(s, model, dataset, test_dataset, method))
        key = {"model": model, "dataset": dataset, "test_dataset": test_dataset, "method": method}
        full_n = float(np.mean([counts[b] for (b, n) in cells if n == FULL and b in counts] or [np.nan]))
        n_of = {n: (full_n if n == FULL else float(n)) for n in grid["sizes"]}
        acc += [{**key, **r, "train_size": None if r["train_size"] == FULL else r["train_size"],
                 "n_train": n_of[r["train_size"]]} for r in grid["acc"] if r["test"] == "overall"]
        best_b = {}
        for n in grid["sizes"]:
            g = grid["n"][n]
            rows.append({**key, "train_size": None if n == FULL else n, "n_train": n_of[n], **best_row(g, s),
                         "best_expected": float(expected_best(g["point"], g["bins"])[0])})
            best_b[n] = (expected_best(g["point"], g["bins"])[0], expected_best(g["boots"], g["bins"]))
        shifts.append({**key, **shift_row(grid["sizes"], best_b, n_of, s)})
    per_n = pl.DataFrame(rows, schema_overrides={"best_train_bin": pl.Int64, "train_size": pl.Int64})
    return per_n, pl.DataFrame(shifts), pl.DataFrame(acc, schema_overrides={"train_size": pl.Int64})


def shift_row(sizes: list, best_b: dict, n_of: dict, s: dict) -> dict:
    """The shift and slope of the best train bin with n (see the module doc); NaN with fewer than two sizes."""
    out = {"n_sizes": len(sizes), "n_min": n_of[sizes[0]], "n_max": n_of[sizes[-1]],
           "best_at_n_min": float(best_b[sizes[0]][0]), "best_at_n_max": float(best_b[sizes[-1]][0]),
           "shift": math.nan, "shift_lo": math.nan, "shift_hi": math.nan, "share_harder": math.nan,
           "share_easier": math.nan, "slope_log10_n": math.nan, "slope_lo": math.nan, "slope_hi": math.nan,
           "verdict": "one size only", "n_boot": s["n_boot"]}
    if len(sizes) < 2:
        return out
    lo_b, hi_b = best_b[sizes[0]], best_b[sizes[-1]]
    boots = hi_b[1] - lo_b[1]
    out["shift"] = float(hi_b[0] - lo_b[0])
    out["shift_lo"], out["shift_hi"] = _interval(boots, s["confidence"])
    out["share_harder"], out["share_easier"] = float(np.mean(boots > 0)), float(np.mean(boots < 0))
    x = np.log10([n_of[n] for n in sizes])
    if np.all(np.isfinite(x)) and np.ptp(x) > 0:
        xc = x - x.mean()
        point = np.array([best_b[n][0] for n in sizes])
        reps = np.vstack([best_b[n][1] for n in sizes]).T  # (n_boot, sizes)
        out["slope_log10_n"] = float((point - point.mean()) @ xc / (xc @ xc))
        out["slope_lo"], out["slope_hi"] = _interval((reps - reps.mean(axis=1, keepdims=True)) @ xc / (xc @ xc),
                                                     s["confidence"])
    out["verdict"] = ("harder with n" if out["shift_lo"] > 0 else "easier with n" if out["shift_hi"] < 0
                      else "no clear shift")
    return out


def result_paths(table) -> list[str]:
    """Every result JSON a results table names (its ``result`` column; a cell of several seeds names each)."""
    from crossdiff.io import read_table, require_columns

    df = read_table(table, "results table")
    require_columns(df, ["result"], table, "results table (from aggregate)")
    return sorted({p for cell in df["result"].to_list() for p in str(cell).split(";") if p})


def optimum_from_results(paths, bins: dict, settings: dict | None = None):
    """:func:`optimum` of result JSONs; ``bins`` maps each train dataset to its bins table (full-size n)."""
    from crossdiff.results.aggregate import load_results
    from crossdiff.results.sizes import collect_runs, train_counts_of

    df, samples = load_results(paths)
    counts = {d: train_counts_of(p) for d, p in bins.items()}
    runs = collect_runs(df, samples, {})  # full-size runs keep n None: one row, whatever the bins' sizes
    if not runs:
        raise CrossdiffError("no single-bin fine-tuned results given; the optimum per n needs study.train_sizes "
                             "with train bins")
    missing = sorted({d for (_, d, _, _), cells in runs.items() if any(n is None for _, n in cells)} - set(counts))
    if missing:
        raise CrossdiffError(f"full-size runs of {missing} need their bins tables (--bins DATASET=PATH)")
    return optimum(runs, counts, settings)


# ------------------------------------------------------------------------------------------------ report
def _n_label(row: dict) -> str:
    if row["train_size"] is None:
        return f"all ({row['n_train']:.0f})" if math.isfinite(row["n_train"]) else "all"
    return f"{row['train_size']}"


def _group_name(r: dict) -> str:
    where = (f"trained on **{r['dataset']}**, tested on **{r['test_dataset']}**" if r["test_dataset"] != r["dataset"]
             else f"on **{r['dataset']}**")
    return f"**{r['model']}** {where} ({r['method']})"


def paragraphs(per_n: pl.DataFrame, shifts: pl.DataFrame, confidence: float) -> list[str]:
    conf = round(confidence * 100)
    out = []
    for sh in shifts.iter_rows(named=True):
        sub = per_n.filter((pl.col("model") == sh["model"]) & (pl.col("dataset") == sh["dataset"])
                           & (pl.col("test_dataset") == sh["test_dataset"]) & (pl.col("method") == sh["method"]))
        parts = []
        for r in sub.iter_rows(named=True):
            best = (f"bin {r['best_train_bin']}" if r["best_train_bin"] is not None
                    else f"a tie of bins {r['tied_train_bins']}")
            parts.append(f"{best} at n = {_n_label(r)} ({conf}% interval {r['best_lo']} to {r['best_hi']}, best in "
                         f"{r['best_share']:.0%} of resamples)")
        text = f"{_group_name(sh)}: the best train bin (0 = easiest) is " + "; ".join(parts) + "."
        if sh["n_sizes"] >= 2:
            text += (f" From the smallest to the largest n it moves by {sh['shift']:+.2f} bins ({conf}% CI "
                     f"{sh['shift_lo']:+.2f} to {sh['shift_hi']:+.2f}; toward harder bins in {sh['share_harder']:.0%} "
                     f"of resamples, easier in {sh['share_easier']:.0%}); per tenfold n: {sh['slope_log10_n']:+.2f} "
                     f"bins ({conf}% CI {sh['slope_lo']:+.2f} to {sh['slope_hi']:+.2f}). ")
            text += {"harder with n": "The optimum moves toward harder data as n grows (Liu et al.'s finding).",
                     "easier with n": "The optimum moves toward easier data as n grows (against Liu et al.'s finding).",
                     }.get(sh["verdict"], "The interval includes 0: no clear shift of the optimum with n.")
        out.append(text)
    return out


def text_rst(per_n, shifts, confidence: float, figure: str | None = None) -> str:
    lines = ["The optimal training difficulty per n", "--------------------------------------", ""]
    for p in paragraphs(per_n, shifts, confidence):
        lines += [p, ""]
    if figure and Path(figure).exists():
        data = base64.encodebytes(Path(figure).read_bytes()).decode("ascii").split()
        lines += [".. raw:: html", "", f'   <p><img alt="{Path(figure).name}" style="max-width: 100%" '
                  'src="data:image/png;base64,', *(f"   {chunk}" for chunk in data), '   "/></p>', ""]
    return "\n".join(lines)


def plot(per_n: pl.DataFrame, shifts: pl.DataFrame, acc: pl.DataFrame, path, confidence: float) -> None:
    """One (n, difficulty) map per group: rows (model, dataset, test dataset), columns methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crossdiff.io import write_figure
    from crossdiff.study.methods import sort_key

    groups = shifts.select("model", "dataset", "test_dataset").unique(maintain_order=True).rows()
    methods = sorted(shifts["method"].unique().to_list(), key=sort_key)
    tbins = sorted(acc["train_bin"].unique().to_list())
    n_rows = max(len(per_n.filter((pl.col("model") == m) & (pl.col("dataset") == d) & (pl.col("test_dataset") == t)
                                  & (pl.col("method") == me)).rows()) for m, d, t in groups for me in methods) or 1
    fig, axes = plt.subplots(len(groups), len(methods), squeeze=False, constrained_layout=True,
                             figsize=(1.2 + 1.1 * len(tbins) * len(methods) + 1.5 * len(methods),
                                      1.4 + (0.45 * n_rows + 1.0) * len(groups)))
    vmax = float(acc["accuracy"].max() or 1.0)
    conf = round(confidence * 100)
    for i, (model, dataset, test) in enumerate(groups):
        for j, method in enumerate(methods):
            ax = axes[i, j]
            sel = ((pl.col("model") == model) & (pl.col("dataset") == dataset) & (pl.col("test_dataset") == test)
                   & (pl.col("method") == method))
            rows = per_n.filter(sel).to_dicts()
            if not rows:
                ax.axis("off")
                continue
            part = acc.filter(sel)
            labels = [_n_label(r) for r in rows]
            m = np.full((len(rows), len(tbins)), np.nan)
            for r in part.iter_rows(named=True):
                k = next(k for k, x in enumerate(rows) if x["train_size"] == r["train_size"])
                m[k, tbins.index(r["train_bin"])] = r["accuracy"]
            sns.heatmap(m, ax=ax, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=vmax, cbar=False,
                        xticklabels=tbins, yticklabels=labels, annot_kws={"size": 7})
            for k, r in enumerate(rows):
                for tied in str(r["tied_train_bins"]).split():
                    ax.add_patch(plt.Rectangle((tbins.index(int(tied)), k), 1, 1, fill=False, edgecolor="red", lw=2.2))
                lo, hi = tbins.index(r["best_lo"]), tbins.index(r["best_hi"])
                ax.plot([lo + 0.15, hi + 0.85], [k + 0.88, k + 0.88], color="white", lw=2.5, solid_capstyle="butt")
            sh = shifts.filter(sel).row(0, named=True)
            shift = (f"shift {sh['shift']:+.2f} ({conf}% CI {sh['shift_lo']:+.2f}..{sh['shift_hi']:+.2f})"
                     if sh["n_sizes"] >= 2 else "one size")
            where = dataset if test == dataset else f"{dataset} -> {test}"
            ax.set_title(f"{model}: {where} [{method}]\n{shift}", fontsize=9)
            ax.set_xlabel("train bin (0 = easiest)")
            ax.set_ylabel("training examples n")
    fig.suptitle(f"Test accuracy over (train difficulty, n); red: best train bin per n, white bar: its {conf}% interval")
    write_figure(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="tidy results table (from aggregate): the result JSONs it names")
    p.add_argument("--bins", nargs="*", default=[], metavar="DATASET=PATH",
                   help="each train dataset's bins table (the full-size runs' n)")
    p.add_argument("--csv", required=True, help="best train bin per n (results/tables/optimum_by_n.csv)")
    p.add_argument("--shift", required=True, help="the shift of the best bin with n (results/tables/optimum_shift.csv)")
    p.add_argument("--figure", help="the (n, difficulty) maps (PNG)")
    p.add_argument("--text", help="the report's paragraph (reStructuredText)")
    p.add_argument("--settings", type=json_arg, default={}, help='JSON object: {"n_boot", "seed", "confidence"}')


def run(args: argparse.Namespace) -> None:
    bins = {}
    for spec in args.bins:
        name, sep, path = spec.partition("=")
        if not sep:
            raise CrossdiffError(f"--bins {spec!r}: expected DATASET=PATH")
        bins[name] = path
    s = _settings(args.settings)
    per_n, shifts, acc = optimum_from_results(result_paths(args.table), bins, s)
    write_csv(per_n, args.csv)
    write_csv(shifts, args.shift)
    if args.figure:
        plot(per_n, shifts, acc, args.figure, s["confidence"])
    text = text_rst(per_n, shifts, s["confidence"], args.figure)
    if args.text:
        with atomic_path(args.text) as tmp:
            Path(tmp).write_text(text)
    print(text.split("\n\n.. raw::")[0])
