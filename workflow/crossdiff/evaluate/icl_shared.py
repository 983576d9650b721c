"""In-context learning as Hase et al. 2024 ran it (``study.icl.protocol: shared``).

"The Unreasonable Effectiveness of Easy Training Data for Hard Tasks" (arXiv 2401.06751; code
allenai/easy-to-hard-generalization at ad8358e, cited file:line below). For every bootstrap r of
``study.icl.n_bootstrap`` (theirs: 5, ``run_jobs.py:689``) and train bin b, ONE set of k demonstrations is drawn
from bin b's training items and shared by every test item of every test bin (``data_utils.py:1239-1254``:
``LM_utils.pull_prompt_from_data`` draws k rows once per bootstrap; ``data_utils.py:1280`` gives that one
``prompt_ex`` to every test row). Their per-bootstrap train split is exactly k items of the level
(``main.py:532``, ``n_train = max(supervision_n) = k``), drawn without replacement and put in a random order
(``data_utils.py:733-755``, ``LM_utils.py:259-264``); the test items are every other item (``data_utils.py:758``).

crossdiff mirrors that with its bins: the draw is the first k of a seeded permutation of bin b's training items
(``numpy.random.default_rng(SeedSequence([seed, b, r]))``; a random subset in a random order, as theirs; the
same seed gives the same demonstrations, prompts and numbers, and a smaller k's demonstrations are the first of a
larger k's). The test items are the test bin's task items (``make-task``): with ``bins.holdout_fraction`` the
held-out items, which never meet the training part; without it, the demonstrations are dropped from their own
bin's test items for that bootstrap (theirs: the test split is the complement of the train split), so no item is
ever among its own demonstrations. Differences to theirs (config/README.md, "Hase et al. 2024"): they draw from
NumPy's global stream (``main.py:1166``), not a per-(bin, bootstrap) seed; their other levels' test items
exclude nothing, as here.

Prompt (``prompt_id``, their 4-digit id: instruction, question, answer-choices and label template,
``prompt.py:176-191``; ``0040`` for ARC/MMLU, ``0306`` StrategyQA, ``0305`` + ``cot`` for GSM8K's CoT,
``run_jobs.py:192-201``). An example is ``question`` + ``" " + options`` (when the options template is not
empty) + ``" " + label`` (a demonstration; ``prompt.py:193-216``): with ``0040``
``"Question: {q} \\nA) {c1}\\nB) {c2} \\nAnswer: {gold option text}"`` (the answer TEXT, ``main.py:991``,
``prompt.py:228``). Demonstrations are joined by ``"\\n\\n"`` and followed by ``"\\n\\n"`` (``prompt.py:31, 233``);
the test item is the example without label plus the empty label template (``"\\nAnswer: "``, no space before it
since it starts with a newline), its trailing space stripped as for their Llama models (``prompt.py:257-266``):
``"...\\nD) {c4}\\nAnswer:"``. With ``cot`` a demonstration is ``question + "\\nA: " + reasoning + " " + label``
and the test item ends ``"\\nA:"`` (``prompt.py:88, 208-212``).

Scoring (``prompt.py`` id label 0, ``LM_utils.py:194-234``, ``main.py:996``, ``modeling_utils.py:155``): a
multiple-choice item's options are scored by the summed log-probability of each option's text as the
continuation of the prompt (``" " + text``: the text their Llama SentencePiece tokenizer scores when it encodes the
bare option after the prompt), no length normalisation, through lm-eval's ``loglikelihood`` (its ``acc``:
``argmax``, ties to the lowest index; their softmax over options does not change the argmax). Items without
options (generation) are greedy-decoded up to the dataset format's ``max_gen_toks`` and stop strings plus the
demonstration separator ``"\\n\\n"``, and scored by the dataset's own filter and metric (theirs: cut at the first
newline, ``metrics.py:167-212``). A prompt longer than the model's context (with the longest option, or
``max_gen_toks``) loses demonstrations from its end, for that item only, until it fits (theirs with 2048 tokens,
``data_utils.py:1351-1368``); the per-sample log records how many each item kept.

Outputs: the same folders as the per-item protocol (``results/eval/{model}/{dataset}/icl-k{k}-train{b}/bin{t}.json``
+ ``.samples.jsonl``). A sample's ``correct`` is its mean over the bootstraps that tested it, with
``correct_by_bootstrap`` (null where it was a demonstration), ``prediction_by_bootstrap`` and
``n_demos_by_bootstrap``; the result's ``value`` is the mean of those (the mean over bootstraps whenever every
bootstrap tests the same items: every cell with held-out items and every cell off the diagonal), and its ``icl``
entry keeps ``bootstrap_values`` (each bootstrap's accuracy over its own test items, their per-bootstrap number),
``value_mean_over_bootstraps``, the demonstrations' item ids per bootstrap, k, the seed and the prompt id. One model
load and one lm-eval call score every (k, train bin, bootstrap, test bin) cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_json, write_jsonl, write_text

PROTOCOLS = ("per_item", "shared")
#: the keys of ``study.icl`` this protocol reads (``k``, ``seed`` are shared with the per-item protocol)
DEFAULTS = {"protocol": "shared", "k": [8], "seed": 1234, "n_bootstrap": 5, "prompt_id": "0040", "cot": False,
            "reasoning_field": "reasoning"}

# Their templates (utils/prompt.py:33-88), indexed by the digits of a prompt id. Only the empty instruction
# (index 0) is offered: their ICL runs use it (run_jobs.py:192-201).
INSTRUCTIONS = ("",)
QUESTION_TEMPLATES = (
    "Question: {}",
    "{}",
    "Problem: {}",
    "Q: {}",
    "Hey there! I have a question for you. Here it is: {}",
    "Welcome to the trivia challenge! Your question is: {}",
    "Let's test your knowledge! Below is an educational question:\n{}",
)


def _choices_template(idx: int, n: int) -> str:
    """Their answer-choices template ``idx`` for n options (prompt.py:63-72), with ``{}`` per option."""
    if idx == 0:
        return ""
    if idx in (1, 2, 3):
        word = {1: "choice", 2: "answer", 3: "option"}[idx]
        return " ".join(f"{word}: {{}}" for _ in range(n))
    if idx == 4:
        return "".join(f"\n{chr(i + 65)}) {{}}" for i in range(n))
    if idx == 5:
        return "The choices are " + ", ".join("{}" for _ in range(n - 1)) + ", and {}"
    if idx == 6:
        return "The choices are " + " and ".join("{}" for _ in range(n))
    return " or ".join("{}" for _ in range(n)) + "?"


N_CHOICE_TEMPLATES = 8
LABEL_TEMPLATES = (
    "\nAnswer: {}",
    "{}",
    "\n{}",
    "The answer is: {}",
    "Therefore, the answer is {}",
    "So the answer is {}",
    "\nA: {}",
    "\nSo the answer is {}",
)
COT_PREFACE = "\nA:"  # prompt.py:88 (think_step_by_step off)
DEMO_SEPARATOR = "\n\n"  # prompt.py:31, 233: "\n" + between_point_buffer "\n"


# ------------------------------------------------------------------------------------------- settings
def settings_problems(icl: dict, where: str) -> list[str]:
    """What is wrong with a resolved ``study.icl`` section under the shared protocol (parse time; no heavy imports)."""
    out = []
    if icl.get("protocol", "per_item") not in PROTOCOLS:
        out.append(f"{where}.protocol: expected one of {list(PROTOCOLS)}, got {icl.get('protocol')!r}")
    if icl.get("protocol") != "shared":
        return out
    n = icl.get("n_bootstrap", DEFAULTS["n_bootstrap"])
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        out.append(f"{where}.n_bootstrap: expected an integer >= 1, got {n!r}")
    try:
        HasePrompt(str(icl.get("prompt_id", DEFAULTS["prompt_id"])), bool(icl.get("cot", False)))
    except CrossdiffError as exc:
        out.append(f"{where}.prompt_id: {exc}")
    return out


def resolve(icl: dict | None) -> dict:
    s = {**DEFAULTS, **(icl or {})}
    problems = settings_problems(s, "study.icl")
    if problems:
        raise CrossdiffError("; ".join(problems))
    if s["protocol"] != "shared":
        raise CrossdiffError(f"study.icl.protocol = {s['protocol']!r}: this is the shared protocol's command "
                             "(the per-item protocol is `crossdiff evaluate-icl`)")
    return s


# ------------------------------------------------------------------------------------------- prompts
@dataclasses.dataclass(frozen=True)
class HasePrompt:
    """Their prompt for one id (``"0040"``: empty instruction, ``Question: {}``, ``\\nA) {}`` options, ``\\nAnswer: {}``)."""

    prompt_id: str = "0040"
    cot: bool = False

    def __post_init__(self):
        pid = str(self.prompt_id)
        if not re.fullmatch(r"\d{4}", pid):
            raise CrossdiffError(f"{pid!r} is not a prompt id: four digits, instruction / question / answer-choices / "
                                 "label template (Hase et al.'s prompt.py; e.g. 0040, 0306, 0305)")
        i, q, a, lab = (int(c) for c in pid)
        if i >= len(INSTRUCTIONS):
            raise CrossdiffError(f"{pid!r}: instruction template {i}; only 0 (no instruction) is offered")
        if q >= len(QUESTION_TEMPLATES):
            raise CrossdiffError(f"{pid!r}: question template {q}; there are {len(QUESTION_TEMPLATES)} (0-{len(QUESTION_TEMPLATES) - 1})")
        if a >= N_CHOICE_TEMPLATES:
            raise CrossdiffError(f"{pid!r}: answer-choices template {a}; there are {N_CHOICE_TEMPLATES} (0-7)")
        if lab >= len(LABEL_TEMPLATES):
            raise CrossdiffError(f"{pid!r}: label template {lab}; there are {len(LABEL_TEMPLATES)} (0-7)")

    @property
    def _ids(self) -> tuple[int, int, int, int]:
        return tuple(int(c) for c in str(self.prompt_id))  # type: ignore[return-value]

    def example(self, question: str, choices: list[str] | None = None, label: str | None = None,
                reasoning: str | None = None) -> str:
        """One example (prompt.py:193-216): a demonstration with ``label``, the test item's head without."""
        _, q, a, lab = self._ids
        text = QUESTION_TEMPLATES[q].format(question)
        choices = list(choices or [])
        options = _choices_template(a, len(choices)).format(*choices) if choices else ""
        if options != "":
            text += f" {options}"
        if self.cot:
            if reasoning is not None and label is not None:
                return text + f"{COT_PREFACE} {reasoning} {LABEL_TEMPLATES[lab].format(label)}"
            return text + COT_PREFACE
        if label is not None:
            text += f" {LABEL_TEMPLATES[lab].format(label)}"
        return text

    def prompt(self, demos: list[dict], test: dict) -> str:
        """The whole prompt (prompt.py:218-270): demonstrations, then the test item and the empty label."""
        head = ""
        if demos:
            head = DEMO_SEPARATOR.join(self.demo(d) for d in demos) + DEMO_SEPARATOR
        text = head + self.example(test["question"], test.get("choices"))
        if not self.cot:
            empty = LABEL_TEMPLATES[self._ids[3]].format("")
            text += empty if empty.startswith("\n") else " " + empty
        return text.removesuffix(" ")  # their Llama rule (prompt.py:265-266), applied to every model

    def demo(self, d: dict) -> str:
        return self.example(d["question"], d.get("choices"), d["label"], d.get("reasoning"))


