"""GPQA-Extended (the leaderboard's ``leaderboard_gpqa_extended``, 546 items) as a crossdiff item table.

The options a model saw are NOT recoverable from the raw dataset (``Idavidrein/gpqa``, config
``gpqa_extended``): lm-eval's ``process_docs`` (``lm_eval/tasks/leaderboard/gpqa/utils.py``) shuffles
them with Python's global random generator, whose state depends on everything drawn earlier in the
run (README, "The authors' difficulties, and GPQA's option order"). So the item rows are taken, in
order of preference, from:

1. a leaderboard details samples file (``samples_leaderboard_gpqa_extended_*.jsonl`` of any model):
   each record's ``doc`` carries ``choice1``..``choice4`` and ``answer`` (``"(C)"``) exactly as scored,
   and ``doc_id`` is the item id (records are in completion order; they are sorted by ``doc_id``);
2. a copy of those processed docs (rows with ``choice1``..``choice4`` and ``answer``), in doc order;
3. the authors' card schema (``question``, ``options``, ``answer`` letter): their fixed order;
4. raw dataset rows, only with ``items.option_order: seeded``: each item's four options (lm-eval's
   own ``preprocess`` applied) shuffled by ``random.Random(f"gpqa/{doc_id}")``. Deterministic, but
   not the leaderboard's order: a model is then trained and scored on other option letters than the
   ones its leaderboard correctness was measured on. Without that key raw rows are an error.
"""

from __future__ import annotations

import random

from crossdiff.errors import CrossdiffError

LETTERS = "ABCD"
N_ITEMS = 546
#: the GPQA writers' difficulty estimates, easiest first (the text before their parenthesised gloss)
WRITER_LEVELS = ("Easy undergraduate level", "Hard undergraduate level", "Hard graduate level",
                 "Post-graduate level or harder")  # leaderboard_gpqa_extended's doc count (LEADERBOARD-FORMATS: 448/546/198)


def _words(s: str) -> int:
    return len(str(s).split())


def gpqa_item(row: dict, _sub) -> dict:
    """One item from a processed doc (choice1..4 + ``(X)`` answer) or the authors' card row (options + letter)."""
    if "choice1" in row:
        choices = [str(row[f"choice{i}"]) for i in range(1, 5)]
        answer = str(row["answer"]).strip().strip("()")
        question = row.get("Question", row.get("question"))
    elif "options" in row:
        choices = [str(c) for c in row["options"]]
        answer = str(row["answer"]).strip().strip("()")
        question = row["question"]
    else:
        raise KeyError("choice1")
    if question is None:
        raise KeyError("Question")
    if answer not in LETTERS[:len(choices)]:
        raise ValueError(f"answer {row['answer']!r} is not one of (A)..({LETTERS[len(choices) - 1]})")
    item = {"question": str(question).strip(), "choices": choices, "answer": str(LETTERS.index(answer)),
            "n_choices": len(choices), "question_words": _words(question)}
    for key, col in (("subdomain", "Subdomain"), ("domain", "High-level domain"),
                     ("writer_difficulty", "Writer's Difficulty Estimate")):
        if row.get(col) is not None:
            item[key] = str(row[col])
    # the writer's estimate as an ordinal (1 easy undergraduate .. 4 post-graduate), a Spearman feature
    estimate = str(row.get("Writer's Difficulty Estimate") or "")
    item["writer_difficulty_level"] = next((i for i, p in enumerate(WRITER_LEVELS, 1) if estimate.startswith(p)), None)
    return item


def _seeded(rows: list[dict]) -> list[dict]:
    from lm_eval.tasks.leaderboard.gpqa.utils import preprocess  # lm-eval's own option clean-up

    out = []
    for index, row in enumerate(rows):
        correct = preprocess(row["Correct Answer"])
        options = [preprocess(row[f"Incorrect Answer {i}"]) for i in (1, 2, 3)] + [correct]
        random.Random(f"gpqa/{index}").shuffle(options)
        out.append({**row, **{f"choice{i + 1}": o for i, o in enumerate(options)},
                    "answer": f"({LETTERS[options.index(correct)]})"})
    return out


def gpqa_rows(rows: list[dict], settings: dict, where: str) -> list[dict]:
    """Rows in doc-id order with the options as scored (module docstring); raw rows need ``option_order: seeded``."""
    if not rows:
        return rows
    if "doc" in rows[0]:  # a details samples file
        try:
            ordered = sorted(rows, key=lambda r: int(r["doc_id"]))
        except (KeyError, TypeError, ValueError):
            raise CrossdiffError(f"{where}: gpqa details records need an integer doc_id beside doc") from None
        ids = [int(r["doc_id"]) for r in ordered]
        if ids != list(range(len(ids))):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise CrossdiffError(f"{where}: gpqa details doc ids are not 0..{len(ids) - 1} once each "
                                 f"(duplicated e.g. {dup}; a file written once per filter holds each doc twice)")
        return [r["doc"] for r in ordered]
    if "choice1" in rows[0] or "options" in rows[0]:
        return rows
    if settings.get("option_order") == "seeded":
        return _seeded(rows)
    raise CrossdiffError(
        f"{where}: raw GPQA rows carry no option order, and the leaderboard's (lm-eval's global-random shuffle) "
        f"cannot be recomputed: set items.path to a leaderboard details file samples_leaderboard_gpqa_extended_*.jsonl "
        f"(its docs hold the scored choice1..4), or items.option_order: seeded for crossdiff's own fixed order")


# The authors' format (train/utils.py process_gpqa_extended_example; eval/cross_difficulty/gpqa_extended.yaml:
# multiple choice over "(A)".."(D)" after "Answer:\n", acc and acc_norm). The training target is the scored
# continuation "(X)" (multiple-choice completions are the gold choice's text).
GPQA_PROMPT = {"scoring": "multiple_choice", "template": "Question: {question}\n{options}\nAnswer:\n",
               "option_template": "{label}) {choice}", "choice_template": " ({label})",
               "metrics": ["acc", "acc_norm"], "max_length": 4096}
