"""Files in the Open LLM Leaderboard's real layouts, for the loopback hub (tests/hub_server.py).

The layouts (column sets, file names, timestamps, JSON flavours) follow public descriptions of the
real details repos (lighteval's detail loggers, lm-eval's evaluation tracker and leaderboard tasks,
the repos' dataset cards); the values are invented.

v1 (``open-llm-leaderboard-old/details_{org}__{model}``, parquet, no doc_id, rows in the leaderboard's
own order):
- later files: ``example, instruction, full_prompt, num_effective_few_shots, num_asked_few_shots,
  predictions, input_tokens, cont_tokens, truncated, padded, gold, pred_logits, choices, gold_index,
  metrics, specifics``; ``metrics`` a struct; ``choices``/``gold``/``gold_index`` may be empty lists;
- July-2023 files: flat ``acc``/``acc_norm`` columns, ARC's ``example`` the native id (``Mercury_...``).

v2 (``open-llm-leaderboard/{org}__{model}-details``): ``{org}__{model}/samples_{task}_{run}.jsonl``
lm-eval records (in completion order); ``.json`` JSON lines (June 2024) or an indented JSON array
(May 2024).
"""

from __future__ import annotations

import io
import json

import polars as pl


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ v1
def v1_later(rows: list[dict], metric: str) -> bytes:
    """rows: example, correct, and optionally choices (list), gold (list), gold_index (list), full_prompt."""
    n = len(rows)
    df = pl.DataFrame({
        "example": [r["example"] for r in rows],
        "instruction": [""] * n,
        "full_prompt": [r.get("full_prompt", f"Question: few-shot ...\n\n{r['example']}") for r in rows],
        "num_effective_few_shots": [25] * n, "num_asked_few_shots": [25] * n,
        "predictions": [[[-1.0, False], [-2.0, False]] for _ in rows],
        "input_tokens": [[[1, 2, 3]] for _ in rows], "cont_tokens": [[[4]] for _ in rows],
        "truncated": [[0] for _ in rows], "padded": [[0] for _ in rows],
        "gold": [r.get("gold", []) for r in rows],
        "pred_logits": [[] for _ in rows],
        "choices": [r.get("choices", []) for r in rows],
        "gold_index": [r.get("gold_index", []) for r in rows],
        "metrics": [{metric: float(r["correct"]), ("acc" if metric != "acc" else "acc_norm"): 0.0} for r in rows],
        "specifics": [{"x": "y"} for _ in rows],
    }, schema_overrides={"gold": pl.List(pl.Utf8), "choices": pl.List(pl.Utf8), "gold_index": pl.List(pl.Int64),
                         "pred_logits": pl.List(pl.Float64)})
    return parquet_bytes(df)


def v1_july2023(rows: list[dict]) -> bytes:
    """The July-2023 flat layout: native ids in ``example``, ``acc``/``acc_norm`` columns."""
    n = len(rows)
    return parquet_bytes(pl.DataFrame({
        "example": [r["example"] for r in rows], "query": [r.get("query", "Question: ...") for r in rows],
        "choices": [r.get("choices", ["a", "b"]) for r in rows], "gold": [r.get("gold", 0) for r in rows],
        "acc": [float(r["correct"]) for r in rows], "acc_norm": [float(r["correct"]) for r in rows],
        "predictions": [[-1.0, -2.0]] * n, "truncated": [[0, 0]] * n,
        "num_asked_few_shots": [25] * n, "num_effective_few_shots": [25] * n,
    }))


def v1_repo_files(run_dir: str, run_file: str, task_files: dict[str, bytes]) -> dict[str, bytes]:
    """``{run_dir}/details_harness|{task}_{run_file}.parquet`` + ``results_{run_file}.json``; 2023 repos write
    the timestamp with ':' (``2023-08-19T16:35:46.942696``), later ones with '-' in the file name."""
    files = {f"{run_dir}/details_harness|{task}_{run_file}.parquet": data for task, data in task_files.items()}
    files[f"results_{run_file}.json"] = b"{}"
    return files


