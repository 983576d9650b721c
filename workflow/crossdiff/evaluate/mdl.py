"""Hase et al.'s MDL difficulty (``datasets.<name>.bins.by: mdl:<model slug>`` or ``mdl:avg``).

Their definition (allenai/easy-to-hard-generalization at ad8358e, ``write_MDL_scores``, main.py:99-334): models of
the item's task are fitted on n training items for every n of a grid, in several bootstraps; each scores every item,
and an item's MDL is ``1 - the mean probability of its gold option`` over bootstraps, n (and prompts: one here, as
theirs) (``average_label_confidence = np.nanmean(label_confidences, axis=(0, 2, 3)); 1 - average``,
main.py:296-298). Variants (``bins.mdl.variant``, theirs ``--hardness_method``):

* ``learned``: the linear probe of :mod:`crossdiff.evaluate.probe` (their learned MDL uses the probe's optimiser,
  main.py:214), fitted on n in ``n_grid`` (theirs ``[5, 20, 80, 340, 900]``, main.py:1286-1289), on nested draws:
  the largest n first from the training pool, each smaller one drawn from the previous draw, an n larger than the
  pool takes the whole pool (data_utils.py:1134-1166), ``n_bootstrap`` draws (theirs ``--hardness_bootstraps`` =
  ``-nb`` 5 for learned, run_jobs.py:308), each seeded ``numpy.random.default_rng([seed, fold, bootstrap])``.
* ``decoding``: the zero-shot prompt, one pass (theirs ``supervision_n = [0]``, one bootstrap): the gold option's
  probability after a softmax over the options' summed log-probabilities (LM_utils.py:61-63, 85), i.e. the
  base model's zero-shot label confidence; n_grid and n_bootstrap do not apply.

Their fits train on a separate 1000-item "hardness split" (ARC and GSM8K only) and score the disjoint rest, which
their study then uses; crossdiff keeps every item in the study, so the learned variant is cross-fitted instead: the
items are split into ``folds`` parts (seeded), and each part is scored by probes trained on draws from the other
parts (never on the item itself).

Several models (``mdl:avg``: ``bins.mdl.models``, theirs the four 7B ``globals.hardness_models``, globals.py:57-62):
``measure`` = the plain mean of the models' raw MDL (their ``MDL_<method>_model-avg``, main.py:409-415; the column
they stratify on, utils.py:111-115); ``measure_normed`` = the mean of each model's min-max rescaled MDL
((x - min) / max(x - min), main.py:400-417; theirs only for plots). ``mdl_<slug>`` holds each model's MDL.
Higher = harder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet

PREFIX = "mdl:"
AVG = "avg"
VARIANTS = ("learned", "decoding")
DEFAULTS: dict = {
    "variant": "learned",
    "n_grid": [5, 20, 80, 340, 900],
    "n_bootstrap": 5,
    "folds": 5,
    "models": None,
    "seed": 0,
}


def validate_settings(s: dict, where: str = "bins.mdl") -> dict:
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"{where}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    if s["variant"] not in VARIANTS:
        raise CrossdiffError(f"{where}.variant: expected one of {list(VARIANTS)}, got {s['variant']!r}")
    grid = s["n_grid"]
    if not isinstance(grid, list) or not grid or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in grid):
        raise CrossdiffError(f"{where}.n_grid: expected a non-empty list of integers >= 1, got {grid!r}")
    for key in ("n_bootstrap",):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise CrossdiffError(f"{where}.{key}: expected an integer >= 1, got {s[key]!r}")
    if not isinstance(s["folds"], int) or isinstance(s["folds"], bool) or s["folds"] < 2:
        raise CrossdiffError(f"{where}.folds: expected an integer >= 2, got {s['folds']!r}")
    m = s["models"]
    if m is not None and (not isinstance(m, list) or not m or not all(isinstance(x, str) for x in m)):
        raise CrossdiffError(f"{where}.models: expected null (every model) or a list of model slugs, got {m!r}")
    return s


def nested_draws(pool: list[str], grid: list[int], rng: np.random.Generator) -> dict[int, list[str]]:
    """{n: items} for every n of the grid: largest first, each smaller draw inside the previous one; an n larger
    than what is left takes all of it, permuted (theirs: data_utils.py:1159-1166)."""
    available = sorted(pool)
    out = {}
    for n in sorted(set(grid), reverse=True):
        if len(available) >= n:
            pick = rng.choice(len(available), size=n, replace=False)
        else:
            pick = rng.choice(len(available), size=len(available), replace=False)
        available = [available[i] for i in pick]
        out[n] = available
    return out


def folds_of(ids: list[str], k: int, seed: int) -> list[list[str]]:
    order = [sorted(ids)[i] for i in np.random.default_rng([seed, 0]).permutation(len(ids))]
    return [order[f::k] for f in range(k)]


def label_confidence_decoding(H: dict) -> np.ndarray:
    """The gold option's probability under a softmax over the options' summed log-probabilities (zero-shot)."""
    lp = np.asarray(H["logprob"], dtype=np.float64)
    lp = np.where(np.isnan(lp), -np.inf, lp)
    lp = lp - lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p = p / p.sum(axis=1, keepdims=True)
    return p[np.arange(len(p)), np.asarray(H["gold"], dtype=np.int64)]


def label_confidences_learned(H: dict, probe: dict, s: dict, progress: bool = True) -> np.ndarray:
    """items x bootstraps x n: the gold option's probability under each cross-fitted probe (module doc)."""
    from tqdm import tqdm

    from crossdiff.evaluate.hidden import option_mask
    from crossdiff.evaluate.probe import features, fit_probe, predict

    X = features(H["states"])
    mask = option_mask(H["n_options"], X.shape[1])
    gold = np.asarray(H["gold"], dtype=np.int64)
    ids = list(H["item_id"])
    row = {iid: i for i, iid in enumerate(ids)}
    grid = sorted(set(s["n_grid"]))
    if len(ids) < s["folds"]:
        raise CrossdiffError(f"bins.mdl.folds = {s['folds']}: only {len(ids)} items")
    out = np.full((len(ids), s["n_bootstrap"], len(grid)), np.nan)
    parts = folds_of(ids, s["folds"], s["seed"])
    bar = tqdm(total=len(parts) * s["n_bootstrap"] * len(grid), desc="MDL probe fits", disable=not progress,
               mininterval=5)
    for f, part in enumerate(parts):
        pool = sorted(set(ids) - set(part))
        pi = np.array([row[i] for i in part], dtype=np.int64)
        for r in range(s["n_bootstrap"]):
            draws = nested_draws(pool, grid, np.random.default_rng([s["seed"], f, r]))
            for j, n in enumerate(grid):
                ti = np.array([row[i] for i in draws[n]], dtype=np.int64)
                seed = int(np.random.SeedSequence([s["seed"], f, r, n, 7]).generate_state(1)[0])
                fitted = fit_probe(X[ti], mask[ti], gold[ti], probe, seed=seed)
                p = predict(fitted, X[pi], mask[pi])
                out[pi, r, j] = p[np.arange(len(pi)), gold[pi]]
                bar.update(1)
    bar.close()
    return out


