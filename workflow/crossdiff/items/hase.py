"""Hase et al. 2024's data as item tables, with their human hardness measures as integer item columns.

"The Unreasonable Effectiveness of Easy Training Data for Hard Tasks" (arXiv 2401.06751); their code is
allenai/easy-to-hard-generalization at commit ad8358e42904da169e8a3e3f70b64290d739b37a, and every file:line
below is at that commit. ``write_datasets_with_known_hardness`` (utils/data_utils.py:297-505) builds each data
set; ``standardize_column_names`` (:214-240) picks the answer text; the length measures are computed for every
data set alike (:487-490):

- ``question_num_words`` = ``len(question.split())``, ``answer_num_words`` = ``len(answer_text.split())``,
  ``answer_num_chars`` = ``len(answer_text)``, where ``answer_text`` is the gold option's text (ARC, MMLU),
  ``yes``/``no`` (StrategyQA) or the GSM8K answer after ``####``, stripped (commas kept). The item table keeps
  it as column ``answer_text`` (``answer_prob``, :mod:`crossdiff.evaluate.text_prob`, scores it).

Adapters (registered in :data:`crossdiff.items.adapters.ADAPTERS`; each loads the hub or a local copy in the
hub's own schema, ``items.path``):

``arc_hase``
    ARC-Easy and ARC-Challenge (``allenai/ai2_arc``), splits train + validation + test of each, concatenated in
    that order (data_utils.py:358-371), inner-joined on the ARC id with the annotations file
    (``items.annotations.path``; their ``data/arc-challenge-easy-annotations.json``, keys ``ARCCH_<id>`` /
    ``ARCEZ_<id>``: data_utils.py:373-382, where the key's source prefix is dropped and the join is on the id
    alone, :410) and converted as their ``extract_*`` functions (:383-407): ``grade`` = the last word of
    ``"Grade 05"`` when it is digits (5), else missing (their ``Biology`` and ``Earth and Space Sciences``);
    ``bloom`` = Remembering .. Evaluating -> 1..5; ``depth_of_knowledge`` = I..III -> 1..3;
    ``annotator_difficulty`` = Low/Medium/High -> 1..3 (their ``human_difficulty``); any other value is missing.
    Then their ``dropna()`` (:415): a row with any missing value is dropped, all four measures counted (so every
    ``Biology`` / ``Earth and Space Sciences`` item goes), and ``drop_duplicates(subset='id')`` (:495-498): the
    first surviving row of an id wins. Item ids are ``ARCEZ_<id>`` / ``ARCCH_<id>`` after the set the row came
    from (unique: the ids are deduplicated); ``id`` keeps the ARC id, ``challenge`` is 1 for ARC-Challenge rows,
    ``split`` the HF split. The gold index is their ``label_idx`` (the answer key's place in A-E, or in 1-5 for
    numeric keys, :240), which must equal its place among the row's labels (crossdiff's ``arc`` adapter).
    ``hase_split``: their 1000-item "hardness" split, drawn with ``np.random.default_rng(0).choice(n, 1000,
    replace=False)`` over the rows in this order (data_utils.py:505-516, seed 0 = main.py's default), the rest
    ``probing`` (every ARC experiment of theirs runs on the probing split); null for 1000 items or fewer.
    ``items.hase_split: probing`` (or ``hardness``) keeps only that part.
``mmlu_stem5``
    ``tasksource/mmlu``, configs ``high_school_<s>`` and ``college_<s>`` for s in computer_science, physics,
    mathematics, chemistry, biology (in that order), splits validation + test (data_utils.py:318-338).
    ``education_level`` = 0 (high school) / 1 (college) (their ``human_hardness``), ``subject``. Item ids
    ``<config>/<split>/<row>``.
``strategyqa``
    ``wics/strategy-qa``, split ``test`` ("the train split of 2290 points from the paper", data_utils.py:440-444).
    Yes/no multiple choice (``choices`` ``["yes", "no"]``, their answer_choices, :223); ``num_steps`` =
    ``len(decomposition)``, ``reasoning`` = the facts joined by spaces, ``reasoning_num_words`` its words
    (:445-453). Item ids are the ``qid``.

GSM8K's columns (``num_steps`` etc., data_utils.py:458-484) are added to crossdiff's own ``gsm8k`` adapter by
:func:`gsm8k_columns`.

Local copies (``items.path``): ``arc_hase`` and ``mmlu_stem5``: a folder with one sub-folder per dataset config
(``ARC-Easy``, ``ARC-Challenge``; ``high_school_physics``, ...), each holding its splits as files whose names
start with the split name (``train.jsonl``, ``test-00000-of-00001.parquet``: a hub snapshot's layout) in .jsonl,
.json or .parquet. ``strategyqa``: one file of the split, or a folder with its ``test*`` file(s).
"""

