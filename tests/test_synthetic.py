"""The generated arithmetic benchmark (crossdiff.items.synthetic)."""

import pytest

from crossdiff.errors import CrossdiffError


def test_synthetic_sums_of_digits():
    """The embedded default's benchmark: sums of single digits, difficulty = number of terms."""
    from crossdiff.items.synthetic import generate_items, generate_problems

    items = generate_items(300, seed=1, max_ops=10, max_digits=1, operators=["+"])
    assert items.height == 300 and items["question"].n_unique() == 300
    for q, a, k in items.select("question", "answer", "n_ops").iter_rows():
        terms = q.removeprefix("What is ").removesuffix("?").split(" + ")
        assert len(terms) == k + 1 and all(len(t) == 1 for t in terms)
        assert int(a) == sum(map(int, terms))
    assert set(items["n_ops"].unique().to_list()) == set(range(1, 11))
    skewed = generate_problems(400, seed=2, max_ops=3, max_digits=2, ops_weights=[0, 0, 1], operators=["-", "*"])
    assert {p["n_ops"] for p in skewed} == {3} and not any("+" in p["question"] for p in skewed)
    with pytest.raises(CrossdiffError, match="operators"):
        generate_items(10, seed=1, operators=["/"])
    with pytest.raises(CrossdiffError, match="ops_weights"):
        generate_items(10, seed=1, max_ops=3, ops_weights=[1, 1])