def _reasoning(value, item_id, field) -> str:
    if value is None or not str(value).strip():
        raise CrossdiffError(f"item {item_id!r}: study.icl.cot needs the reasoning column {field!r} (reasoning_field)")
    text = str(value)
    text = re.split(r"\n?\s*####", text)[0]  # a GSM8K solution: the reasoning before its '#### <answer>' line
    return text.strip()


def example_of(item: dict, fmt, icl: dict) -> dict:
    """An item as their prompt sees it: question, option texts (multiple choice), the gold answer's TEXT, reasoning."""
    if "question" not in item or item["question"] is None:
        raise CrossdiffError(f"item {item.get('item_id', '?')!r}: the shared ICL protocol needs a 'question' column")
    out = {"item_id": str(item["item_id"]), "question": str(item["question"]), "choices": [], "item": item}
    if fmt.scoring == "multiple_choice":
        out["choices"] = fmt.choices(item)
        out["gold"] = fmt.gold_index(item)
        out["label"] = out["choices"][out["gold"]]
    else:
        out["gold"] = fmt.gold(item)
        out["label"] = str(out["gold"])
    if icl.get("cot"):
        field = icl.get("reasoning_field") or "reasoning"
        out["reasoning"] = _reasoning(item.get(field), out["item_id"], field)
    return out


