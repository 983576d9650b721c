"""Bins cut at quantile levels or given values (bins.scheme quantiles, datasets.<name>.bins.cutoffs): Hase et
al. 2024's three levels, ties at a cut going to the outer level as in their data_utils.py:910-920."""

import json

import numpy as np
import polars as pl
import pytest

from conftest import make_workdir, snakemake
from crossdiff.bins.make import cut_bins, quantile_cuts
from crossdiff.config import validate
from crossdiff.errors import CrossdiffError


def items(values):
    return pl.DataFrame({"item_id": [f"i{k:02d}" for k in range(len(values))], "difficulty": np.linspace(0, 1, len(values)),
                         "measure": [float(v) for v in values]})


def test_three_levels_at_30_and_70_percent_with_ties_as_hase():
    values = [1, 2, 3, 3, 3, 4, 5, 6, 7, 7, 8, 9, 9, 9, 10]
    df = items(values)
    cuts = quantile_cuts(df, "measure", [0.3, 0.7])
    assert cuts == [float(np.quantile(values, 0.3)), float(np.quantile(values, 0.7))]
    table, summary = cut_bins(df, cuts, key="measure")
    got = dict(zip(table["item_id"], table["bin"]))
    # a direct computation of their rule: easy <= q30, elif hard >= q70, else medium
    for iid, v in zip(df["item_id"], values):
        want = 0 if v <= cuts[0] else 2 if v >= cuts[1] else 1
        assert got[iid] == want, (iid, v, cuts)
    assert summary["size"].to_list() == [sum(v <= cuts[0] for v in values), sum(cuts[0] < v < cuts[1] for v in values),
                                         sum(v >= cuts[1] for v in values)]


def test_human_cutoffs_and_an_empty_level():
    df = items([3, 4, 5, 6, 7, 8, 8, 8])  # ARC grades: easy <= 5, hard >= 8
    table, summary = cut_bins(df, [5, 8], key="measure")
    assert summary["size"].to_list() == [3, 2, 3]
    with pytest.raises(CrossdiffError, match=r"bin 1 \(measure in 0\.\.1\) is empty"):
        cut_bins(items([0, 0, 1, 1]), [0, 1], key="measure", what="bins.cutoffs")  # MMLU: high school / college


def config(bins=None, cutoffs=None):
    d = {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}
    if cutoffs is not None:
        d["bins"] = {"cutoffs": cutoffs, "by": "n_ops"}
    return {"datasets": {"d": d}, "bins": bins or {}}


def test_n_bins_follows_the_scheme_and_bad_schemes_are_named():
    assert validate(config())["bins"]["n_bins"] == 10
    assert validate(config({"scheme": "quantiles", "edges": [0.3, 0.7]}))["bins"]["n_bins"] == 3
    assert validate(config({"n_bins": 3}, cutoffs=[2, 4]))["bins"]["n_bins"] == 3
    for bad, msg in [({"scheme": "quantiles"}, "needs bins.edges"),
                     ({"scheme": "quantiles", "edges": [0.7, 0.3]}, "strictly ascending"),
                     ({"scheme": "quantiles", "edges": [0.5], "n_bins": 3}, "n_bins = 3 but bins.edges"),
                     ({"edges": [0.5]}, "set scheme: quantiles")]:
        with pytest.raises(CrossdiffError, match=msg):
            validate(config(bad))
    with pytest.raises(CrossdiffError, match=r"datasets.d.bins.cutoffs \[2, 4\] cut 3 bins but bins.n_bins is 10"):
        validate(config(cutoffs=[2, 4]))


def test_the_workflow_passes_the_scheme_to_make_bins(tmp_path):
    cfg = config({"scheme": "quantiles", "edges": [0.1, 0.9]})
    cfg["irt"] = {"stability": {"seeds": []}}
    wd = make_workdir(tmp_path, json.dumps(cfg))
    out = snakemake(wd, "-n", "-p", "--cores", "1", "results/bins/d/bins.parquet").stdout
    assert "--n-bins 3" in out and "--edges 0.1 0.9" in out
