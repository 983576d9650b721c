"""MATH answers compared by mathematical equivalence (math-verify), not string equality.

:func:`equivalent` decides whether a generated solution's final answer equals the gold answer
(``\\frac{1}{2}`` = ``0.5`` = ``1/2``; ``(x+1)^2`` = ``x^2+2x+1``). For lm-eval, the filter
``crossdiff_math`` (registered by :func:`register_lm_eval_filter`) replaces each generation by the
gold answer when they are equivalent, and by its own extracted answer otherwise, so the task's
plain ``exact_match`` metric counts equivalent answers as correct. Task YAMLs stay free of
``!function`` tags.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=65536)
def _parse(text: str, wrap: bool):
    from math_verify import parse

    return parse(f"${text}$" if wrap else text)


def equivalent(generated: str, gold: str) -> bool:
    """True when the final answer of ``generated`` (its last \\boxed{} or last expression) equals ``gold``."""
    from math_verify import verify

    gold_parsed = _parse(gold, True)
    pred = _parse(generated, False)
    if not gold_parsed or not pred:
        return False
    try:
        return bool(verify(gold_parsed, pred))
    except Exception:  # math-verify can raise on exotic input; an unverifiable answer is wrong
        return False


def extracted(generated: str) -> str:
    pred = _parse(generated, False)
    return str(pred[-1]) if pred else "[invalid]"


def register_lm_eval_filter() -> None:
    from lm_eval.api.filter import Filter
    from lm_eval.api.registry import filter_registry, register_filter

    if "crossdiff_math" in filter_registry:
        return

    @register_filter("crossdiff_math")
    class MathEquivalenceFilter(Filter):
        """Each response -> the gold answer if equivalent to it, else the response's extracted answer."""

        def apply(self, resps, docs):
            out = []
            for responses, doc in zip(resps, docs):
                gold = str(doc["gold"])
                out.append([gold if equivalent(r, gold) else extracted(r) for r in responses])
            return out