def draw(pool_ids, k: int, seed: int, train_bin: int, n_bootstrap: int) -> list[list[str]]:
    """Each bootstrap's k demonstrations (in prompt order): the first k of a permutation of the sorted pool seeded
    by ``(seed, train_bin, bootstrap)``."""
    pool = sorted(str(i) for i in pool_ids)
    if len(pool) < k:
        raise CrossdiffError(f"study.icl.k = {k}: bin {train_bin} has only {len(pool)} training item(s) to draw "
                             "demonstrations from")
    out = []
    for r in range(int(n_bootstrap)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(train_bin), r]))
        out.append([pool[i] for i in rng.permutation(len(pool))[:k]])
    return out


def scoring_format(fmt):
    """The dataset's format as the shared prompt is scored: the prompt column as written (plain text, no chat
    template, no instruction), multiple choice by the summed log-probability of ``" " + option text`` (acc), generation
    with the format's own decoding, filters and metric, stopping also at the demonstration separator."""
    common = {"instruction": "", "template": "{icl_prompt}", "train_template": None, "chat_template": False}
    if fmt.scoring == "multiple_choice":
        return dataclasses.replace(fmt, **common, choice_template=" {choice}", metrics=("acc",))
    stop = tuple(fmt.stop) + (() if DEMO_SEPARATOR in fmt.stop else (DEMO_SEPARATOR,))
    return dataclasses.replace(fmt, **common, stop=stop)


