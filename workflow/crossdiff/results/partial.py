"""``crossdiff partial-results``: the study's results so far, from whatever evaluation cells exist.

The aggregate, heatmaps and summary of a run need every cell; after two days of a four-day run this module
shows what exists, through the same functions, clearly labelled partial (``results/partial/``):

* ``progress.csv``: one row per model x dataset x method (``zero-shot``, ``sft``, ``icl-k8``, ...) with
  ``cells_done`` and ``cells_planned``. A *cell* is one planned evaluation result (``results/eval/<model>/
  <dataset>/<label>/bin<t>.json``, one per test bin; a run with several seeds counts each seed's); it is done
  when the JSON and its per-sample log exist and read (a cell being written or unreadable is not done and is
  named in ``unreadable``).
* ``table.csv``: :func:`crossdiff.results.aggregate.aggregate` of the done cells (gains and paired bootstrap
  intervals where the zero-shot cell of the same test bin exists), plus one row of null value per planned
  cell still missing (column ``missing``).
* ``figures/<dataset>/[<method>/]<model>/{accuracy,gain}.png`` (and each dataset's ``gain_vs_gap.png``,
  ``zero_shot.png``): :func:`crossdiff.results.heatmaps.plot_all` on that table with ``partial``: missing cells
  hatched and labelled, titles saying ``PARTIAL (k of n cells)``.
* ``summary.csv`` / ``best_train_bin.csv`` / ``summary.txt``: :func:`crossdiff.results.summary_stats.summarize`
  per model x dataset x method on the cells that have a gain (with their intervals and ``n_cells``), with
  ``cells_done`` / ``cells_planned``; a group that cannot be summarized yet says why (``note``).

The planned cells come from the workflow's plan (``--planned``, written by the rule from
:class:`crossdiff.plan.settings.Plan`); nothing here schedules or waits for a job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, write_csv, write_text


def planned_cells(planned: dict) -> list[dict]:
    """Every planned evaluation cell: model, dataset, eval label, method, table train label, test bin, path.

    ``planned``: ``{"n_bins": N, "models": [slug, ...], "datasets": {name: [eval label, ...]}, "root":
    "results/eval"}`` (the rule's ``--planned``)."""
    from crossdiff.study.designs import parse_label
    from crossdiff.study.methods import split_label

    root = Path(planned.get("root", "results/eval"))
    out = []
    for name, labels in planned["datasets"].items():
        for model in planned["models"]:
            for label in labels:
                if label == "zero-shot":
                    method, cell, index = "zero-shot", "zero-shot", None
                else:
                    method, rest = split_label(label)
                    p = parse_label(rest)
                    cell, index = p["cell"], p["bin"]
                for t in range(int(planned["n_bins"])):
                    out.append({"model": model, "dataset": name, "label": label, "method": method, "train_bin": cell,
                                "train_bin_index": index, "test_bin": t,
                                "path": str(root / model / name / label / f"bin{t}.json")})
    return out


def fingerprint(planned: dict) -> str:
    """A digest of the planned cells that exist (each result and its per-sample log: path, size, mtime): the
    rule's ``state`` param, so a cell written, changed or removed makes the next request rebuild."""
    h = hashlib.sha256()
    for c in planned_cells(planned):
        for path in (c["path"], c["path"][: -len(".json")] + ".samples.jsonl"):
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _done(path: Path) -> bool:
    """A result JSON that exists and reads, with its per-sample log beside it."""
    from crossdiff.results.aggregate import _read_samples

    try:
        rec = json.loads(path.read_text())
        _read_samples(path, rec)
        return all(k in rec for k in ("model", "dataset", "train_bin", "test_bin", "metric", "value", "n_items"))
    except (OSError, ValueError, CrossdiffError):
        return False


def progress(cells: list[dict]) -> tuple[pl.DataFrame, list[dict], list[str]]:
    """(progress table, done cells, unreadable paths)."""
    done, unreadable, counts = [], [], {}
    for c in cells:
        key = (c["model"], c["dataset"], c["method"])
        n = counts.setdefault(key, [0, 0])
        n[1] += 1
        p = Path(c["path"])
        if p.exists():
            if _done(p):
                done.append(c)
                n[0] += 1
            else:
                unreadable.append(str(p))
    rows = [{"model": k[0], "dataset": k[1], "method": k[2], "cells_done": v[0], "cells_planned": v[1]}
            for k, v in counts.items()]
    schema = {"model": pl.Utf8, "dataset": pl.Utf8, "method": pl.Utf8, "cells_done": pl.Int64, "cells_planned": pl.Int64}
    return pl.DataFrame(rows, schema=schema), done, unreadable


#: the aggregate's value columns, null in the row of a missing cell
_VALUES = {"metric": pl.Utf8, "value": pl.Float64, "stderr": pl.Float64, "n_items": pl.Int64, "zero_shot": pl.Float64,
           "gain": pl.Float64, "gain_lo": pl.Float64, "gain_hi": pl.Float64, "significant": pl.Boolean,
           "result": pl.Utf8, "train_set": pl.Utf8, "train_size": pl.Int64, "n_seeds": pl.Int64, "seed_sd": pl.Float64}


def partial_table(cells: list[dict], done: list[dict], aggregate_settings: dict | None) -> pl.DataFrame:
    """The aggregate of the done cells plus a row of null value for every planned cell still missing."""
    from crossdiff.results.aggregate import aggregate

    table = aggregate([c["path"] for c in done], aggregate_settings) if done else None
    have = set()
    if table is not None:
        have = {(r["model"], r["dataset"], r["method"], r["train_bin"], r["test_bin"]) for r in table.iter_rows(named=True)}
    missing, seen = [], set()
    for c in cells:
        key = (c["model"], c["dataset"], c["method"], c["train_bin"], c["test_bin"])
        if key in have or key in seen:
            continue
        seen.add(key)
        missing.append({"model": c["model"], "dataset": c["dataset"], "train_bin": c["train_bin"],
                        "train_bin_index": c["train_bin_index"], "test_bin": c["test_bin"], "method": c["method"],
                        "bin_gap": None if c["train_bin_index"] is None else c["train_bin_index"] - c["test_bin"]})
    gaps = pl.DataFrame(missing, schema={"model": pl.Utf8, "dataset": pl.Utf8, "train_bin": pl.Utf8,
                                         "train_bin_index": pl.Int64, "test_bin": pl.Int64, "method": pl.Utf8,
                                         "bin_gap": pl.Int64})
    gaps = gaps.with_columns(*(pl.lit(None, dtype=t).alias(c) for c, t in _VALUES.items()),
                             pl.lit(True).alias("missing"))
    if table is None:
        return gaps
    return pl.concat([table.with_columns(pl.lit(False).alias("missing")), gaps], how="diagonal_relaxed")


def partial_summary(table: pl.DataFrame, prog: pl.DataFrame, summary_settings: dict | None):
    """(summary, best train bins) per model x dataset x method on the cells with a gain; a group that cannot be
    summarized yet gets a row with its ``note``."""
    from crossdiff.results.summary_stats import resolve_settings, summarize

    s = resolve_settings(summary_settings)
    have = table.filter(~pl.col("missing"))
    rows, best = [], []
    counts = {(r["model"], r["dataset"], r["method"]): (r["cells_done"], r["cells_planned"]) for r in prog.iter_rows(named=True)}
    for (model, name, method), (n_done, n_planned) in counts.items():
        if method == "zero-shot":
            continue
        base = {"model": model, "dataset": name, "method": method, "cells_done": n_done, "cells_planned": n_planned,
                "partial": f"{n_done} of {n_planned} cells"}
        mine = have.filter((pl.col("model") == model) & (pl.col("dataset") == name))
        zero = mine.filter(pl.col("method") == "zero-shot")
        tuned = mine.filter((pl.col("method") == method) & pl.col("gain").is_not_null())
        if tuned.height == 0:
            why = "no cell with a gain yet (a fine-tuned or ICL cell and the zero-shot cell of its test bin)"
            rows.append({**base, "n_cells": 0, "note": why})
            continue
        try:
            summary, b = summarize(pl.concat([zero, tuned], how="vertical_relaxed"), s)
        except CrossdiffError as exc:
            rows.append({**base, "n_cells": 0, "note": str(exc)})
            continue
        for r in summary.iter_rows(named=True):
            rows.append({**base, **{k: v for k, v in r.items() if k not in base}, "note": ""})
        best += [{**{k: base[k] for k in ("model", "dataset", "method")}, **r} for r in b.iter_rows(named=True)]
    return pl.DataFrame(rows, infer_schema_length=None), pl.DataFrame(best, infer_schema_length=None)


def partial_results(planned: dict, settings: dict, outdir) -> dict:
    """Write everything under ``outdir`` (the module docstring); returns the counts."""
    from crossdiff.results.heatmaps import plot_all
    from crossdiff.study.methods import figure_dir, sort_key

    out = Path(outdir)
    cells = planned_cells(planned)
    prog, done, unreadable = progress(cells)
    write_csv(prog.sort(["model", "dataset", "method"]), out / "progress.csv")
    table = partial_table(cells, done, settings.get("aggregate"))
    write_csv(table.sort(["model", "dataset", "method", "train_bin", "test_bin"]), out / "table.csv")
    figures = out / "figures"
    with atomic_path(figures, directory=True) as tmp:
        written = []
        for name in planned["datasets"]:
            sub = table.filter(pl.col("dataset") == name)
            labels = sorted({m for m in sub["method"].to_list() if m != "zero-shot"}, key=sort_key)
            if not labels:  # zero-shot only (no study method): its accuracy rows
                labels = ["sft"]
            for label in labels:
                written += plot_all(sub, Path(tmp) / name / figure_dir(label).rstrip("/"), dataset=name,
                                    show_diagonal=bool(settings.get("show_diagonal")), method=label, partial=True)
    summary, best = partial_summary(table, prog, settings.get("summary"))
    write_csv(summary, out / "summary.csv")
    write_csv(best, out / "best_train_bin.csv")
    n_done, n_planned = int(prog["cells_done"].sum() or 0), int(prog["cells_planned"].sum() or 0)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"PARTIAL RESULTS: {n_done} of {n_planned} planned evaluation cells exist ({stamp}).",
             "Built from whatever cells exist; missing cells are hatched in the figures. Not the study's answer.", ""]
    for r in summary.iter_rows(named=True):
        if r.get("n_cells"):
            conf = (settings.get("summary") or {}).get("confidence", 0.95)
            lines.append(f"{r['model']} / {r['dataset']} / {r['method']} ({r['partial']}; n_cells {r['n_cells']}): "
                         f"slope {r['slope']:+.4f} [{r['slope_lo']:+.4f}, {r['slope_hi']:+.4f}] ({conf:.0%} interval), "
                         f"near gain {r['near_gain']:+.4f}, far gain {r['far_gain']:+.4f}")
        else:
            lines.append(f"{r['model']} / {r['dataset']} / {r['method']} ({r['partial']}): {r['note']}")
    if unreadable:
        lines += ["", f"{len(unreadable)} result file(s) exist but do not read yet (being written?):",
                  *[f"  {p}" for p in unreadable[:20]]]
    write_text("\n".join(lines) + "\n", out / "summary.txt")
    return {"cells_done": n_done, "cells_planned": n_planned, "unreadable": unreadable, "figures": len(written)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planned", type=json_arg, required=True,
                   help='JSON object {"n_bins", "models": [slug], "datasets": {name: [eval label]}, "root"}')
    p.add_argument("--settings", type=json_arg, default={},
                   help='JSON object {"aggregate": {...}, "summary": {...}, "show_diagonal": bool}')
    p.add_argument("--outdir", required=True, help="folder of the partial results (results/partial)")


def run(args: argparse.Namespace) -> None:
    got = partial_results(args.planned, args.settings, args.outdir)
    print(f"partial results: {got['cells_done']} of {got['cells_planned']} planned evaluation cells exist; "
          f"{got['figures']} figure(s) in {args.outdir}/figures")
    if got["unreadable"]:
        print(f"{len(got['unreadable'])} result file(s) not readable yet, e.g. {got['unreadable'][0]}")
