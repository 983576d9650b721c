"""IFEval scoring with lm-eval's own instruction checkers, as an lm-eval filter.

``crossdiff_ifeval`` (``mode: strict`` or ``loose``) turns each response into ``"1"`` when it follows
every instruction of its prompt, else ``"0"``, by calling ``test_instruction_following_strict`` /
``_loose`` of ``lm_eval.tasks.leaderboard.ifeval.utils`` (the leaderboard's IFEval, whose
``prompt_level_*_acc`` are exactly these); exact match against the reference ``"1"`` then gives the
prompt-level accuracy through crossdiff's usual generation path. The doc needs ``question`` (the
original prompt, which some checkers read), ``instruction_id_list`` and ``kwargs`` (JSON strings, as
``crossdiff.items.ifeval`` stores them). lm-eval's checkers need ``langdetect``, ``immutabledict`` and
``nltk`` (with its ``punkt_tab`` data for the sentence-count instructions): ``lm_eval[ifeval]``.
"""

from __future__ import annotations

import contextlib
import json
import sys

from crossdiff.errors import CrossdiffError

MODES = ("strict", "loose")


def follows_all(doc: dict, response: str, mode: str = "strict") -> bool:
    """Whether ``response`` follows every instruction of the IFEval ``doc`` (lm-eval's checker)."""
    # the import fetches nltk's punkt_tab and prints about it on stdout: keep stdout for results (show-prompt --json)
    with contextlib.redirect_stdout(sys.stderr):
        from lm_eval.tasks.leaderboard.ifeval import utils  # noqa: PLC0415 - heavy (nltk, langdetect)

    if mode not in MODES:
        raise CrossdiffError(f"crossdiff_ifeval: mode {mode!r}; expected one of {MODES}")
    try:
        ids, kwargs = doc["instruction_id_list"], doc["kwargs"]
    except KeyError as exc:
        raise CrossdiffError(f"crossdiff_ifeval: item {doc.get('item_id', '?')!r} has no {exc.args[0]!r} "
                             f"(an IFEval item table from the ifeval adapter has it)") from None
    inp = utils.InputExample(key=int(doc.get("key") or 0),
                             instruction_id_list=json.loads(ids) if isinstance(ids, str) else list(ids),
                             prompt=str(doc["question"]),
                             kwargs=json.loads(kwargs) if isinstance(kwargs, str) else list(kwargs))
    check = utils.test_instruction_following_strict if mode == "strict" else utils.test_instruction_following_loose
    return bool(check(inp, response).follow_all_instructions)


def register_lm_eval_filter() -> None:
    """Register ``crossdiff_ifeval`` in lm-eval's filter registry (idempotent)."""
    from lm_eval.api.filter import Filter
    from lm_eval.api.registry import filter_registry, register_filter

    if "crossdiff_ifeval" in filter_registry:
        return

    @register_filter("crossdiff_ifeval")
    class IFEvalFilter(Filter):
        def __init__(self, mode: str = "strict", **_kwargs) -> None:
            if mode not in MODES:
                raise CrossdiffError(f"crossdiff_ifeval: mode {mode!r}; expected one of {MODES}")
            self.mode = mode

        def apply(self, resps, docs):
            return [["1" if follows_all(doc, r, self.mode) else "0" for r in responses]
                    for responses, doc in zip(resps, docs)]