# ------------------------------------------------------------------------------------------- the cells
@dataclasses.dataclass
class Cell:
    """One (k, train bin, bootstrap, test bin): the demonstrations and every test item's prompt."""

    k: int
    train_bin: int
    bootstrap: int
    test_bin: int
    demonstrations: list[str]
    tests: list[dict]  # examples of the test items (minus the demonstrations on their own bin)
    prompts: dict[str, str]  # item_id -> prompt
    n_demos: dict[str, int]  # item_id -> demonstrations kept (a prompt too long for the context loses some)


def _fit(demos: list[dict], test: dict, hp: HasePrompt, length, limit: int | None, reserve: int) -> tuple[str, int]:
    """The prompt with as many of the demonstrations (from the front) as fit ``limit`` tokens with ``reserve`` left."""
    full = hp.prompt(demos, test)
    if length is None or limit is None or length(full) + reserve <= limit:
        return full, len(demos)
    for n in range(len(demos) - 1, -1, -1):
        text = hp.prompt(demos[:n], test)
        if length(text) + reserve <= limit or n == 0:
            return text, n
    raise AssertionError("unreachable")


def build_cells(test_tasks, items_path, bins_path, icl: dict, train_bins: list[int], length=None,
                limit: int | None = None, max_gen_toks: int | None = None) -> list[Cell]:
    """Every cell's demonstrations and prompts (no model needed; ``length(text)`` -> tokens and ``limit``, the
    model's context, make over-long prompts drop demonstrations from their end)."""
    from crossdiff.bins.holdout import bin_items, training_part
    from crossdiff.evaluate.run import read_task
    from crossdiff.prompts.format import PromptFormat
    from crossdiff.study.methods import ks_of

    s = resolve(icl)
    ks = ks_of(s)
    hp = HasePrompt(str(s["prompt_id"]), bool(s["cot"]))
    metas = [read_task(t) for t in test_tasks]
    if any(m.get("kind") == "lm_eval_task" for m in metas):
        raise CrossdiffError("study.icl.protocol shared: an items.source lm_eval_task dataset renders its own prompts; "
                             "use the per-item protocol for it")
    fmt = PromptFormat.from_config(metas[0]["prompt"], where=f"{metas[0]['dir']}/task.json:prompt")
    items = read_table(items_path, "item table")
    by_id = {str(r["item_id"]): r for r in items.to_dicts()}
    tests = {}
    for m in metas:
        ids = [json.loads(x)["item_id"] for x in (Path(m["dir"]) / "data.jsonl").read_text().splitlines() if x.strip()]
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise CrossdiffError(f"{m['dir']}: {len(missing)} test item(s) not in {items_path}, e.g. {missing[:3]}")
        tests[int(m["bin"])] = [example_of(by_id[i], fmt, s) for i in ids]
    reserved: dict[str, int] = {}

    def reserve(x: dict) -> int:
        """Tokens the scored continuation needs: the longest option (multiple choice) or max_gen_toks."""
        if fmt.scoring != "multiple_choice":
            return int(max_gen_toks or 0)
        if length is None:
            return 0
        if x["item_id"] not in reserved:
            reserved[x["item_id"]] = max(length(" " + c, False) for c in x["choices"])
        return reserved[x["item_id"]]

    cells = []
    for b in train_bins:
        pool = training_part(bin_items(items_path, bins_path, b))["item_id"].cast(str).to_list()
        pool_set = set(pool)
        for t, rows in tests.items():
            shared = pool_set & {r["item_id"] for r in rows}
            if shared and not (t == b and shared == pool_set == {r["item_id"] for r in rows}):
                raise CrossdiffError(f"bin {b}'s training items and test bin {t}'s items overlap partly "
                                     f"({len(shared)} shared); remake the bins and task folders")
        own = b in tests and pool_set == {r["item_id"] for r in tests[b]}  # no held-out items: bin b tests itself
        for k in ks:
            if len(pool) < k + own:
                raise CrossdiffError(f"study.icl.k = {k}: bin {b} has only {len(pool)} training item(s); the shared "
                                     f"protocol needs k" + (" + 1 (bin b's test items are its training items: the "
                                                            "demonstrations leave its test set)" if own else ""))
            draws = draw(pool, k, s["seed"], b, s["n_bootstrap"])
            if own:
                always = set.intersection(*(set(d) for d in draws))
                if always:
                    raise CrossdiffError(f"item(s) {sorted(always)[:3]} of bin {b} would be a demonstration in every one "
                                         f"of the {len(draws)} bootstraps (k = {k}, {len(pool)} items, no held-out "
                                         "items), leaving them no score: use another study.icl.seed, more n_bootstrap "
                                         "or bins.holdout_fraction")
            for r, demo_ids in enumerate(draws):
                demos = [example_of(by_id[i], fmt, s) for i in demo_ids]
                skip = set(demo_ids)
                for t, rows in sorted(tests.items()):
                    mine = [x for x in rows if x["item_id"] not in skip]
                    prompts, kept = {}, {}
                    for x in mine:
                        prompts[x["item_id"]], kept[x["item_id"]] = _fit(demos, x, hp, length, limit, reserve(x))
                    cells.append(Cell(k, b, r, t, list(demo_ids), mine, prompts, kept))
    return cells


