"""Bins from the authors' published difficulties (datasets.<name>.bins.by: published)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from crossdiff.bins.published import load_published, match_published, quantile_bin
from crossdiff.cli import main


def test_quantile_rule_edges_match_the_authors_filter():
    q = np.array([0.0, 0.05, 0.0999999, 0.1, 0.3, 0.7, 0.8999999, 0.9, 0.95, 0.99999, 1.0])
    got = quantile_bin(q, 10)
    # the authors' filter, literally: lower <= q < upper with lower = b/10, upper = (b+1)/10, and
    # their training code's top-bin widening (upper 1 -> 1.01)
    want = []
    for x in q:
        hits = [b for b in range(10) if b / 10 <= x < ((b + 1) / 10 if b < 9 else 1.01)]
        assert len(hits) == 1
        want.append(hits[0])
    assert got.tolist() == want
    assert got.tolist() == [0, 0, 0, 1, 3, 7, 8, 9, 9, 9, 9]
    assert quantile_bin(np.array([0.5, 0.25]), 4).tolist() == [2, 1]
    with pytest.raises(ValueError, match="outside"):
        quantile_bin(np.array([0.2, 1.2]), 10)


def _irt(ids, difficulty):
    return pl.DataFrame({"item_id": ids, "difficulty": difficulty, "accuracy": [0.5] * len(ids)})


def _write_case(tmp_path, quantiles, extra_published=()):
    ids = [f"i{k:02d}" for k in range(len(quantiles))]
    rng = np.random.default_rng(0)
    _irt(ids, rng.normal(size=len(ids)).tolist()).write_parquet(tmp_path / "irt.parquet")
    pub = pl.DataFrame({"id": ids + [e for e in extra_published],
                        "question": [f"question {k}" for k in range(len(ids) + len(extra_published))],
                        "1pl_diff": rng.normal(size=len(ids) + len(extra_published)),
                        "1pl_quantile": list(quantiles) + [0.5] * len(extra_published)})
    pub.write_csv(tmp_path / "published.csv")
    return ids, pub


def test_cli_quantile_bins_exact_membership_and_agreement(tmp_path):
    # two items per bin of 5, with quantiles on the edges 0.2, 0.8 and 1.0
    quantiles = [0.0, 0.1999, 0.2, 0.3, 0.4, 0.5999, 0.6, 0.7999, 0.8, 1.0]
    ids, _ = _write_case(tmp_path, quantiles, extra_published=["not-an-item"])
    spec = {"source": "file", "path": str(tmp_path / "published.csv"), "column": "1pl_quantile", "key": "id",
            "match": "id"}
    assert main(["published-difficulty", "--spec", json.dumps(spec), "--irt-items", str(tmp_path / "irt.parquet"),
                 "--output", str(tmp_path / "pub.parquet")]) == 0
    assert main(["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "5", "--by", "published",
                 "--rule", "quantile", "--measure-table", str(tmp_path / "pub.parquet"),
                 "--output", str(tmp_path / "bins.parquet"), "--summary", str(tmp_path / "summary.csv")]) == 0
    bins = pl.read_parquet(tmp_path / "bins.parquet")
    got = dict(zip(bins["item_id"], bins["bin"]))
    assert got == {ids[k]: b for k, b in enumerate([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])}
    assert "not-an-item" not in got
    # the agreement table compares crossdiff's IRT difficulty with the published value
    assert main(["bin-agreement", "--bins", str(tmp_path / "bins.parquet"), "--n-bins", "5", "--by", "published",
                 "--output", str(tmp_path / "agree.csv"), "--figure", str(tmp_path / "agree.png")]) == 0
    row = pl.read_csv(tmp_path / "agree.csv").row(0, named=True)
    from scipy.stats import spearmanr

    assert row["spearman_measure_irt"] == pytest.approx(spearmanr(bins["measure"], bins["difficulty"]).statistic)


def test_equal_rule_ignores_quantile_edges(tmp_path):
    quantiles = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.9, 0.95, 0.97, 1.0]  # skewed: quantile rule leaves bins empty
    ids, _ = _write_case(tmp_path, quantiles)
    spec = {"source": "file", "path": str(tmp_path / "published.csv")}
    main(["published-difficulty", "--spec", json.dumps(spec), "--irt-items", str(tmp_path / "irt.parquet"),
          "--output", str(tmp_path / "pub.parquet")])
    args = ["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "5", "--by", "published",
            "--measure-table", str(tmp_path / "pub.parquet"), "--output", str(tmp_path / "bins.parquet"),
            "--summary", str(tmp_path / "summary.csv")]
    assert main(args + ["--rule", "quantile"]) == 2  # bin 2 = [0.4, 0.6) is empty: a loud stop
    assert main(args + ["--rule", "equal"]) == 0
    bins = pl.read_parquet(tmp_path / "bins.parquet")
    assert dict(zip(bins["item_id"], bins["bin"])) == {ids[k]: k // 2 for k in range(10)}


def test_unmatched_item_is_an_error_naming_it_unless_allowed(tmp_path, capsys):
    ids, pub = _write_case(tmp_path, [0.05, 0.5, 0.95])
    pl.concat([_irt(ids, [0.0, 1.0, 2.0]), _irt(["gpqa-lost-7"], [0.5])]).write_parquet(tmp_path / "irt.parquet")
    spec = {"source": "file", "path": str(tmp_path / "published.csv")}
    args = ["published-difficulty", "--irt-items", str(tmp_path / "irt.parquet"), "--output", str(tmp_path / "p.parquet")]
    assert main(args + ["--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert "gpqa-lost-7" in err and "allow_unmatched" in err
    assert not (tmp_path / "p.parquet").exists()
    assert main(args + ["--spec", json.dumps({**spec, "allow_unmatched": True})]) == 0
    assert "gpqa-lost-7" in capsys.readouterr().out
    assert sorted(pl.read_parquet(tmp_path / "p.parquet")["item_id"]) == ids


def test_match_by_question_text_and_duplicate_keys():
    irt = _irt(["x1", "x2"], [0.0, 1.0])
    items = pl.DataFrame({"item_id": ["x1", "x2"], "question": ["What is 2+2?\n", "Name a prime."]})
    pub = pl.DataFrame({"question": ["Name a prime.", "What is 2+2?"], "1pl_diff": [1.5, -0.5]})
    spec = {"column": "1pl_diff", "key": "question", "match": "question"}
    matched, missing = match_published(irt, pub, spec, items)
    assert missing == []
    assert dict(zip(matched["item_id"], matched["measure"])) == {"x1": -0.5, "x2": 1.5}
    from crossdiff.errors import CrossdiffError

    with pytest.raises(CrossdiffError, match="not unique"):
        match_published(irt, pl.concat([pub, pub]), spec, items)


def test_hub_source_loads_a_local_copy_in_the_cards_layout(tmp_path):
    # the hub card's layout: one config per benchmark, a single train split, declared in README.md
    root = tmp_path / "Cross-Difficulty"
    (root / "arc").mkdir(parents=True)
    pl.DataFrame({"id": ["Mercury_1", "Mercury_2"], "question": ["a", "b"], "1pl_diff": [-1.0, 2.0],
                  "1pl_quantile": [0.1, 0.9]}).write_parquet(root / "arc" / "train-00000-of-00001.parquet")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: arc\n  data_files:\n  - split: train\n"
                                    "    path: arc/train-*\n---\n")
    table = load_published({"source": "hub", "hub_id": str(root), "config": "arc", "split": "train"})
    assert table["id"].to_list() == ["Mercury_1", "Mercury_2"]
    assert table["1pl_quantile"].to_list() == [0.1, 0.9]
    from crossdiff.errors import CrossdiffError

    with pytest.raises(CrossdiffError, match="could not load hub dataset"):
        load_published({"source": "hub", "hub_id": str(root), "config": "no_such_config"})


def test_workflow_bins_by_a_published_file(tmp_path):
    """The DAG: published_difficulty -> make_bins (quantile rule) -> bin_agreement."""
    from conftest import make_workdir, snakemake

    config = """
