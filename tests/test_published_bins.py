"""Bins from the authors' published difficulties (datasets.<name>.bins.by: published)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from crossdiff.bins.published import load_published, match_items, match_published, quantile_bin, spec_problems
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
    items = pl.DataFrame({"item_id": ["x1", "x2"], "question": ["What is  2+2?\n", "Name a prime."]})
    pub = pl.DataFrame({"question": ["Name a prime.", "What is 2+2?"], "1pl_diff": [1.5, -0.5]})
    spec = {"column": "1pl_diff", "match": "question"}  # key follows match: the card's question column
    matched, missing = match_published(irt, pub, spec, items)
    assert missing == []
    assert dict(zip(matched["item_id"], matched["measure"])) == {"x1": -0.5, "x2": 1.5}
    from crossdiff.errors import CrossdiffError

    with pytest.raises(CrossdiffError, match="not unique"):  # match: id: a repeated key is ambiguous
        match_published(irt, pl.DataFrame({"id": ["x1", "x1"], "1pl_diff": [0.1, 0.2]}), {"column": "1pl_diff"})
    # match: question: a question on two published rows without options to tell them apart gets NO value
    matched, missing = match_items(irt, pl.concat([pub, pub.with_columns(pl.col("1pl_diff") + 1)]), spec, items)
    assert matched.height == 0 and set(missing) == {"x1", "x2"} and "twin question" in missing["x1"]


def test_twin_items_never_share_one_value_silently(tmp_path, capsys):
    """Two items with the same question and one published row (issue 26): neither silently takes the row's value.
    With options on both sides the right twin gets it and the other is listed; without, both are listed."""
    irt = _irt(["0", "1", "2"], [0.0, 1.0, 2.0])
    items = pl.DataFrame({"item_id": ["0", "1", "2"], "question": ["Which is a metal?", "Which is a metal?", "Q3"],
                          "choices": [json.dumps(["iron", "wood"]), json.dumps(["salt", "copper"]), json.dumps(["a", "b"])]})
    pub = pl.DataFrame({"question": ["Which is a metal?", "Q3"], "choices": [{"text": ["salt", "copper"], "label": ["A", "B"]},
                                                                            {"text": ["a", "b"], "label": ["A", "B"]}],
                        "1pl_quantile": [0.7, 0.2]})
    spec = {"column": "1pl_quantile", "match": "question"}
    matched, missing = match_items(irt, pub, spec, items)
    assert dict(zip(matched["item_id"], matched["measure"])) == {"1": 0.7, "2": 0.2}
    assert list(missing) == ["0"] and "twin question" in missing["0"] and "0, 1" in missing["0"]
    matched, missing = match_items(irt, pub.drop("choices"), spec, items.drop("choices"))
    assert dict(zip(matched["item_id"], matched["measure"])) == {"2": 0.2} and sorted(missing) == ["0", "1"]
    # through the command: a stop that lists them with the reason, or (allow_unmatched) a drop that lists them
    irt.write_parquet(tmp_path / "irt.parquet")
    items.write_parquet(tmp_path / "items.parquet")
    pub.drop("choices").write_csv(tmp_path / "pub.csv")
    args = ["published-difficulty", "--irt-items", str(tmp_path / "irt.parquet"), "--item-table",
            str(tmp_path / "items.parquet"), "--output", str(tmp_path / "p.parquet")]
    file_spec = {**spec, "source": "file", "path": str(tmp_path / "pub.csv")}
    assert main(args + ["--spec", json.dumps(file_spec)]) == 2
    err = capsys.readouterr().err
    assert "twin question" in err and "'0', '1'" in err and "allow_unmatched" in err
    assert main(args + ["--spec", json.dumps({**file_spec, "allow_unmatched": True})]) == 0
    assert "twin question" in capsys.readouterr().out
    assert pl.read_parquet(tmp_path / "p.parquet")["item_id"].to_list() == ["2"]


def test_infinite_published_values_are_refused_naming_the_rows(tmp_path, capsys):
    ids, _ = _write_case(tmp_path, [0.05, 0.5, 0.95])
    path = tmp_path / "published.csv"
    path.write_text(path.read_text().replace(",0.5\n", ",inf\n").replace(",0.95\n", ",-inf\n"))
    spec = {"source": "file", "path": str(path)}
    assert main(["published-difficulty", "--spec", json.dumps(spec), "--irt-items", str(tmp_path / "irt.parquet"),
                 "--output", str(tmp_path / "p.parquet")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "infinite" in err and "row 1 (id 'i01': inf)" in err and "row 2 (id 'i02': -inf)" in err
    assert not (tmp_path / "p.parquet").exists()


def test_spec_problems_at_parse_time():
    """The checks that need no file, for the parse-time checks (issue 26): each names its key."""
    def problems(published, items=None):
        return spec_problems("arc", {"items": items or {"source": "hub"}, "bins": {"by": "published", "published": published}})

    assert problems({"source": "hub", "hub_id": "BatsResearch/Cross-Difficulty", "config": "arc", "match": "question"}) == []
    assert problems({"source": "file", "path": "data/pub.csv"}) == []
    [p] = problems({"source": "file"})  # was a KeyError in the rule's input function
    assert p.startswith("datasets.arc.bins.published.path: required with source: file")
    [p] = problems({"source": "file", "path": "data/{x}.csv"})
    assert p.startswith("datasets.arc.bins.published.path: 'data/{x}.csv' holds '{'") and "wildcard" in p
    [p] = problems({"source": "hub"})
    assert p.startswith("datasets.arc.bins.published.hub_id: required")
    [p] = problems({"source": "file", "path": "p.csv", "match": "question"}, {"source": "none"})
    assert "items.source is none" in p
    assert "needs datasets.arc.bins.published" in spec_problems("arc", {"bins": {"by": "published"}})[0]
    assert spec_problems("arc", {"bins": {"by": "irt"}}) == []


def _card_rows():
    """ARC rows in the card's layout (BatsResearch/Cross-Difficulty, config arc: ARC's own fields + 1pl_diff,
    1pl_quantile): native ids, a twin stem kept twice (options differ), one item the card lacks."""
    def row(native, question, texts, key, q):
        return {"id": native, "question": question, "choices": {"text": texts, "label": ["A", "B", "C", "D"][:len(texts)]},
                "answerKey": key, "1pl_diff": (q - 0.5) * 4, "1pl_quantile": q}

    return [row("Mercury_7175875", "Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium"], "B", 0.05),
            row("Mercury_SC_401", "What is  the  boiling point of water at sea level?", ["50 C", "100 C"], "B", 0.35),
            row("MCAS_2004_9_11", "Which of these is a mammal?", ["shark", "whale", "trout"], "B", 0.65),
            row("MCAS_2004_9_12", "Which of these is a mammal?", ["bat", "eagle", "frog"], "A", 0.95)]


def test_documented_example_matches_a_file_in_the_cards_layout(tmp_path, monkeypatch, capsys):
    """config/README.md's example, as written (issue 26): match by question text against the adapter's item ids
    (row positions), twin stems told apart by their options, the card's missing item dropped and listed."""
    import re

    import datasets
    import yaml

    from conftest import REPO
    from crossdiff.config import validate

    text = (REPO / "config" / "README.md").read_text()
    example = yaml.safe_load(re.search(r"E\.g\. `(\{by: published, published: .*?\}\})`", text).group(1))
    assert example["published"]["match"] == "question" and example["published"]["config"] == "arc"
    cfg = validate({"datasets": {"arc": {"items": {"source": "hub", "adapter": "arc"},
                                         "responses": {"source": "simulated"}, "bins": example}}})
    spec = cfg["datasets"]["arc"]["bins"]["published"]
    card = tmp_path / "card" / "arc"
    card.mkdir(parents=True)
    pl.DataFrame(_card_rows()).write_parquet(card / "train-00000-of-00001.parquet")
    real = datasets.load_dataset

    def local_card(path, name=None, split=None, revision=None, **kw):
        assert (path, name, split) == ("BatsResearch/Cross-Difficulty", "arc", "train")
        return real("parquet", data_files={"train": str(card / "train-*.parquet")}, split=split)

    monkeypatch.setattr(datasets, "load_dataset", local_card)
    # the arc adapter's items: item ids are the leaderboard's doc ids (row positions), not the card's ids
    items = pl.DataFrame({"item_id": ["0", "1", "2", "3", "4"],
                          "question": ["Which gas do plants take in?", "What is the boiling point of water at sea level?",
                                       "Which of these is a mammal?", "Which of these is a mammal?", "Not on the card?"],
                          "choices": [json.dumps(c) for c in (["oxygen", "carbon dioxide", "helium"], ["50 C", "100 C"],
                                                              ["bat", "eagle", "frog"], ["shark", "whale", "trout"],
                                                              ["x", "y"])]})
    items.write_parquet(tmp_path / "items.parquet")
    _irt(items["item_id"].to_list(), [0.0, 1.0, 2.0, 3.0, 4.0]).write_parquet(tmp_path / "irt.parquet")
    assert main(["published-difficulty", "--spec", json.dumps(spec), "--irt-items", str(tmp_path / "irt.parquet"),
                 "--item-table", str(tmp_path / "items.parquet"), "--output", str(tmp_path / "pub.parquet")]) == 0
    out = capsys.readouterr().out
    assert "dropping 1 unmatched item(s): question not in the published table: '4'" in out
    got = pl.read_parquet(tmp_path / "pub.parquet")
    assert dict(zip(got["item_id"], got["measure"])) == {"0": 0.05, "1": 0.35, "2": 0.95, "3": 0.65}
    # and the rows without allow_unmatched: a stop naming the item
    strict = json.dumps({**spec, "allow_unmatched": False})
    assert main(["published-difficulty", "--spec", strict, "--irt-items", str(tmp_path / "irt.parquet"),
                 "--item-table", str(tmp_path / "items.parquet"), "--output", str(tmp_path / "p2.parquet")]) == 2
    assert "'4'" in capsys.readouterr().err


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