def task_label(meta: dict, cell: Cell) -> str:
    return f"{meta['task']}_iclshared_k{cell.k}_train{cell.train_bin}_boot{cell.bootstrap}"


def write_cell_task(cell: Cell, meta: dict, fmt, out: Path) -> dict:
    """An lm-eval task folder of one cell: the test items with their whole prompt in the prompt column."""
    sfmt = scoring_format(fmt)
    rows = []
    for x in cell.tests:
        rec = sfmt.eval_record({**x["item"], "icl_prompt": cell.prompts[x["item_id"]]})
        rec["gold"] = x["gold"]
        rows.append(rec)
    if not rows:
        raise CrossdiffError(f"test bin {cell.test_bin}: no test items left once bootstrap {cell.bootstrap}'s "
                             f"demonstrations are set aside")
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, out / "data.jsonl")
    name = task_label(meta, cell)
    for chat, fname, tname in ((False, "task.yaml", name), (True, "task_chat.yaml", f"{name}_chat")):
        cfg = sfmt.task_config(tname, str((out / "data.jsonl").resolve()), chat=chat)
        write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), out / fname)
    new = {k: v for k, v in meta.items() if k != "dir"}
    new.update({"task": name, "task_chat": f"{name}_chat", "n_items": len(rows), "prompt": sfmt.to_config(),
                "metric": sfmt.primary_metric, "scoring": sfmt.scoring})
    write_json(new, out / "task.json")
    return new


