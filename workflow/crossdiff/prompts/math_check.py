"""MATH answers compared by mathematical equivalence (math-verify), not string equality.

:func:`equivalent` decides whether a generated solution's final answer equals the gold answer
(``\\frac{1}{2}`` = ``0.5`` = ``1/2``; ``(x+1)^2`` = ``x^2+2x+1``), exactly as the authors score it:
the gold parsed ``$``-wrapped with LaTeX extraction only, the generation parsed as written and, failing
that, ``$``-wrapped (:func:`verdicts` gives both attempts; the per-sample log records them). For lm-eval, the filter
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


@lru_cache(maxsize=65536)
def _parse_gold(gold: str):
    """The gold answer as the authors parse it: ``$``-wrapped, LaTeX extraction only."""
    from math_verify import LatexExtractionConfig, parse

    return parse(f"${gold}$", extraction_config=[LatexExtractionConfig()])


def _verify(gold_parsed, pred) -> bool:
    from math_verify import verify

    if not gold_parsed or not pred:
        return False
    try:
        return bool(verify(gold_parsed, pred))
    except Exception:  # math-verify can raise on exotic input; an unverifiable answer is wrong
        return False


def verdicts(generated: str, gold: str) -> dict:
    """Both attempts of the authors' scoring (``eval/cross_difficulty/utils.py: process_math_results``):
    the generation parsed as written, and parsed again ``$``-wrapped (bare ``\\frac12`` counts)."""
    try:
        gold_parsed = _parse_gold(gold)
    except Exception:  # the authors score an unparsable gold 0
        return {"as_generated": 0, "dollar_wrapped": 0}
    return {"as_generated": int(_verify(gold_parsed, _parse(generated, False))),
            "dollar_wrapped": int(_verify(gold_parsed, _parse(generated, True)))}


def equivalent(generated: str, gold: str) -> bool:
    """The authors' MATH verdict: ``verify(gold, parse(out)) or verify(gold, parse(f"${out}$"))``, the gold
    parsed as ``parse(f"${gold}$", [LatexExtractionConfig()])``."""
    v = verdicts(generated, gold)
    return bool(v["as_generated"] or v["dollar_wrapped"])


def uses_math(fmt) -> bool:
    """Whether a generation format scores with the ``crossdiff_math`` filter."""
    return fmt.scoring == "generation" and any(
        st.get("function") == "crossdiff_math" for f in fmt.filter_list() for st in f["filter"])


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