# ------------------------------------------------------------------------------------------ v2
def v2_record(doc_id: int, metric: str, value: float, doc: dict | None = None) -> dict:
    return {"doc_id": doc_id, "doc": doc or {"question": f"q{doc_id}"}, "target": "A",
            "arguments": {"gen_args_0": {"arg_0": f"Q{doc_id}", "arg_1": " A"}},
            "resps": [[["-0.5", "False"]]], "filtered_resps": [["-0.5", "False"]], "filter": "none",
            "metrics": [metric], "doc_hash": f"{doc_id:064x}", "prompt_hash": "0" * 64, "target_hash": "1" * 64,
            metric: float(value)}


def v2_samples(records: list[dict], layout: str = "jsonl") -> bytes:
    """``jsonl`` / ``json-lines`` (one record a line) or ``json-array`` (May 2024: an indented array)."""
    if layout == "json-array":
        return json.dumps(records, indent=2).encode()
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


def v2_file(model: str, task: str, run: str, layout: str = "jsonl") -> str:
    slug = model.replace("/", "__")
    return f"{slug}/samples_{task}_{run}.{'jsonl' if layout == 'jsonl' else 'json'}"


def v2_repo_name(model: str) -> str:
    return f"open-llm-leaderboard/{model.replace('/', '__')}-details"


def v1_repo_name(model: str) -> str:
    return f"open-llm-leaderboard-old/details_{model.replace('/', '__')}"


def contents(models: list[str]) -> dict[str, bytes]:
    """A contents dataset (``data/train-*.parquet``, column ``fullname``) split over two shards."""
    half = len(models) // 2
    out = {"README.md": b"---\nlicense: apache-2.0\n---\n"}
    for k, part in enumerate((models[:half], models[half:])):
        out[f"data/train-{k:05d}-of-00002.parquet"] = parquet_bytes(pl.DataFrame({
            "fullname": part, "Available on the hub": [True] * len(part), "Precision": ["bfloat16"] * len(part)}))
    return out


# ------------------------------------------------------------------------------------------ ARC
# ARC-Challenge test has stems occurring twice under different ids (Mercury_406639 / Mercury_7116183;
# Mercury_SC_LBS10597 / TIMSS_2003_8_pg47). The fixtures' first pair differs in choices and answer,
# the second in nothing a details row carries (real choices of those pairs: unknown here).
TWINS = [
    ("Mercury_406639", "Which is a renewable resource?", ["coal", "oil", "wood", "gas"], "C"),
    ("Mercury_7116183", "Which is a renewable resource?", ["sunlight", "copper", "iron", "tin"], "A"),
    ("Mercury_SC_LBS10597", "What do plants need to make food?", ["sunlight", "sand", "salt", "rock"], "A"),
    ("TIMSS_2003_8_pg47", "What do plants need to make food?", ["sunlight", "sand", "salt", "rock"], "A"),
]


def arc_rows(n_plain: int) -> list[dict]:
    """ARC-Challenge rows in the hub's schema: n_plain ordinary questions, then the four twins."""
    rows = [{"id": f"Mercury_{7000000 + i}", "question": f"Which statement about sample {i} is true?",
             "choices": {"text": [f"s{i} one", f"s{i} two", f"s{i} three", f"s{i} four"], "label": list("ABCD")},
             "answerKey": "ABCD"[i % 4]} for i in range(n_plain)]
    rows += [{"id": i, "question": q, "choices": {"text": c, "label": list("ABCD")}, "answerKey": a} for i, q, c, a in TWINS]
    return rows


def arc_v1_rows(items: list[dict], correct: list[int], fields: str, order: list[int]) -> list[dict]:
    """v1 details rows of one model, in the leaderboard's order: ``fields`` = full (choices and gold),
    gold (gold_index only, choices empty), bare (nothing but the example)."""
    out = []
    for k in order:
        it = items[k]
        texts = it["choices"]["text"]
        gold = "ABCD".index(it["answerKey"])
        r = {"example": f"Question: {it['question']}\nAnswer:", "correct": correct[k]}
        if fields == "full":
            r.update(choices=[f" {t}" for t in texts], gold=[f" {texts[gold]}"], gold_index=[gold])
        elif fields == "gold":
            r.update(gold_index=[gold])
        out.append(r)
    return out