def _length_fn(lm):
    """Token count of a text as lm-eval encodes it (the tokenizer's own special tokens, e.g. Llama's BOS)."""
    def length(text: str, special: bool = True) -> int:
        if special:
            return len(lm.tok_encode(text))
        return len(lm.tok_encode(text, add_special_tokens=False))
    return length


def evaluate_shared(model, test_tasks: list, items_path, bins_path, icl: dict, train_bins: list[int], outdir,
                    settings: dict | None = None, model_name: str | None = None) -> list[dict]:
    """Every (k, train bin, test bin) cell under the shared protocol with ONE model load and ONE lm-eval call;
    writes ``outdir/icl-k{k}-train{b}/bin{t}.json`` (+ samples) and returns the records."""
    from crossdiff.compute import require_device
    from crossdiff.evaluate.icl import eval_label, result_label
    from crossdiff.evaluate.run import (
        check_scorers,
        evaluate_model,
        load_lm,
        read_task,
        resolve_settings,
        samples_path,
    )
    from crossdiff.prompts.format import PromptFormat

    s = resolve_settings(settings)
    ic = resolve(icl)
    require_device(s["device"], "evaluate.device")
    metas = {int(m["bin"]): m for m in (read_task(t) for t in test_tasks)}
    check_scorers(list(metas.values()))
    build_cells(test_tasks, items_path, bins_path, ic, train_bins)  # every check before the model loads
    fmt = PromptFormat.from_config(next(iter(metas.values()))["prompt"])
    lm = load_lm(model, s)
    limit = s["max_length"] or getattr(lm, "max_length", None)
    cells = build_cells(test_tasks, items_path, bins_path, ic, train_bins, length=_length_fn(lm), limit=limit,
                        max_gen_toks=fmt.max_gen_toks)
    dropped = sum(1 for c in cells for n in c.n_demos.values() if n < c.k)
    if dropped:
        print(f"{dropped} prompt(s) longer than the model's context ({limit} tokens) kept fewer demonstrations "
              "(dropped from the end, that item only)")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="crossdiff-icl-shared-") as tmp:
        dirs, outs = [], []
        for i, c in enumerate(cells):
            d = Path(tmp) / f"cell{i}"
            write_cell_task(c, metas[c.test_bin], fmt, d)
            dirs.append(d)
            outs.append(Path(tmp) / "out" / f"cell{i}.json")
        records = evaluate_model(model, dirs, outs, s, model_name, "icl-shared", lm=lm, num_fewshot=0)
        samples = []
        for o in outs:
            rows = [json.loads(x) for x in samples_path(o).read_text().splitlines() if x.strip()]
            samples.append({r["item_id"]: r for r in rows})
    wall = time.time() - t0
    written = []
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, c in enumerate(cells):
        groups.setdefault((c.k, c.train_bin, c.test_bin), []).append(i)
    for (k, b, t), idx in sorted(groups.items()):
        idx = sorted(idx, key=lambda i: cells[i].bootstrap)
        meta = metas[t]
        ids = [json.loads(x)["item_id"] for x in (Path(meta["dir"]) / "data.jsonl").read_text().splitlines() if x.strip()]
        rows = []
        for iid in ids:
            by_boot = [samples[i].get(iid) for i in idx]
            tested = [r for r in by_boot if r is not None]
            if not tested:
                raise CrossdiffError(f"item {iid} of bin {t} was a demonstration in every one of the {len(idx)} "
                                     f"bootstraps of train bin {b} (k = {k}), so it has no score; use another "
                                     "study.icl.seed or more n_bootstrap")
            rows.append({
                "item_id": iid,
                "correct": float(np.mean([r["correct"] for r in tested])),
                "correct_by_bootstrap": [None if r is None else int(r["correct"]) for r in by_boot],
                "prediction_by_bootstrap": [None if r is None else r.get("prediction") for r in by_boot],
                "n_demos_by_bootstrap": [cells[i].n_demos.get(iid) for i in idx],
                "target": tested[0].get("target"),
            })
        per_boot = [records[i]["value"] for i in idx]
        value = float(np.mean([r["correct"] for r in rows]))
        sd = float(np.std([r["correct"] for r in rows], ddof=1)) if len(rows) > 1 else math.nan
        base = records[idx[0]]
        out = Path(outdir) / eval_label(k, b) / f"bin{t}.json"
        record = {**base, "train_bin": result_label(k, b), "task": meta["task"], "value": value,
                  "stderr": sd / math.sqrt(len(rows)) if len(rows) > 1 else None, "n_items": len(rows),
                  "other_metrics": {}, "eval_seconds_all_bins": wall, "samples": samples_path(out).name,
                  "icl": {"protocol": "shared", "k": k, "train_bin": b, "n_bootstrap": len(idx), "seed": ic["seed"],
                          "prompt_id": str(ic["prompt_id"]), "cot": bool(ic["cot"]),
                          "demonstrations": [cells[i].demonstrations for i in idx],
                          "bootstrap_values": per_boot,
                          "bootstrap_n_items": [records[i]["n_items"] for i in idx],
                          "value_mean_over_bootstraps": float(np.mean(per_boot))}}
        write_jsonl(rows, samples_path(out))  # samples first: a result JSON implies its samples exist
        write_json(record, out)
        written.append(record)
    print(f"{len(written)} shared-protocol ICL cell(s) of {model_name or model} ({len(cells)} (k, train bin, "
          f"bootstrap, test bin) prompt sets, one model load, one lm-eval call) in {wall:.1f} s")
    return written