from __future__ import annotations

import json
from pathlib import Path

from crossdiff.errors import CrossdiffError

ARC_HUB = "allenai/ai2_arc"
ARC_SETS = (("ARC-Easy", "ARCEZ"), ("ARC-Challenge", "ARCCH"))  # their concatenation order, data_utils.py:361
ARC_SPLITS = ("train", "validation", "test")
MMLU_HUB = "tasksource/mmlu"
MMLU_SUBJECTS = ("computer_science", "physics", "mathematics", "chemistry", "biology")  # data_utils.py:319
MMLU_LEVELS = ("high_school", "college")
MMLU_SPLITS = ("validation", "test")
MMLU_CONFIGS = tuple(f"{lv}_{s}" for s in MMLU_SUBJECTS for lv in MMLU_LEVELS)
STRATEGYQA_HUB = "wics/strategy-qa"
STRATEGYQA_SPLIT = "test"

BLOOM = ("Remembering", "Understanding", "Applying", "Analyzing", "Evaluating")  # data_utils.py:394
DEPTH_OF_KNOWLEDGE = ("I", "II", "III")  # :399
DIFFICULTY = ("Low", "Medium", "High")  # :389
ANNOTATION_FIELDS = ("grade", "bloom", "depth_of_knowledge", "difficulty")
ANNOTATION_PREFIXES = ("ARCCH", "ARCEZ")
HARDNESS_SPLIT_SIZE = 1000  # data_utils.py:510
HARDNESS_SPLIT_SEED = 0  # main.py's --seed default, which run_jobs.py passes on unchanged

#: the columns each adapter adds beyond item_id, question, answer, choices (checked at parse for bins.measures)
COLUMNS = {
    "arc_hase": ("id", "split", "challenge", "labels", "n_choices", "answer_text", "grade", "bloom",
                 "depth_of_knowledge", "annotator_difficulty", "question_num_words", "answer_num_words",
                 "answer_num_chars", "hase_split", "question_length"),
    "mmlu_stem5": ("subject", "education_level", "split", "n_choices", "answer_text", "question_num_words",
                   "answer_num_words", "answer_num_chars", "question_length"),
    "strategyqa": ("qid", "term", "reasoning", "num_steps", "reasoning_num_words", "answer_text",
                   "question_num_words", "answer_num_words", "answer_num_chars", "question_length"),
}
GSM8K_COLUMNS = ("num_steps", "question_num_words", "reasoning_num_words", "answer_text", "answer_num_words",
                 "answer_num_chars")


# ------------------------------------------------------------------------------------------ conversions
def grade_of(value: str) -> int | None:
    """Their ``extract_grade_level`` (data_utils.py:383-387): ``"Grade 05"`` -> 5; no digits at the end -> None."""
    parts = value.split()
    return int(parts[-1]) if parts and parts[-1].isdigit() else None


def level_of(value: str, levels: tuple[str, ...]) -> int | None:
    """Their ``extract_difficulty`` / ``extract_bloom`` / ``extract_depth_of_knowledge``: 1-based place in
    ``levels``; another value -> None."""
    return levels.index(value) + 1 if value in levels else None


def _lengths(question: str, answer_text: str) -> dict:
    """data_utils.py:487-490, on their ``input_text`` (the question) and ``answer_text``."""
    return {"question_num_words": len(question.split()), "answer_num_words": len(answer_text.split()),
            "answer_num_chars": len(answer_text), "answer_text": answer_text}


# ------------------------------------------------------------------------------------------ reading rows
def _read_file(path: Path) -> list[dict]:
    """Rows of one .jsonl / .json / .parquet file (:func:`crossdiff.io.read_rows`)."""
    from crossdiff.io import read_rows

    return read_rows(path)


def _local_split(root: Path, config: str | None, split: str) -> list[dict]:
    """Rows of one split of one dataset config in a local copy (see the module doc for the layout)."""
    folder = root / config if config else root
    if config is None and root.is_file():
        return _read_file(root)
    if not folder.is_dir():
        raise CrossdiffError(f"{folder}: folder not found; items.path holds one folder per dataset config "
                             f"(expected {folder.name}/ with its {split} split)")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.startswith(split) and p.suffix in (".jsonl", ".json", ".parquet"))
    if not files:
        raise CrossdiffError(f"{folder}: no file of split {split!r} (expected {split}.jsonl, {split}.json, "
                             f"{split}.parquet or a hub snapshot's {split}-00000-of-00001.parquet)")
    rows: list[dict] = []
    for f in files:
        rows += _read_file(f)
    return rows


