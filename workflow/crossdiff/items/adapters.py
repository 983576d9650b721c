"""Benchmark adapters: the paper's six datasets as crossdiff item tables.

Each adapter knows where a benchmark lives (Hugging Face ``datasets`` id, config(s), split, as the
Open LLM Leaderboard evaluated it), how its rows map to an item table (``item_id``, ``question``,
``answer``, optional ``choices`` and ``solution``, human difficulty metadata), and the default
prompt format (``crossdiff.prompts.format.PromptFormat`` keys) used for both training and evaluation.

``item_id`` matches the leaderboard's per-sample ``doc_id``: the row index within the evaluated
split, prefixed by the subtask for benchmarks that the leaderboard splits into subtasks
(``boolean_expressions/12`` for BBH, ``algebra_hard/3`` or ``counting_and_prob_hard/3`` for MATH,
``murder_mysteries/0`` for MuSR), exactly as the v2 leaderboard names its per-subtask sample files
(``samples_leaderboard_math_counting_and_prob_hard_*``; table ``LEADERBOARD_SUBTASK_FILES``).
The v1 leaderboard (ARC, GSM8K) wrote no doc_id: its details rows carry the question text (or, in
early ARC files, the dataset's native id, kept as the ``id`` column) and are matched to these items
by ``responses.match_items_on`` (crossdiff.responses.matching).

Items are loaded from the hub (``datasets.load_dataset``), or from a local file or directory
in the dataset's real schema (``path``), which is how tests and offline users run.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_rows, write_parquet
from crossdiff.items.gpqa import GPQA_PROMPT, gpqa_item, gpqa_rows
from crossdiff.items.hase import MMLU_CONFIGS, gsm8k_columns, load_arc, load_mmlu, load_strategyqa
from crossdiff.items.ifeval import IFEVAL_PROMPT, LEADERBOARD_HUB_ID, ifeval_item, ifeval_rows

BBH_SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies",
)  # the 24 subtasks of the leaderboard's BBH (dyck_languages, multistep_arithmetic_two, word_sorting excluded)
MATH_SUBTASKS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
MUSR_SUBTASKS = ("murder_mysteries", "object_placements", "team_allocation")

# The v2 leaderboard's per-subtask sample file names (``samples_{file name}_{run}.jsonl``), per dataset
# config, as the real details repos carry them. MATH shortens two subjects (``counting_and_prob``,
# ``num_theory``) where the HF configs say ``counting_and_probability`` / ``number_theory``. Item ids
# are ``{file name without the task prefix}/{doc_id}``, exactly what the collector reads from the files.
LEADERBOARD_TASKS = {"bbh": "leaderboard_bbh", "math": "leaderboard_math", "musr": "leaderboard_musr",
                     "mmlu_pro": "leaderboard_mmlu_pro"}
LEADERBOARD_SUBTASK_FILES: dict[str, dict[str, str]] = {
    "bbh": {s: f"leaderboard_bbh_{s}" for s in BBH_SUBTASKS},
    "math": {"algebra": "leaderboard_math_algebra_hard",
             "counting_and_probability": "leaderboard_math_counting_and_prob_hard",
             "geometry": "leaderboard_math_geometry_hard",
             "intermediate_algebra": "leaderboard_math_intermediate_algebra_hard",
             "number_theory": "leaderboard_math_num_theory_hard",
             "prealgebra": "leaderboard_math_prealgebra_hard",
             "precalculus": "leaderboard_math_precalculus_hard"},
    "musr": {s: f"leaderboard_musr_{s}" for s in MUSR_SUBTASKS},
}
# sizes of the evaluated splits (leaderboard documentation), where known: a file of another size is unusable
LEADERBOARD_SUBTASK_SIZES: dict[str, dict[str, int]] = {
    "math": {"algebra": 307, "counting_and_probability": 123, "geometry": 132, "intermediate_algebra": 280,
             "number_theory": 154, "prealgebra": 193, "precalculus": 135},
}


def subtask_prefix(name: str, sub: str) -> str:
    """The item-id prefix of one subtask: its leaderboard file name without the task prefix."""
    files = LEADERBOARD_SUBTASK_FILES.get(name)
    if files is None:
        return f"{sub}{ADAPTERS[name].id_suffix}"
    if sub not in files:
        raise CrossdiffError(f"{name}: subtask {sub!r} has no leaderboard file name; known: {', '.join(files)}")
    return files[sub][len(LEADERBOARD_TASKS[name]) + 1:]


@dataclass(frozen=True)
class Adapter:
    name: str
    hub_id: str
    configs: tuple[str | None, ...]  # dataset configs (subtasks); (None,) for one
    split: str
    to_item: Callable[[dict, str | None], dict]
    prompt: dict = field(default_factory=dict)
    subtask_in_id: bool = False
    id_suffix: str = ""  # appended to the subtask in item ids, as the leaderboard names its files
    split_is_subtask: bool = False  # MuSR: the subtask is the split name
    keep: Callable[[dict], bool] | None = None  # row filter (MATH: level 5 only)
    default_subtasks: tuple[str, ...] | None = None  # subtasks loaded when items.subtasks is unset (None = all)
    rows: Callable[[list[dict], dict, str], list[dict]] | None = None  # (rows, settings, where) -> rows in doc order
    load: Callable[[dict, str], list[dict]] | None = None  # (settings, where) -> items with item_id: several configs
    # and splits in one table (Hase et al.'s data, crossdiff.items.hase); replaces the per-subtask loop


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), as MATH solutions give their answer."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth, k = 0, j
    while k < len(text):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1:k]
        k += 1
    return None


def _n_words(s: str) -> int:
    return len(s.split())


def arc_item(row: dict, _sub) -> dict:
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} not among labels {labels}")
    return {"question": row["question"], "choices": list(texts), "answer": str(labels.index(row["answerKey"])),
            "labels": json.dumps(list(labels)), "n_choices": len(texts), "question_words": _n_words(row["question"])}


def gsm8k_item(row: dict, _sub) -> dict:
    solution, _, final = row["answer"].rpartition("####")
    if not _:
        raise ValueError("answer has no '#### <number>' line")
    return {"question": row["question"], "answer": final.strip().replace(",", ""), "solution": row["answer"],
            "n_steps": len([ln for ln in solution.strip().splitlines() if ln.strip()]),
            "n_calculations": solution.count("<<"), "question_words": _n_words(row["question"]),
            **gsm8k_columns(row)}  # Hase et al.'s num_steps, lengths and answer_text (crossdiff.items.hase)


def mmlu_pro_item(row: dict, _sub) -> dict:
    options = list(row["options"])
    return {"question": row["question"], "choices": options, "answer": str(int(row["answer_index"])),
            "category": row.get("category"), "source": row.get("src"), "n_choices": len(options),
            "question_words": _n_words(row["question"])}


def bbh_item(row: dict, sub) -> dict:
    return {"question": row["input"], "answer": str(row["target"]).strip(), "subtask": sub,
            "question_words": _n_words(row["input"])}


def math_item(row: dict, sub) -> dict:
    answer = _boxed(row["solution"])
    if answer is None:
        raise ValueError("solution has no \\boxed{} answer")
    level = str(row.get("level", ""))
    m = re.search(r"(\d+)", level)
    return {"question": row["problem"], "answer": answer, "solution": row["solution"],
            "subject": row.get("type") or sub, "level": int(m.group(1)) if m else None,
            "solution_words": _n_words(row["solution"]), "question_words": _n_words(row["problem"])}


def musr_item(row: dict, sub) -> dict:
    choices = row["choices"]
    if isinstance(choices, str):
        choices = ast.literal_eval(choices)
    text = f"{row['narrative']}\n\n{row['question']}"
    return {"question": text, "choices": list(choices), "answer": str(int(row["answer_index"])), "domain": sub,
            "n_choices": len(choices), "narrative_words": _n_words(row["narrative"])}


MC_PROMPT = {"scoring": "multiple_choice", "template": "Question: {question}\nAnswer:", "choice_template": " {choice}"}

# The authors' formats (BatsResearch/cross-difficulty: train/utils.py for training, eval/cross_difficulty/*.yaml
# for evaluation); config/README.md lists where crossdiff differs and the setting that restores theirs.
STOP = ["Q:", "</s>", "<|im_end|>"]
ARC_PROMPT = {"scoring": "multiple_choice", "template": "Question: {question}\n{options}\nAnswer:\n",
              "option_template": "{label}) {choice}", "labels_field": "labels", "choice_template": " {label}",
              "metrics": ["acc", "acc_norm"]}
GSM8K_PROMPT = {
    "template": "Q: {question}\nA:\n",
    "target": "{solution}",
    "target_regex_sub": [["<<.*?>>", ""], [r"\s*#### ", " So the answer is "]],
    "stop": STOP, "max_gen_toks": 256,
    "filters": [
        {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": r"So the answer is (\-?[0-9\.\,]+)."},
                                            {"function": "take_first"}]},
        {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                 "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                {"function": "take_first"}]},
    ],
    "primary_filter": "flexible-extract",
    "ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", r"\$", "(?s).*#### ", r"\.$"],
}
MMLU_PRO_PROMPT = {
    "template": "Question: {question}\n{options}\nAnswer:\n", "option_template": "{label}) {choice}",
    "target": "{gold_label}", "reference": "{gold_label}",
    "stop": ["</s>", "Q:", "<|im_end|>"], "max_gen_toks": 2048,
    "filters": [{"name": "custom-extract", "filter": [{"function": "regex", "regex_pattern": "([A-J])"},
                                                      {"function": "take_first"}]}],
    "ignore_case": True, "ignore_punctuation": True,
}
BBH_PROMPT = {
    "template": "Q: {question}\nA:", "train_template": "Question: {question}\nAnswer:\n", "target": "{answer}",
    "stop": STOP, "max_gen_toks": 256,
    "filters": [{"name": "strict-match", "filter": [{"function": "take_first"}]},
                {"name": "flexible-extract", "filter": [{"function": "crossdiff_bbh_answer_type"},
                                                        {"function": "take_first"}]}],
    "ignore_case": True, "ignore_punctuation": True, "regexes_to_ignore": [r"\.$", ",", "\n", r"\\", '"'],
}
MATH_PROMPT = {"template": "Problem:\n{question}\n\nSolution:", "target": " {solution}", "stop": [],
               "max_gen_toks": 4096, "checker": "math"}
MUSR_PROMPT = {"scoring": "multiple_choice", "template": "{question}\n\n{options}\nAnswer:",
               "train_template": "{question}\n\n{options}\n\nAnswer:", "option_template": "{number} - {choice}",
               "choice_template": " {choice}", "metrics": ["acc_norm"]}
#: the authors score 21 of the leaderboard's 24 BBH subtasks (their data set holds 21 x 250 = 5,250 items)
BBH_SCORED = tuple(s for s in BBH_SUBTASKS if s not in ("causal_judgement", "penguins_in_a_table", "snarks"))

#: Hase et al.'s multiple-choice data (mmlu_stem5, strategyqa): the ARC format with letters A, B, ... as labels
HASE_MC_PROMPT = {k: v for k, v in ARC_PROMPT.items() if k != "labels_field"}

#: the authors train with max_seq_length 4096 on every benchmark
for _p in (ARC_PROMPT, GSM8K_PROMPT, MMLU_PRO_PROMPT, BBH_PROMPT, MATH_PROMPT, MUSR_PROMPT, HASE_MC_PROMPT):
    _p["max_length"] = 4096

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("arc", "allenai/ai2_arc", ("ARC-Challenge",), "test", arc_item, ARC_PROMPT),
    Adapter("gsm8k", "openai/gsm8k", ("main",), "test", gsm8k_item, GSM8K_PROMPT),
    Adapter("mmlu_pro", "TIGER-Lab/MMLU-Pro", (None,), "test", mmlu_pro_item, MMLU_PRO_PROMPT),
    # default: the authors' 21 scored subtasks; items.subtasks lists all 24 for the leaderboard's whole BBH
    # (the collector skips the subtask files the item table leaves out; other importers drop them in dropped.csv)
    Adapter("bbh", "SaylorTwift/bbh", BBH_SUBTASKS, "test", bbh_item, BBH_PROMPT, subtask_in_id=True,
            default_subtasks=BBH_SCORED),
    Adapter("math", "lighteval/MATH-Hard", MATH_SUBTASKS, "test", math_item, MATH_PROMPT,
            subtask_in_id=True, id_suffix="_hard", keep=lambda r: str(r.get("level", "")).strip() == "Level 5"),
    Adapter("musr", "TAUR-Lab/MuSR", MUSR_SUBTASKS, "test", musr_item, MUSR_PROMPT, subtask_in_id=True,
            split_is_subtask=True),
    # options as the leaderboard scored them: from its details docs (crossdiff.items.gpqa)
    Adapter("gpqa_extended", "Idavidrein/gpqa", ("gpqa_extended",), "train", gpqa_item, GPQA_PROMPT, rows=gpqa_rows),
    # the training target needs items.solutions (column model_solution); evaluation: lm-eval's checkers
    # the dataset leaderboard_ifeval loads (its row order = the leaderboard's doc ids), not google/IFEval's copy
    Adapter("ifeval", LEADERBOARD_HUB_ID, (None,), "train", ifeval_item, IFEVAL_PROMPT, rows=ifeval_rows),
    # Hase et al. 2024's data with their human hardness measures (crossdiff.items.hase)
    Adapter("arc_hase", "allenai/ai2_arc", ("ARC-Easy", "ARC-Challenge"), "train+validation+test", arc_item,
            ARC_PROMPT, load=load_arc),
    Adapter("mmlu_stem5", "tasksource/mmlu", tuple(MMLU_CONFIGS), "validation+test", mmlu_pro_item,
            HASE_MC_PROMPT, load=load_mmlu),
    Adapter("strategyqa", "wics/strategy-qa", (None,), "test", arc_item, HASE_MC_PROMPT, load=load_strategyqa),
)}


def _read_local(path: Path, sub: str | None) -> list[dict]:
    """Rows of a local file in the dataset's real schema; a directory holds one file per subtask."""
    if path.is_dir():
        if sub is None:
            files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet"))
        else:
            files = [p for p in (path / f"{sub}.jsonl", path / f"{sub}.parquet", path / f"{sub}.json") if p.exists()]
        if not files:
            return []
        rows: list[dict] = []
        for f in files:
            rows += _read_local(f, None)
        return rows
    return read_rows(path)