def shared_prompts(test_tasks, items_path, bins_path, icl: dict, train_bins: list[int]) -> dict:
    """For inspection and tests: ``{(k, train bin, bootstrap, test bin): {"demonstrations": [...], "prompts":
    {item_id: prompt}}}`` as :func:`evaluate_shared` builds them (before any context-length fitting)."""
    return {(c.k, c.train_bin, c.bootstrap, c.test_bin): {"demonstrations": c.demonstrations, "prompts": c.prompts}
            for c in build_cells(test_tasks, items_path, bins_path, icl, train_bins)}


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the results")
    p.add_argument("--tasks", nargs="+", required=True, help="test task folders (from make-task), one per test bin")
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet)")
    p.add_argument("--train-bins", type=int, nargs="+", required=True, help="bins the demonstrations come from")
    p.add_argument("--icl", type=json_arg, required=True,
                   help='JSON object: the resolved study.icl section (protocol shared, k, seed, n_bootstrap, prompt_id, cot, reasoning_field)')
    p.add_argument("--outdir", required=True, help="results/eval/{model}/{dataset}: writes icl-k{k}-train{b}/bin{t}.json")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings")


def run(args: argparse.Namespace) -> None:
    written = evaluate_shared(args.model, args.tasks, args.items, args.bins, args.icl, args.train_bins, args.outdir,
                              args.settings, args.model_name)
    print(", ".join(f"{r['train_bin']}/bin{r['test_bin']}={r['value']:.3f}" for r in written))