def _hub_split(hub_id: str, config: str | None, split: str) -> list[dict]:
    import datasets  # noqa: PLC0415 - heavy import, only for hub loading

    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as exc:  # offline, gated, unknown id/config/split: say which dataset and how to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossdiffError(f"cannot load {hub_id} (config {config!r}, split {split!r}) from the hub: {first}; "
                             f"check the id, or set items.path to a local copy") from None


def _rows(settings: dict, default_hub: str, config: str | None, split: str) -> list[dict]:
    if settings.get("path"):
        return _local_split(Path(settings["path"]), config, split)
    return _hub_split(settings.get("hub_id") or default_hub, config, split)


def _refuse_unused(name: str, settings: dict) -> None:
    for key in ("subtasks", "split"):
        if settings.get(key):
            raise CrossdiffError(f"items.{key} = {settings[key]!r}: the {name} adapter loads Hase et al.'s fixed "
                                 f"configs and splits; leave items.{key} unset")
    if settings.get("annotations") and name != "arc_hase":
        raise CrossdiffError(f"items.annotations: only the arc_hase adapter reads an annotations file, not {name}")
    if settings.get("hase_split") and name != "arc_hase":
        raise CrossdiffError(f"items.hase_split: only arc_hase has Hase et al.'s hardness/probing split, not {name}")


def _row_error(where, name: str, what: str, exc: Exception) -> CrossdiffError:
    return CrossdiffError(f"{where}: {name} {what}: {type(exc).__name__} {exc}; expected the {name} schema")


# ------------------------------------------------------------------------------------------ ARC
def read_annotations(path) -> dict[str, list[dict]]:
    """The annotations file as {ARC id: [record, ...]} in file order (their join ignores the key's source
    prefix, data_utils.py:376-381), each record's four measures converted (None = missing)."""
    p = Path(path)
    if not p.is_file():
        raise CrossdiffError(f"{p}: annotations file not found (items.annotations.path; Hase et al.'s "
                             "data/arc-challenge-easy-annotations.json)")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise CrossdiffError(f"{p}: not readable JSON ({exc}); expected Hase et al.'s annotations layout") from None
    if not isinstance(data, dict) or not data:
        raise CrossdiffError(f"{p}: expected a JSON object {{\"ARCCH_<id>\": {{grade, bloom, depth_of_knowledge, "
                             f"difficulty}}, ...}}, got {type(data).__name__ if data else 'nothing'}")
    out: dict[str, list[dict]] = {}
    for key, value in data.items():
        if key[:5] not in ANNOTATION_PREFIXES or key[5:6] != "_" or not key[6:]:
            raise CrossdiffError(f"{p}: key {key!r} is not ARCCH_<id> or ARCEZ_<id>")
        if not isinstance(value, dict):
            raise CrossdiffError(f"{p}: {key}: expected an object with {', '.join(ANNOTATION_FIELDS)}")
        missing = [f for f in ANNOTATION_FIELDS if f not in value]
        bad = [f for f in ANNOTATION_FIELDS if f in value and not isinstance(value[f], str)]
        if missing or bad:
            raise CrossdiffError(f"{p}: {key}: " + (f"no {', '.join(missing)}" if missing else "")
                                 + ("; " if missing and bad else "") + (f"{', '.join(bad)} not text" if bad else "")
                                 + f"; expected the four text fields {', '.join(ANNOTATION_FIELDS)}")
        out.setdefault(key[6:], []).append({
            "grade": grade_of(value["grade"]),
            "bloom": level_of(value["bloom"], BLOOM),
            "depth_of_knowledge": level_of(value["depth_of_knowledge"], DEPTH_OF_KNOWLEDGE),
            "annotator_difficulty": level_of(value["difficulty"], DIFFICULTY),
        })
    return out


def their_label_idx(answer_key: str) -> int:
    """Their gold index (data_utils.py:240): place of the key in A-E, or in 1-5 for a numeric key."""
    digits = ["1", "2", "3", "4", "5"]
    return digits.index(answer_key) if answer_key in digits else ["A", "B", "C", "D", "E"].index(answer_key)


