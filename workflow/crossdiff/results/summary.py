"""``crossdiff summarize``: the study's answer as numbers (slope of gain on |gap|, asymmetry, best
train bin per test bin, with bootstrap intervals), a figure across models and datasets, and a
generated paragraph for the report's front page. Statistics: :mod:`crossdiff.results.summary_stats`;
figure and text: :mod:`crossdiff.results.summary_report`.

Outputs: ``--csv`` one row per model x dataset (columns ``slope``, ``slope_lo``, ``slope_hi``,
``intercept``, ``easy_to_hard``, ``hard_to_easy``, ``asymmetry``, ``near_gain``, ``far_gain``, each
with ``_lo``/``_hi``, plus ``n_cells``, ``diagonal``, ``resample``, ``n_boot``,
``best_within_near_gap``, ``n_test_bins``); ``--best`` one row per model x dataset x test bin
(``best_train_bin`` and ``gap`` empty when train bins tie, ``tied_train_bins``, ``gain``, ``best_share``, ``significant``); ``--figure`` a PNG;
``--text`` a reStructuredText snippet (paragraphs + the ``--images`` embedded).
"""

from __future__ import annotations

import argparse

from crossdiff.cli import json_arg
from crossdiff.io import read_table, write_csv
from crossdiff.results.summary_report import figure, text_rst, write_text
from crossdiff.results.summary_stats import DEFAULTS, resolve_settings, statistics, summarize, with_methods
from crossdiff.results.transfer import with_test_datasets

__all__ = ["DEFAULTS", "resolve_settings", "statistics", "summarize"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="tidy results table (parquet, from aggregate)")
    p.add_argument("--csv", required=True, help="summary table to write (CSV, one row per model x dataset)")
    p.add_argument("--best", required=True, help="best train bin per test bin (CSV)")
    p.add_argument("--figure", help="summary figure (PNG)")
    p.add_argument("--text", help="generated paragraph(s) as reStructuredText (for the report)")
    p.add_argument("--images", nargs="*", default=[], help="PNGs embedded after the text (e.g. gain heatmaps)")
    p.add_argument("--run-record", help="results/summary/run.json: the config of this run (crossdiff.results.run_record)")
    p.add_argument("--run-config", type=json_arg, default=None, help='JSON object {"config", "configfiles"} for --run-record')
    p.add_argument("--settings", type=json_arg, default={},
                   help='JSON object: {"n_boot", "seed", "confidence", "resample", "diagonal", "near_gap", "group_by"}')


def run(args: argparse.Namespace) -> None:
    s = resolve_settings(args.settings)
    df = read_table(args.table, "results table")
    df, s = with_methods(df, s)  # ICL cells: one summary row per method, in the text and the figure too
    df, s = with_test_datasets(df, s)  # test_on cells: one summary row per (dataset, test_dataset)
    summary, best = summarize(df, s)
    write_csv(summary, args.csv)
    write_csv(best, args.best)
    if args.figure:
        figure(summary, best, df, s, args.figure)
    text = text_rst(summary, s, args.images)
    if args.text:
        write_text(text, args.text)
    if args.run_record:
        from crossdiff.results.run_record import write_record

        rc = args.run_config or {}
        write_record(rc.get("config") or {}, rc.get("configfiles") or [], args.run_record)
    print(text.split("\n\n.. raw::")[0])
