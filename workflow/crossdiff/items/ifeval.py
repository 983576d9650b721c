"""IFEval (the leaderboard's ``leaderboard_ifeval``, 541 prompts) as a crossdiff item table.

Rows come from ``google/IFEval`` (split ``train``: ``key``, ``prompt``, ``instruction_id_list``,
``kwargs``) or from a leaderboard details samples file (each record's ``doc`` is that row; sorted by
``doc_id``). The item id is the row index, the leaderboard's doc id. The item keeps what lm-eval's
instruction checkers need (``instruction_id_list`` and ``kwargs`` as JSON strings, ``key``) and the
human features of the Spearman figure: ``n_instructions`` and ``instruction_types`` (the instruction
groups, e.g. ``detectable_format``, sorted and comma-joined).

IFEval has no reference response: the training target comes from ``items.solutions`` (the authors
train on an ``answer`` column), and evaluation runs lm-eval's own checkers
(``lm_eval.tasks.leaderboard.ifeval.utils``) through crossdiff's ``crossdiff_ifeval`` filter.
"""

from __future__ import annotations

import json

from crossdiff.errors import CrossdiffError

N_ITEMS = 541


def ifeval_item(row: dict, _sub) -> dict:
    ids = list(row["instruction_id_list"])
    kwargs = row["kwargs"]
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    if len(kwargs) != len(ids):
        raise ValueError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs entries")
    # the hub's parquet gives every kwargs dict every key (None where unused); the checkers drop the Nones
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    return {"question": str(row["prompt"]), "answer": "", "key": int(row["key"]),
            "instruction_id_list": json.dumps(ids), "kwargs": json.dumps(kwargs),
            "n_instructions": len(ids), "instruction_types": ",".join(sorted({i.split(":")[0] for i in ids})),
            "n_instruction_types": len({i.split(":")[0] for i in ids}),
            "question_words": len(str(row["prompt"]).split())}


def ifeval_rows(rows: list[dict], _settings: dict, where: str) -> list[dict]:
    """Rows in doc-id order: a details samples file is unwrapped to its docs."""
    if not rows or "doc" not in rows[0]:
        return rows
    try:
        ordered = sorted(rows, key=lambda r: int(r["doc_id"]))
    except (KeyError, TypeError, ValueError):
        raise CrossdiffError(f"{where}: ifeval details records need an integer doc_id beside doc") from None
    if [int(r["doc_id"]) for r in ordered] != list(range(len(ordered))):
        raise CrossdiffError(f"{where}: ifeval details doc ids are not 0..{len(ordered) - 1} once each")
    return [r["doc"] for r in ordered]


# The authors' format (train/utils.py process_ifeval_example: the prompt as the user text, their answer
# column as the target; eval/cross_difficulty/ifeval.yaml: greedy, no stop string, 1280 new tokens,
# prompt-level strict accuracy first). Filters: lm-eval's checkers, strict (the result) and loose.
IFEVAL_PROMPT = {
    "template": "{question}", "target": " {model_solution}", "reference": "1", "stop": [], "max_gen_toks": 1280,
    "filters": [{"name": "prompt_level_strict", "filter": [{"function": "crossdiff_ifeval", "mode": "strict"},
                                                           {"function": "take_first"}]},
                {"name": "prompt_level_loose", "filter": [{"function": "crossdiff_ifeval", "mode": "loose"},
                                                          {"function": "take_first"}]}],
    "primary_filter": "prompt_level_strict", "max_length": 4096,
}