def model_mdl(H: dict, probe: dict, s: dict) -> np.ndarray:
    """One model's MDL per item (its hidden-state file's order)."""
    if s["variant"] == "decoding":
        return 1.0 - label_confidence_decoding(H)
    conf = label_confidences_learned(H, probe, s)
    return 1.0 - np.nanmean(conf, axis=(1, 2))


def min_max(x: np.ndarray) -> np.ndarray:
    """Their [0, 1] rescaling: ``(x - min) / max(x - min)`` (main.py:400-404)."""
    shifted = x - np.min(x)
    top = np.max(shifted)
    return shifted / top if top > 0 else shifted


def mdl_table(hidden: dict[str, str], irt_path, output, settings: dict, probe: dict) -> pl.DataFrame:
    """Every IRT item's MDL from each model's hidden-state file (``hidden``: slug -> path); writes the table."""
    from crossdiff.evaluate.hidden import read_states
    from crossdiff.evaluate.probe import validate_settings as check_probe

    from crossdiff.compute import deterministic_torch

    s = validate_settings(dict(settings))
    probe = check_probe(dict(probe), "study.probe (datasets.<name>.probe)")
    deterministic_torch("cpu")
    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    cols = {}
    t0 = time.time()
    for slug, path in hidden.items():
        H = read_states(path)
        missing = sorted(set(ids) - set(H["item_id"]))
        if missing:
            raise CrossdiffError(f"{path}: no hidden states for {len(missing)} IRT item(s), e.g. {missing[:3]}; "
                                 "rerun rule probe_states")
        values = model_mdl(H, probe, s)
        by_id = dict(zip(H["item_id"], values))
        cols[slug] = np.array([by_id[i] for i in ids], dtype=np.float64)
        if not np.isfinite(cols[slug]).all():
            raise CrossdiffError(f"MDL of {slug} is not finite for some items (NaN probe fits?)")
        print(f"{slug}: {s['variant']} MDL of {len(ids)} items: mean {cols[slug].mean():.4f}, "
              f"min {cols[slug].min():.4f}, max {cols[slug].max():.4f}")
    raw = np.mean(np.stack(list(cols.values())), axis=0)
    normed = np.mean(np.stack([min_max(v) for v in cols.values()]), axis=0)
    table = pl.DataFrame({"item_id": ids, "measure": raw, "measure_normed": normed,
                          **{f"mdl_{slug}": v for slug, v in cols.items()}})
    write_parquet(table, output)
    print(f"MDL ({s['variant']}, {len(cols)} model(s): {', '.join(cols)}) of {len(ids)} items in "
          f"{time.time() - t0:.1f} s -> {output}")
    return table


def _hidden_arg(text: str) -> tuple[str, str]:
    slug, sep, path = text.partition("=")
    if not sep or not slug or not path:
        raise argparse.ArgumentTypeError(f"expected SLUG=PATH, got {text!r}")
    return slug, path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=_hidden_arg, nargs="+", required=True,
                   help="SLUG=PATH: each model's hidden-state file (crossdiff probe-states)")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items to score (all of them)")
    p.add_argument("--settings", type=json_arg, required=True, help="JSON object: the resolved bins.mdl settings")
    p.add_argument("--probe", type=json_arg, required=True, help="JSON object: the dataset's resolved probe settings")
    p.add_argument("--output", required=True, help="per-item table (parquet: item_id, measure, measure_normed, mdl_<slug>)")


def run(args: argparse.Namespace) -> None:
    mdl_table(dict(args.hidden), args.irt, args.output, args.settings, args.probe)
