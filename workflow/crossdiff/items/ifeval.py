"""IFEval (the leaderboard's ``leaderboard_ifeval``, 541 prompts) as a crossdiff item table.

Rows come, by default, from the dataset the leaderboard scored: lm-eval's ``leaderboard_ifeval`` loads
``wis-k/instruction-following-eval`` (split ``train``), so its row order IS the leaderboard's doc order and
the item id (the row index) is the leaderboard's doc id. ``google/IFEval`` (lm-eval's plain ``ifeval`` task)
holds the same prompts in a copy of its own: take it with ``items.hub_id: google/IFEval`` only knowing that
the doc ids are then its row order. Or rows from a leaderboard details samples file (each record's ``doc``
is the scored row; sorted by ``doc_id``). Both hub layouts are read (google/IFEval's parquet gives every
kwargs dict every key, None where unused; wis-k's JSON lines only the used ones).

**Ids and order are checked where they meet the leaderboard**: each sample of a leaderboard details or
lm-eval samples file carries its ``doc`` (IFEval's own ``key`` and the ``prompt``); :func:`doc_checker`
compares it with the item of the same doc id, and a sample whose doc is another prompt stops the import
(collector: the model is recorded failed with the reason) naming the file, the line, both keys and the fix.

Each row is checked at ``prepare_items`` (:func:`check_row`), naming the item: a null ``key``; an empty
``instruction_id_list`` (lm-eval's checkers would count ANY output as following it); an instruction id
lm-eval's registry does not know (it would be a KeyError at scoring, after the generation pass); ids
and kwargs of different lengths. The item keeps what lm-eval's instruction checkers need
(``instruction_id_list`` and ``kwargs`` as JSON strings, ``key``) and the human features of the Spearman
figure: ``n_instructions`` and ``instruction_types`` (the instruction groups, e.g. ``detectable_format``,
sorted and comma-joined).

IFEval has no reference response: the training target comes from ``items.solutions`` (the authors
train on an ``answer`` column), and evaluation runs lm-eval's own checkers
(``lm_eval.tasks.leaderboard.ifeval.utils``) through crossdiff's ``crossdiff_ifeval`` filter. Some checkers
(sentence counts) need nltk's ``punkt_tab`` data, which lm-eval would try to download at import and
then fail on, after the whole generation pass: :func:`punkt_missing` tells before any model loads
(evaluation jobs, and :func:`study_problems` for the parse-time checks).
"""

from __future__ import annotations

import json

from crossdiff.errors import CrossdiffError

N_ITEMS = 541
#: the dataset lm-eval's leaderboard_ifeval loads: its row order is the leaderboard's doc order
LEADERBOARD_HUB_ID = "wis-k/instruction-following-eval"
#: nltk data lm-eval's sentence-counting checkers load (``nltk.data.load('nltk:tokenizers/punkt/english.pickle')``
#: looks for this in nltk >= 3.9)
PUNKT = "tokenizers/punkt_tab/english/"
#: the instructions whose checkers need it: ``count_sentences`` (punkt) and ``nltk.word_tokenize`` (punkt
#: sentence splitting first); tests/test_ifeval.py runs every registered checker without the data to keep this exact
PUNKT_INSTRUCTIONS = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})


def known_instructions() -> frozenset[str]:
    """Instruction ids lm-eval's IFEval checkers know (``instructions_registry.INSTRUCTION_DICT``).

    Importing the registry runs lm-eval's ``nltk.download('punkt_tab')`` when the data is absent (a network
    call, and a message on stdout): it is suppressed here; :func:`punkt_missing` reports the data instead."""
    import contextlib
    import sys

    import nltk

    real = nltk.download
    nltk.download = lambda *args, **kwargs: False  # noqa: E731 - no network from an import
    try:
        with contextlib.redirect_stdout(sys.stderr):
            from lm_eval.tasks.ifeval import instructions_registry  # noqa: PLC0415 - heavy (nltk, langdetect)
    finally:
        nltk.download = real
    return frozenset(instructions_registry.INSTRUCTION_DICT)


def punkt_missing() -> str | None:
    """Why lm-eval's IFEval checkers cannot run here (nltk or its ``punkt_tab`` data absent), else None."""
    try:
        import nltk
    except ImportError:
        return "nltk is not installed (pip install -r envs/requirements.txt installs it with lm_eval[ifeval])"
    try:
        nltk.data.find(PUNKT)
    except LookupError:
        return ("nltk's punkt_tab data is not installed (lm-eval's IFEval sentence checkers load it; offline it cannot "
                "be fetched): run `python -m nltk.downloader punkt_tab` once (or set NLTK_DATA to a folder holding "
                "tokenizers/punkt_tab)")
    return None


def uses_ifeval(prompt: dict | None) -> bool:
    """Whether a prompt format (a dataset's resolved ``prompt`` settings) scores through lm-eval's IFEval checkers."""
    return any(step.get("function") == "crossdiff_ifeval" for f in ((prompt or {}).get("filters") or [])
               for step in (f.get("filter") or []) if isinstance(step, dict))


def check_punkt(where: str = "IFEval scoring") -> None:
    """Raise before any model loads when the IFEval checkers could not score."""
    why = punkt_missing()
    if why:
        raise CrossdiffError(f"{where}: {why}")


def needs_punkt(instruction_lists) -> bool:
    """Whether any of these items' instruction lists (lists or JSON strings) has a checker that needs punkt_tab."""
    for ids in instruction_lists:
        if isinstance(ids, str):
            ids = json.loads(ids)
        if PUNKT_INSTRUCTIONS.intersection(ids or ()):
            return True
    return False