def arc_row(row: dict) -> dict:
    """An ARC row as crossdiff's ``arc`` adapter reads it (answer = the key's place among the labels, ``labels``
    kept for the ARC prompt), with their lengths and answer text."""
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} not among labels {labels}")
    theirs = their_label_idx(row["answerKey"])
    if theirs != labels.index(row["answerKey"]):
        raise ValueError(f"answerKey {row['answerKey']!r} is option {labels.index(row['answerKey'])} of labels "
                         f"{labels} but Hase et al.'s label_idx reads it as option {theirs}")
    return {"question": row["question"], "choices": texts, "answer": str(theirs), "labels": json.dumps(labels),
            "n_choices": len(texts), **_lengths(row["question"], texts[theirs])}


def hardness_split(n: int, seed: int = HARDNESS_SPLIT_SEED, size: int = HARDNESS_SPLIT_SIZE) -> list[str] | None:
    """Their hardness/probing split of the final rows (data_utils.py:505-516): ``size`` rows drawn without
    replacement by ``np.random.default_rng(seed)``, the rest probing; None when there are not more rows."""
    import numpy as np

    if n <= size:
        return None
    hard = set(np.random.default_rng(seed).choice(np.arange(n), size=size, replace=False).tolist())
    return ["hardness" if i in hard else "probing" for i in range(n)]


def load_arc(settings: dict, where: str) -> list[dict]:
    _refuse_unused("arc_hase", settings)
    ann_spec = settings.get("annotations") or {}
    if not ann_spec.get("path"):
        raise CrossdiffError("items.annotations.path: the arc_hase adapter needs Hase et al.'s annotations file "
                             "(data/arc-challenge-easy-annotations.json of allenai/easy-to-hard-generalization)")
    annotations = read_annotations(ann_spec["path"])
    kept: dict[str, dict] = {}  # id -> the first surviving row (their merge, dropna, drop_duplicates)
    n_rows = n_joined = 0
    for config, prefix in ARC_SETS:
        for split in ARC_SPLITS:
            for index, row in enumerate(_rows(settings, ARC_HUB, config, split)):
                n_rows += 1
                try:
                    rid = str(row["id"])
                    matches = annotations.get(rid, [])
                    if not matches or rid in kept:
                        n_joined += len(matches)
                        continue
                    item = arc_row(row)
                except (KeyError, ValueError, TypeError) as exc:
                    raise _row_error(where, "arc_hase", f"{config} {split} row {index}", exc) from None
                n_joined += len(matches)
                for ann in matches:  # their merge gives one row per match; dropna; the first survivor is kept
                    if all(v is not None for v in ann.values()):
                        kept[rid] = {"item_id": f"{prefix}_{rid}", "id": rid, "split": split,
                                     "challenge": int(prefix == "ARCCH"), **item, **ann}
                        break
    items = list(kept.values())
    parts = hardness_split(len(items))
    for item, part in zip(items, parts or [None] * len(items)):
        item["hase_split"] = part
    print(f"arc_hase: {n_rows} ARC rows, {n_joined} joined with an annotation, {len(items)} kept after their "
          f"dropna and drop_duplicates (a grade that is no number, e.g. 'Biology', drops the item)"
          + (f"; hase_split: {parts.count('probing')} probing, {parts.count('hardness')} hardness" if parts else
             f"; hase_split null ({len(items)} items, not more than {HARDNESS_SPLIT_SIZE})"))
    keep = settings.get("hase_split")
    if keep:
        if parts is None:
            raise CrossdiffError(f"items.hase_split = {keep!r}: {len(items)} items after the join cannot hold "
                                 f"Hase et al.'s {HARDNESS_SPLIT_SIZE}-item hardness split")
        items = [it for it in items if it["hase_split"] == keep]
        print(f"arc_hase: items.hase_split = {keep!r}: {len(items)} items kept")
    if not items:
        raise CrossdiffError(f"{where}: no ARC row has a complete annotation in {ann_spec['path']} "
                             "(joined on the ARC id; keys ARCCH_<id> / ARCEZ_<id>)")
    return items


# ------------------------------------------------------------------------------------------ MMLU
def mmlu_row(row: dict) -> dict:
    choices = list(row["choices"])
    answer = row["answer"]
    if isinstance(answer, bool) or not str(answer).strip().isdigit():
        raise ValueError(f"answer {answer!r} is not an option index")
    k = int(answer)
    if not 0 <= k < len(choices):
        raise ValueError(f"answer {k} is not an index into {len(choices)} choices")
    return {"question": row["question"], "choices": choices, "answer": str(k), "n_choices": len(choices),
            **_lengths(row["question"], str(choices[k]))}