datasets:
  tiny:
    items: {source: synthetic, n_items: 60, seed: 1}
    responses: {source: simulated, n_models: 40, seed: 2}
    bins:
      by: published
      published: {source: file, path: published.csv, column: 1pl_quantile, key: id, rule: quantile}
filters: {min_responses_per_model: 5, min_responses_per_item: 5}
irt: {engine: fast, holdout_fraction: 0}
bins: {n_bins: 3}
"""
    wd = make_workdir(tmp_path, config)
    snakemake(wd, "results/irt/tiny/items.parquet", "--cores", "1")
    irt = pl.read_parquet(wd / "results/irt/tiny/items.parquet").sort("difficulty")
    n = irt.height
    # the authors' quantiles of their own ranking, here the reverse of crossdiff's difficulty order
    pl.DataFrame({"id": irt["item_id"], "1pl_quantile": [1 - k / (n - 1) for k in range(n)]}).write_csv(wd / "published.csv")
    snakemake(wd, "results/bins/tiny/agreement.csv", "--cores", "1")
    bins = pl.read_parquet(wd / "results/bins/tiny/bins.parquet")
    assert bins.height == n
    want = quantile_bin(np.array([1 - k / (n - 1) for k in range(n)]), 3)
    assert dict(zip(bins["item_id"], bins["bin"])) == dict(zip(irt["item_id"], want.tolist()))
    row = pl.read_csv(wd / "results/bins/tiny/agreement.csv").row(0, named=True)
    assert row["spearman_measure_irt"] < -0.99  # reversed order, seen by the agreement table