def _load_rows(adapter: Adapter, sub: str | None, settings: dict) -> list[dict]:
    if settings.get("path"):
        rows = _read_local(Path(settings["path"]), sub if adapter.configs != (None,) else None)
        if adapter.configs != (None,) and Path(settings["path"]).is_file():
            rows = [r for r in rows if r.get("subtask", sub) == sub]
        return rows
    import datasets  # noqa: PLC0415 - heavy import, only for hub loading

    hub_id = settings.get("hub_id") or adapter.hub_id
    split = sub if adapter.split_is_subtask else settings.get("split") or adapter.split
    config = None if adapter.split_is_subtask else sub
    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as exc:  # offline, gated, unknown id/config/split: say which dataset and how to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossdiffError(f"cannot load {hub_id} (config {config!r}, split {split!r}) from the hub: {first}; "
                             f"check the id and HF_TOKEN, or set items.path to a local copy") from None


def load_items(name: str, settings: dict | None = None) -> pl.DataFrame:
    settings = settings or {}
    if name not in ADAPTERS:
        raise CrossdiffError(f"items.adapter = {name!r}; expected one of: {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[name]
    if adapter.load is not None:
        return _item_frame(adapter.load(settings, str(settings.get("path") or settings.get("hub_id") or adapter.hub_id)))
    subtasks: Iterable = settings.get("subtasks") or adapter.default_subtasks or adapter.configs
    unknown = [s for s in subtasks if s not in adapter.configs]
    if unknown:
        raise CrossdiffError(f"items.subtasks: unknown {name} subtask(s) {unknown}; expected some of {list(adapter.configs)}")
    where = settings.get("path") or adapter.hub_id
    items, empty = [], []
    for sub in subtasks:
        rows = _load_rows(adapter, sub, settings)
        if adapter.rows is not None:
            rows = adapter.rows(rows, settings, str(where))
        if not rows and sub is not None:
            empty.append(sub)
        kept = (r for r in rows if adapter.keep is None or adapter.keep(r))
        # doc ids count the kept rows: MATH-Hard on the hub holds level 5 only, so both agree
        for index, row in enumerate(kept):
            try:
                item = adapter.to_item(row, sub)
            except (KeyError, ValueError, SyntaxError) as exc:
                of = f" of {sub}" if adapter.subtask_in_id else ""
                raise CrossdiffError(f"{where}: {name} row {index}{of}: {type(exc).__name__} {exc}; "
                                     f"expected the {name} schema") from None
            item_id = f"{subtask_prefix(name, sub)}/{index}" if adapter.subtask_in_id else str(index)
            if row.get("id") is not None and "id" not in item:
                item["id"] = str(row["id"])  # the dataset's native id (early v1 ARC files carry it)
            if "choices" in item:
                item["choices"] = json.dumps(item["choices"])  # one string column, parsed by prompts
            items.append({"item_id": item_id, **item})
    if empty and settings.get("subtasks"):  # asked for by name: a missing file is a mistake, not a choice
        raise CrossdiffError(f"{where}: no rows for the {name} subtask(s) {empty} listed in items.subtasks "
                             f"(a directory holds one <subtask>.jsonl/.parquet/.json per subtask); "
                             f"add their files or leave them out of items.subtasks")
    if empty and items:  # the default set, partly present locally: say what is left out
        print(f"crossdiff: note: {where}: no rows for {len(empty)} of the {len(list(subtasks))} default {name} "
              f"subtask(s): {', '.join(empty)}; their items are left out (set items.subtasks to the ones you have "
              f"to silence this)", file=sys.stderr)
    if not items:
        raise CrossdiffError(f"{where}: no {name} items found")
    df = pl.DataFrame(items, infer_schema_length=None)
    return df.with_columns(pl.col("question").str.len_chars().alias("question_length"))


def _item_frame(items: list[dict]) -> pl.DataFrame:
    """An adapter's ``load`` items as the item table (choices as one JSON string column, question_length; a
    column that is null throughout is text)."""
    rows = [{**it, "choices": json.dumps(it["choices"])} if "choices" in it else it for it in items]
    df = pl.DataFrame(rows, infer_schema_length=None)
    df = df.with_columns([pl.col(c).cast(pl.Utf8) for c, t in df.schema.items() if t == pl.Null])
    return df.with_columns(pl.col("question").str.len_chars().alias("question_length"))


def _read_solutions_table(spec: dict) -> tuple[list[dict], str]:
    if spec.get("path"):
        path = Path(spec["path"])
        if path.suffix in (".csv", ".tsv"):
            if not path.exists():
                raise CrossdiffError(f"{path}: solutions table not found")
            return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",", infer_schema_length=0).to_dicts(), str(path)
        return _read_local(path, None), str(path)
    if spec.get("hub_id"):
        import datasets  # noqa: PLC0415

        where = f"{spec['hub_id']} (config {spec.get('config')!r}, split {spec.get('split', 'train')!r})"
        try:
            return list(datasets.load_dataset(spec["hub_id"], spec.get("config"), split=spec.get("split") or "train")), where
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CrossdiffError(f"items.solutions: cannot load {where} from the hub: {first}") from None
    raise CrossdiffError("items.solutions: give a path (table) or a hub_id")


