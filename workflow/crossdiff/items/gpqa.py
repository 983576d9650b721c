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

Checked, each a CrossdiffError naming the file and the record (or row): a details record without ``doc`` or an
integer ``doc_id``; doc ids repeated or missing (listed); an option that is null or empty (never scored as the
text "None"), or two options of one item with the same text; and the size: the leaderboard's GPQA-Extended has
546 docs, so a file with another number (an lm-eval ``--limit`` run, another subset) is refused unless
``items.allow_partial: true``.
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


def option_problem(choices: list, names: list[str] | None = None) -> str | None:
    """Why an item's four options cannot be scored (a missing/null option, or two equal ones), else None.
    ``names`` label them in the message (default: ``option 1 (A)`` ..)."""
    names = names or [f"option {i} ({LETTERS[i - 1]})" for i in range(1, 5)]
    if len(choices) != 4:
        return f"{len(choices)} options; expected 4"
    for name, c in zip(names, choices):
        if c is None or (isinstance(c, float) and c != c):
            return f"{name} is null; expected the option's text"
        if not str(c).strip():
            return f"{name} is empty; expected the option's text"
    texts = [" ".join(str(c).split()) for c in choices]
    dup = sorted({t for t in texts if texts.count(t) > 1})
    if dup:
        which = " and ".join(n for n, t in zip(names, texts) if t == dup[0])
        return f"{which} are the same text {dup[0]!r}; a multiple-choice item needs four different options"
    return None


def gpqa_item(row: dict, _sub) -> dict:
    """One item from a processed doc (choice1..4 + ``(X)`` answer) or the authors' card row (options + letter)."""
    if "choice1" in row:
        choices = [row.get(f"choice{i}") for i in range(1, 5)]
        answer = str(row["answer"]).strip().strip("()")
        question = row.get("Question", row.get("question"))
    elif "options" in row:
        choices = list(row["options"] or [])
        answer = str(row["answer"]).strip().strip("()")
        question = row["question"]
    else:
        raise KeyError("choice1")
    problem = option_problem(choices)
    if problem:
        raise ValueError(problem)
    choices = [str(c) for c in choices]
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
        raw = [row.get("Correct Answer")] + [row.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
        problem = option_problem(raw, ["Correct Answer"] + [f"Incorrect Answer {i}" for i in (1, 2, 3)])
        if problem:
            raise CrossdiffError(f"row {index}: {problem}")
        correct = preprocess(row["Correct Answer"])
        options = [preprocess(row[f"Incorrect Answer {i}"]) for i in (1, 2, 3)] + [correct]
        random.Random(f"gpqa/{index}").shuffle(options)
        out.append({**row, **{f"choice{i + 1}": o for i, o in enumerate(options)},
                    "answer": f"({LETTERS[options.index(correct)]})"})
    return out


def _details_docs(rows: list[dict], where: str) -> list[dict]:
    """The docs of a details samples file in doc-id order; every record and doc id checked, problems named."""
    rows = list(rows)
    bad = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not isinstance(r.get("doc"), dict):
            bad.append(f"record {n} has no 'doc' object" + (f" (doc_id {r.get('doc_id')!r})" if isinstance(r, dict) else ""))
        elif isinstance(r.get("doc_id"), str) and r["doc_id"].strip().isdigit():
            rows[n - 1] = {**r, "doc_id": int(r["doc_id"])}
        elif isinstance(r.get("doc_id"), bool) or not isinstance(r.get("doc_id"), int):
            bad.append(f"record {n} has doc_id {r.get('doc_id')!r}; expected an integer")
    if bad:
        raise CrossdiffError(f"{where}: {len(bad)} gpqa details record(s) unusable: {'; '.join(bad[:5])}"
                             f"{' ...' if len(bad) > 5 else ''} (each record is one lm-eval sample: doc_id and doc)")
    ids = [r["doc_id"] for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CrossdiffError(f"{where}: gpqa details doc id(s) {dup[:5]}{' ...' if len(dup) > 5 else ''} occur more "
                             f"than once (a file written once per filter holds each doc twice); expected each doc once")
    missing = sorted(set(range(max(ids) + 1)) - set(ids))
    negative = sorted(i for i in ids if i < 0)
    if missing or negative:
        raise CrossdiffError(f"{where}: gpqa details doc ids are not 0..{len(ids) - 1} once each: "
                             + (f"doc id(s) {missing[:10]}{' ...' if len(missing) > 10 else ''} missing" if missing else
                                f"negative doc id(s) {negative[:5]}"))
    docs = []
    for r in sorted(rows, key=lambda r: r["doc_id"]):
        problem = option_problem([r["doc"].get(f"choice{i}") for i in range(1, 5)]) if "choice1" in r["doc"] else None
        if problem:
            n = rows.index(r) + 1
            raise CrossdiffError(f"{where}: record {n} (doc_id {r['doc_id']}): {problem}")
        docs.append(r["doc"])
    return docs


def gpqa_rows(rows: list[dict], settings: dict, where: str) -> list[dict]:
    """Rows in doc-id order with the options as scored (module docstring); raw rows need ``option_order: seeded``.
    A source with other than the benchmark's 546 docs is refused unless ``allow_partial`` (a test, a subset)."""
    if not rows:
        return rows
    if any(isinstance(r, dict) and "doc" in r for r in rows):  # a details samples file
        rows = _details_docs(rows, where)
    elif not ("choice1" in rows[0] or "options" in rows[0]) and settings.get("option_order") != "seeded":
        raise CrossdiffError(
            f"{where}: raw GPQA rows carry no option order, and the leaderboard's (lm-eval's global-random shuffle) "
            f"cannot be recomputed: set items.path to a leaderboard details file samples_leaderboard_gpqa_extended_*.jsonl "
            f"(its docs hold the scored choice1..4), or items.option_order: seeded for crossdiff's own fixed order")
    if len(rows) != N_ITEMS and not settings.get("allow_partial"):
        raise CrossdiffError(f"{where}: {len(rows)} gpqa_extended doc(s), but leaderboard_gpqa_extended has {N_ITEMS} "
                             f"(a run with --limit, another GPQA subset, or a cut file?); take a complete file, or set "
                             f"items.allow_partial: true to use these {len(rows)} on purpose")
    if "choice1" in rows[0] or "options" in rows[0]:
        return rows
    try:
        return _seeded(rows)
    except CrossdiffError as exc:
        raise CrossdiffError(f"{where}: {exc}") from None


# The authors' format (train/utils.py process_gpqa_extended_example; eval/cross_difficulty/gpqa_extended.yaml:
# multiple choice over "(A)".."(D)" after "Answer:\n", acc and acc_norm). The training target is the scored
# continuation "(X)" (multiple-choice completions are the gold choice's text).
GPQA_PROMPT = {"scoring": "multiple_choice", "template": "Question: {question}\n{options}\nAnswer:\n",
               "option_template": "{label}) {choice}", "choice_template": " ({label})",
               "metrics": ["acc", "acc_norm"], "max_length": 4096}
