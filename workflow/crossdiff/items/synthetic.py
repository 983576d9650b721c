"""The embedded default's benchmark: arithmetic expressions of graded difficulty.

Each item is an integer expression such as ``What is 37 + 5 * 12 - 8?`` with an exact integer answer.
Difficulty grows with the number of operations (``n_ops``), the size of the operands
(``max_digits``, ``total_digits``) and the presence of multiplication; those generator features are
kept as columns and later serve as "human" difficulty metrics beside IRT difficulty.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from crossdiff.errors import CrossdiffError


OPS = ("+", "-", "*")
OP_WEIGHTS = {"+": 0.45, "-": 0.35, "*": 0.20}  # multiplication is rarer: answers stay exact and short


def check_operators(operators, where: str = "items.operators") -> tuple[str, ...]:
    ops = tuple(OPS if operators is None else operators)
    bad = [o for o in ops if o not in OPS]
    if not ops or bad or len(set(ops)) != len(ops):
        raise CrossdiffError(f"{where}: expected a non-empty list of distinct operators from {list(OPS)}, got {operators!r}")
    return ops


def make_problem(rng: np.random.Generator, n_ops: int, max_digits: int, operators=OPS) -> dict:
    """One expression with ``n_ops`` operators (drawn from ``operators``) and operands of at most
    ``max_digits`` digits."""
    digits = rng.integers(1, max_digits + 1, size=n_ops + 1)
    digits[rng.integers(0, n_ops + 1)] = max_digits  # at least one operand has max_digits digits
    operands = [int(rng.integers(0 if d == 1 else 10 ** (d - 1), 10**d)) for d in digits]
    weights = np.array([OP_WEIGHTS[o] for o in operators])
    ops = [operators[i] for i in rng.choice(len(operators), size=n_ops, p=weights / weights.sum())]
    tokens = [str(operands[0])]
    for op, value in zip(ops, operands[1:]):
        tokens += [op, str(value)]
    expression = " ".join(tokens)
    answer = eval(expression, {"__builtins__": {}})  # noqa: S307 - digits and + - * only
    return {
        "question": f"What is {expression}?",
        "answer": str(answer),
        "n_ops": n_ops,
        "max_digits": int(max_digits),
        "total_digits": int(sum(len(str(v)) for v in operands)),
        "has_mul": int("*" in ops),
        "answer_digits": len(str(abs(answer))),
    }


def generate_problems(
    n: int,
    seed: int,
    max_ops: int = 5,
    max_digits: int = 3,
    ops_weights: list[float] | None = None,
    exclude: set[str] | None = None,
    operators=None,
) -> list[dict]:
    """``n`` distinct problems; ``ops_weights`` skews the number of operations (index 0 = 1 op).

    Problems whose question is in ``exclude`` are never returned (used to keep warm-up data
    disjoint from benchmark items).
    """
    rng = np.random.default_rng(seed)
    operators = check_operators(operators)
    exclude = exclude or set()
    weights = np.ones(max_ops) if ops_weights is None else np.asarray(ops_weights, float)
    weights = weights / weights.sum()
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise CrossdiffError(f"items: could not generate {n} distinct problems with max_ops={max_ops}, "
                                 f"max_digits={max_digits}; lower n_items or raise max_ops/max_digits")
        n_ops = int(rng.choice(max_ops, p=weights)) + 1
        digits = int(rng.integers(1, max_digits + 1))
        p = make_problem(rng, n_ops, digits, operators)
        if p["question"] in seen or p["question"] in exclude:
            continue
        seen.add(p["question"])
        out.append(p)
    return out


def generate_items(n_items: int, seed: int, max_ops: int = 5, max_digits: int = 3, prefix: str = "arith",
                   operators=None, ops_weights: list[float] | None = None) -> pl.DataFrame:
    """The benchmark's item table: item_id, question, answer and the generator features."""
    if ops_weights is not None and len(ops_weights) != max_ops:
        raise CrossdiffError(f"items.ops_weights: expected {max_ops} weights (one per number of operations "
                             f"1..max_ops), got {len(ops_weights)}")
    problems = generate_problems(n_items, seed, max_ops=max_ops, max_digits=max_digits, operators=operators,
                                 ops_weights=ops_weights)
    width = len(str(n_items - 1))
    df = pl.DataFrame(problems)
    return df.with_columns(
        pl.Series("item_id", [f"{prefix}-{i:0{width}d}" for i in range(n_items)]),
        pl.col("question").str.len_chars().alias("question_length"),
    ).select(["item_id", "question", "answer", "n_ops", "max_digits", "total_digits", "has_mul", "answer_digits", "question_length"])