def _solution_text(value) -> str | None:
    """A solution cell as text, or None when it holds none: null, NaN and blank are missing; a number
    (a numeric parquet column) is its text, 0 and 0.0 included."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def attach_solutions(items: pl.DataFrame, spec: dict, dataset: str = "items") -> pl.DataFrame:
    """Join per-item solutions from another source into ``items`` as column ``model_solution``.

    ``spec``: ``path`` or ``hub_id`` (+ ``config``, ``split``), ``column`` (the solution column),
    ``key`` (``item_id`` or ``question``: the item column rows are matched on) and ``key_column``
    (the table's column holding that key; default the same name), ``fallback_column`` (taken where the
    solution column is empty, as the authors' ``model_solution or solution``). Every item needs exactly one
    solution: a missing, empty or duplicated one is an error naming the items.
    """
    where = f"datasets.{dataset}.items.solutions"
    key, column = spec.get("key") or "item_id", spec.get("column") or "model_solution"
    key_column = spec.get("key_column") or key
    rows, source = _read_solutions_table(spec)
    if not rows:
        raise CrossdiffError(f"{where}: {source} holds no rows")
    fallback = spec.get("fallback_column")  # the authors: `model_solution` if non-empty, else `solution`
    for name in (key_column, column) + ((fallback,) if fallback else ()):
        if name not in rows[0]:
            raise CrossdiffError(f"{where}: {source} has no column {name!r}; columns: {sorted(rows[0])}")
    norm = (lambda t: " ".join(str(t).split())) if key == "question" else str  # noqa: E731 - whitespace-insensitive text
    table: dict[str, str] = {}
    dups = []
    for row in rows:
        k = norm(row[key_column])
        if k in table:
            dups.append(k)
        table[k] = row[column] if (str(row[column] or "").strip() or not fallback) else row[fallback]
    if dups:
        raise CrossdiffError(f"{where}: {len(dups)} duplicated key(s) in {source}, e.g. {dups[:3]}")
    keys = [norm(v) for v in items[key].to_list()]
    table = {k: _solution_text(v) for k, v in table.items()}
    missing = [iid for iid, k in zip(items["item_id"].to_list(), keys) if not table.get(k)]
    if missing:
        raise CrossdiffError(f"{where}: {len(missing)} of {items.height} item(s) have no solution in {source} "
                             f"(matched on {key} = {key_column}), e.g. item(s) {missing[:5]}")
    return items.with_columns(pl.Series("model_solution", [str(table[k]) for k in keys], dtype=pl.Utf8))


def prompt_for(items_settings: dict, prompt: dict | None) -> dict:
    """The prompt format of a dataset: its adapter's defaults (for ``items.source: hub``), overridden
    key by key (nested mappings merged, lists replaced) by the dataset's own ``prompt`` section."""
    if items_settings.get("source") == "lm_eval_task":
        from crossdiff.items.lm_eval_task import prompt_format

        return prompt_format(items_settings, prompt)
    from crossdiff.config import deep_merge

    base = ADAPTERS[items_settings["adapter"]].prompt if items_settings.get("source") == "hub" else {}
    return deep_merge(base, prompt)


def prepare_items(settings: dict, dataset: str) -> pl.DataFrame:
    """The item table for a dataset's ``items`` config section (source ``synthetic`` or ``hub``)."""
    source = settings.get("source", "hub")
    if source == "synthetic":
        from crossdiff.items.synthetic import generate_items

        return generate_items(int(settings["n_items"]), int(settings["seed"]), int(settings.get("max_ops", 5)),
                              int(settings.get("max_digits", 3)), prefix=dataset,
                              operators=settings.get("operators"), ops_weights=settings.get("ops_weights"))
    if source == "hub":
        if "adapter" not in settings:
            raise CrossdiffError(f"datasets.{dataset}.items: source 'hub' needs an adapter ({', '.join(ADAPTERS)})")
        items = load_items(settings["adapter"], settings)
        if settings.get("solutions"):
            items = attach_solutions(items, settings["solutions"], dataset)
        return items
    if source == "corpus":  # a question/solution/answer table named by its columns (crossdiff.items.corpus)
        from crossdiff.items.corpus import load_corpus

        return load_corpus(settings, dataset)
    if source == "lm_eval_task":
        from crossdiff.items.lm_eval_task import load_task_items

        items = load_task_items(settings, dataset)
        return attach_solutions(items, settings["solutions"], dataset) if settings.get("solutions") else items
    raise CrossdiffError(f"datasets.{dataset}.items.source = {source!r}: nothing to prepare (expected synthetic, hub, "
                         f"lm_eval_task or corpus)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", type=json_arg, required=True,
                   help='JSON: the dataset\'s items section, e.g. {"source": "hub", "adapter": "arc", "path": "arc.jsonl"}')
    p.add_argument("--dataset", default="items", help="dataset name (synthetic item_id prefix, messages)")
    p.add_argument("--output", required=True)


def run(args: argparse.Namespace) -> None:
    df = prepare_items(args.settings, args.dataset)
    write_parquet(df, args.output)
    print(f"wrote {df.height} items of {args.dataset} to {args.output}")