def load_mmlu(settings: dict, where: str) -> list[dict]:
    _refuse_unused("mmlu_stem5", settings)
    items = []
    for subject in MMLU_SUBJECTS:
        for level in MMLU_LEVELS:
            config = f"{level}_{subject}"
            for split in MMLU_SPLITS:
                for index, row in enumerate(_rows(settings, MMLU_HUB, config, split)):
                    try:
                        item = mmlu_row(row)
                    except (KeyError, ValueError, TypeError) as exc:
                        raise _row_error(where, "mmlu_stem5", f"{config} {split} row {index}", exc) from None
                    items.append({"item_id": f"{config}/{split}/{index}", "subject": subject,
                                  "education_level": MMLU_LEVELS.index(level), "split": split, **item})
    return items


# ------------------------------------------------------------------------------------------ StrategyQA
def strategyqa_row(row: dict) -> dict:
    if not isinstance(row["answer"], bool):
        raise ValueError(f"answer {row['answer']!r} is not true/false")
    facts, steps = row["facts"], row["decomposition"]
    if isinstance(facts, str) or isinstance(steps, str):
        raise ValueError("facts and decomposition must be lists of strings")
    reasoning = " ".join(facts)  # their gold_explanation / reasoning (data_utils.py:445, 222)
    answer = [True, False].index(row["answer"])  # label_idx, :225
    return {"question": row["question"], "choices": ["yes", "no"], "answer": str(answer), "qid": str(row["qid"]),
            "term": row.get("term"), "reasoning": reasoning, "num_steps": len(steps),
            "reasoning_num_words": len(reasoning.split()), **_lengths(row["question"], ["yes", "no"][answer])}


def load_strategyqa(settings: dict, where: str) -> list[dict]:
    _refuse_unused("strategyqa", settings)
    items, seen = [], set()
    for index, row in enumerate(_rows(settings, STRATEGYQA_HUB, None, STRATEGYQA_SPLIT)):
        try:
            item = strategyqa_row(row)
        except (KeyError, ValueError, TypeError) as exc:
            raise _row_error(where, "strategyqa", f"row {index}", exc) from None
        if item["qid"] in seen:
            raise CrossdiffError(f"{where}: strategyqa row {index}: qid {item['qid']!r} repeats; item ids are the qids")
        seen.add(item["qid"])
        items.append({"item_id": item["qid"], **item})
    return items


# ------------------------------------------------------------------------------------------ GSM8K
def gsm8k_columns(row: dict) -> dict:
    """Their GSM8K measures (data_utils.py:468-484): the reasoning is the text before ``####`` stripped of
    newlines at its ends; ``num_steps`` = its lines (split on "\\n", blank ones included), capped at 10;
    ``reasoning_num_words`` its words; ``answer_text`` the text after ``####`` stripped (commas kept)."""
    reasoning, _, answer = row["answer"].rpartition("####")
    reasoning = reasoning.strip("\n")
    return {"num_steps": min(len(reasoning.split("\n")), 10),
            "reasoning_num_words": len(reasoning.replace("\n", " ").split()),
            **_lengths(row["question"], answer.strip())}


# ------------------------------------------------------------------------------------------ parse-time checks
HASE_ADAPTERS = ("arc_hase", "mmlu_stem5", "strategyqa")


def parse_problems(name: str, items: dict) -> list[str]:
    """What can be refused before any job, without reading a file (crossdiff.plan.checks.item_problems)."""
    if items.get("source") != "hub":
        return []
    adapter, where, out = items.get("adapter"), f"datasets.{name}.items", []
    ann = (items.get("annotations") or {}).get("path")
    if adapter == "arc_hase" and not ann:
        out.append(f"{where}.annotations.path: the arc_hase adapter needs Hase et al.'s annotations file "
                   "(data/arc-challenge-easy-annotations.json of allenai/easy-to-hard-generalization; README: "
                   "'Hase et al.'s data')")
    if ann and adapter != "arc_hase":
        out.append(f"{where}.annotations: only the arc_hase adapter reads an annotations file, not {adapter}")
    if ann and Path(ann).is_dir():
        out.append(f"{where}.annotations.path: {ann} is a folder; expected the annotations JSON file")
    if items.get("hase_split") and adapter != "arc_hase":
        out.append(f"{where}.hase_split: only arc_hase has Hase et al.'s hardness/probing split, not {adapter}")
    if adapter in HASE_ADAPTERS:
        out += [f"{where}.{k} = {items[k]!r}: the {adapter} adapter loads Hase et al.'s fixed configs and splits; "
                f"leave it unset" for k in ("subtasks", "split") if items.get(k)]
    return out