def study_problems(config: dict) -> list[str]:
    """Parse-time problems: a dataset on the ``ifeval`` adapter from the hub (the whole benchmark, which has
    sentence-count prompts) that will be evaluated (the study has models) while nltk's ``punkt_tab`` is absent
    here. ``config`` is the validated config; cheap (one nltk look-up, no file read). A local ``items.path``
    (maybe a subset) is left to the job's own check, which reads its items before the model loads."""
    if not config.get("models"):
        return []
    names = [n for n, d in (config.get("datasets") or {}).items()
             if (d.get("items") or {}).get("source") == "hub" and (d.get("items") or {}).get("adapter") == "ifeval"
             and not (d.get("items") or {}).get("path")]
    study = (config.get("study") or {}).get("datasets")
    names = [n for n in names if study is None or n in study]
    why = punkt_missing() if names else None
    return [f"datasets.{n}: the ifeval adapter is scored by lm-eval's checkers, and {why}" for n in names] if why else []


def check_row(row: dict, known: frozenset[str] | None = None) -> None:
    """Raise ValueError naming what makes an IFEval row unscorable (module docstring)."""
    if row.get("key") is None:
        raise ValueError("key is null; expected IFEval's integer key")
    try:
        int(row["key"])
    except (TypeError, ValueError):
        raise ValueError(f"key {row['key']!r} is not an integer") from None
    ids = row.get("instruction_id_list")
    if ids is None or isinstance(ids, str) or len(list(ids)) == 0:
        raise ValueError(f"instruction_id_list is {ids!r}: an item without instructions would count any output as "
                         f"following them; expected one or more instruction ids")
    if known is not None:
        unknown = [i for i in ids if i not in known]
        if unknown:
            import difflib

            hint = difflib.get_close_matches(str(unknown[0]), sorted(known), n=3)
            raise ValueError(f"instruction id(s) {unknown} unknown to lm-eval's IFEval checkers"
                             + (f" (close: {hint})" if hint else f"; expected some of {sorted(known)}"))


def ifeval_item(row: dict, _sub) -> dict:
    check_row(row)
    ids = list(row["instruction_id_list"])
    kwargs = row["kwargs"]
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    if kwargs is None or len(kwargs) != len(ids):
        raise ValueError(f"{len(ids)} instruction ids but {0 if kwargs is None else len(kwargs)} kwargs entries")
    # the hub's parquet gives every kwargs dict every key (None where unused); the checkers drop the Nones
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    return {"question": str(row["prompt"]), "answer": "", "key": int(row["key"]),
            "instruction_id_list": json.dumps(ids), "kwargs": json.dumps(kwargs),
            "n_instructions": len(ids), "instruction_types": ",".join(sorted({i.split(":")[0] for i in ids})),
            "n_instruction_types": len({i.split(":")[0] for i in ids}),
            "question_words": len(str(row["prompt"]).split())}


def _text(value) -> str:
    return " ".join(str(value).split())


def doc_checker(items):
    """A check of each leaderboard/lm-eval sample's ``doc`` against the item of its doc id, or None when
    ``items`` (a polars item table) is not IFEval's. Call it as ``check(doc_id, doc, where)``."""
    if items is None or not {"item_id", "key", "question", "instruction_id_list"} <= set(items.columns):
        return None
    by_id = {str(i): (k, _text(q)) for i, k, q in zip(items["item_id"].to_list(), items["key"].to_list(),
                                                        items["question"].to_list())}

    def check(doc_id, doc, where: str) -> None:
        mine = by_id.get(str(doc_id))
        if mine is None or not isinstance(doc, dict) or not ("key" in doc or "prompt" in doc):
            return  # an id the item table lacks is reported by the import; a sample without its doc cannot be checked
        key, prompt = mine
        same = (str(doc["key"]) == str(key)) if doc.get("key") is not None else _text(doc["prompt"]) == prompt
        if not same:
            theirs = f"key {doc.get('key')!r}" if doc.get("key") is not None else f"prompt {str(doc['prompt'])[:60]!r}"
            raise CrossdiffError(
                f"{where}: doc_id {doc_id} is IFEval {theirs}, but item {doc_id} of the item table is key {key} "
                f"({prompt[:60]!r}): the items are not in the order the leaderboard scored. Take them from "
                f"{LEADERBOARD_HUB_ID} (the ifeval adapter's default hub_id) or from a details file (items.path)")
    return check


def ifeval_rows(rows: list[dict], _settings: dict, where: str) -> list[dict]:
    """Rows in doc-id order (a details samples file is unwrapped to its docs), each checked (:func:`check_row`)."""
    if rows and "doc" in rows[0]:
        try:
            ordered = sorted(rows, key=lambda r: int(r["doc_id"]))
            docs = [r["doc"] for r in ordered]
        except (KeyError, TypeError, ValueError):
            raise CrossdiffError(f"{where}: ifeval details records need an integer doc_id beside doc") from None
        if [int(r["doc_id"]) for r in ordered] != list(range(len(ordered))):
            raise CrossdiffError(f"{where}: ifeval details doc ids are not 0..{len(ordered) - 1} once each")
        rows = docs
    known = known_instructions() if rows else None
    for index, row in enumerate(rows):
        try:
            check_row(row, known)
        except ValueError as exc:
            key = row.get("key") if isinstance(row, dict) else None
            raise CrossdiffError(f"{where}: ifeval item {index}{f' (key {key})' if key is not None else ''}: {exc}") from None
    return rows


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
