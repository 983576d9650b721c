"""Check ``fast`` 1PL difficulties against published mirt 2PL difficulties on field data.

Inputs: a responses CSV (first column model id, header = item ids, cells 0/1, empty = missing) and
an items CSV with mirt 2PL parameters (columns ``item``, ``a1.x``, ``d.x``); mirt's difficulty is
b = -d.x / a1.x. Prints the Spearman correlation between the two difficulty vectors.

Usage: python benchmarks/field_data_check.py RESPONSES.csv ITEMS.csv
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import torch  # noqa: E402,F401  (imported before the timed fit)

from crossdiff.irt import fast  # noqa: E402
from crossdiff.irt.base import IrtSettings  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("responses")
    ap.add_argument("items")
    args = ap.parse_args(argv)
    resp = pl.read_csv(args.responses, infer_schema_length=0)  # all strings: ids stay ids
    item_ids = resp.columns[1:]
    values = resp.select(item_ids).to_numpy()
    observed = (values != None) & (values != "")  # noqa: E711  (polars gives None for empty cells)
    Y = np.where(observed, values, "0").astype(float).astype(np.uint8)
    items = pl.read_csv(args.items, columns=["item", "a1.x", "d.x"], schema_overrides={"item": pl.Utf8})
    mirt_b = dict(zip(items["item"].to_list(), (-items["d.x"] / items["a1.x"]).to_list()))
    keep = np.array([i in mirt_b for i in item_ids])
    start = time.perf_counter()
    res = fast.fit(Y[:, keep], observed[:, keep], IrtSettings(model="1pl", priors="vague"))
    wall = time.perf_counter() - start
    ref = np.array([mirt_b[i] for i in np.asarray(item_ids)[keep]])
    print(f"models x items: {Y.shape[0]} x {keep.sum()} ({(~observed[:, keep]).mean():.1%} missing); "
          f"fast 1PL in {wall:.2f} s, {res.info['iterations']} sweeps, converged={res.info['converged']}, "
          f"extreme items {res.info['n_extreme_items']}, extreme models {res.info['n_extreme_models']}")
    print(f"Spearman(fast 1PL difficulty, mirt b = -d/a) = {spearmanr(res.difficulty, ref)[0]:.4f}")


if __name__ == "__main__":
    main()
