"""The Open LLM Leaderboard collector, against a fake Hub on 127.0.0.1 (tests/hub_server.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import FakeHub, FakeRepo  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402
from crossdiff.responses import leaderboard as lb  # noqa: E402

BIN = Path(sys.executable).parent
SECRET = "hf_SeCrEtToKeN1234567890"
SUBTASKS = ("boolean_expressions", "navigate")
N_DOCS = 5


# ------------------------------------------------------------------ fixture data (real field names)
def v2_samples(model: str, subtask: str, answers: list[int], metric: str = "acc_norm", doc_ids=None) -> bytes:
    """lm-eval --log_samples lines as the v2 leaderboard stored them."""
    lines = []
    for doc_id, a in zip(doc_ids if doc_ids is not None else range(len(answers)), answers):
        lines.append(json.dumps({
            "doc_id": doc_id, "doc": {"input": f"{subtask} question {doc_id}", "target": "True"}, "target": "True",
            "arguments": {"gen_args_0": {"arg_0": f"Q{doc_id}\nA: ", "arg_1": " True"},
                          "gen_args_1": {"arg_0": f"Q{doc_id}\nA: ", "arg_1": " False"}},
            "resps": [[["-0.5", "False"]], [["-1.5", "False"]]], "filtered_resps": [["-0.5", "False"], ["-1.5", "False"]],
            "filter": "none", "metrics": [metric], "doc_hash": f"{doc_id:064x}", "prompt_hash": "0" * 64,
            "target_hash": "1" * 64, metric: float(a)}))
    return ("\n".join(lines) + "\n").encode()


def v2_repo(model: str, runs: dict[str, dict[str, list[int]]], **kw) -> tuple[str, FakeRepo]:
    slug = model.replace("/", "__")
    files = {}
    for ts, per_sub in runs.items():
        files[f"{slug}/results_{ts}.json"] = b"{}"
        for sub, answers in per_sub.items():
            files[f"{slug}/samples_leaderboard_bbh_{sub}_{ts}.jsonl"] = v2_samples(model, sub, answers)
        # a file of another task, which must be ignored
        files[f"{slug}/samples_leaderboard_mmlu_pro_{ts}.jsonl"] = v2_samples(model, "x", [1, 0], "acc")
    return f"open-llm-leaderboard/{slug}-details", FakeRepo(files, **kw)


def answers_for(model: str, sub: str) -> list[int]:
    h = sum(map(ord, model + sub))
    return [(h >> i) & 1 for i in range(N_DOCS)]


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def v1_repo(model: str, ts_dir: str, ts_file: str, acc_norm: list[int], gsm8k: list[int]) -> tuple[str, FakeRepo]:
    """v1 details: early ARC layout (flat acc/acc_norm columns) and later GSM8K layout (metrics struct)."""
    slug = model.replace("/", "__")
    n = len(acc_norm)
    arc = pl.DataFrame({"example": [f"Mercury_{i}" for i in range(n)], "query": ["q"] * n,
                        "choices": [["a", "b"]] * n, "gold": [0] * n, "acc": [1 - a for a in acc_norm],
                        "acc_norm": [float(a) for a in acc_norm], "predictions": [[-1.0, -2.0]] * n,
                        "truncated": [[0, 0]] * n, "num_asked_few_shots": [25] * n, "num_effective_few_shots": [25] * n})
    g = len(gsm8k)
    gsm = pl.DataFrame({"example": [f"question {i}" for i in range(g)], "full_prompt": ["Question: ..."] * g,
                        "predictions": [["42"]] * g, "metrics": [{"acc": a} for a in gsm8k], "gold": [""] * g})
    files = {f"{ts_dir}/details_harness|arc:challenge|25_{ts_file}.parquet": parquet_bytes(arc),
             f"{ts_dir}/details_harness|gsm8k|5_{ts_file}.parquet": parquet_bytes(gsm),
             f"results_{ts_file}.json": b"{}"}
    return f"open-llm-leaderboard-old/details_{slug}", FakeRepo(files)


V2_SETTINGS = {"source": "leaderboard", "version": "v2", "task": "leaderboard_bbh", "subtasks": True,
               "metric": "acc_norm", "threshold": 0.5, "concurrency": 4, "backoff_base": 0.05, "max_retries": 4}

OLD, NEW = "2024-06-26T10-00-00.000001", "2024-07-01T12-30-45.123456"


@pytest.fixture
def online(monkeypatch):
    """conftest makes the Hub offline for the whole suite; these tests talk to 127.0.0.1 only."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


def v2_hub(**extra_repos) -> FakeHub:
    repos = dict([
        # evaluated twice: the old run answered everything wrong, the newest run is the one to keep
        v2_repo("org1/good-a", {OLD: {s: [0] * N_DOCS for s in SUBTASKS},
                                NEW: {s: answers_for("org1/good-a", s) for s in SUBTASKS}}),
        v2_repo("org2/good-b", {NEW: {s: answers_for("org2/good-b", s) for s in SUBTASKS}}),
        v2_repo("org3/flaky", {NEW: {s: answers_for("org3/flaky", s) for s in SUBTASKS}}, fail_first=1),
        v2_repo("org4/limited", {NEW: {s: answers_for("org4/limited", s) for s in SUBTASKS}}, rate_limit_first=1),
    ])
    # incomplete: only 3 of the 5 navigate docs
    name, repo = v2_repo("org6/partial", {NEW: {"boolean_expressions": answers_for("org6/partial", "boolean_expressions")}})
    repo.files[f"org6__partial/samples_leaderboard_bbh_navigate_{NEW}.jsonl"] = v2_samples("org6/partial", "navigate", [1, 0, 1])
    repos[name] = repo
    repos.update(extra_repos)
    return FakeHub(repos)


MODELS = ["org1/good-a", "org2/good-b", "org3/flaky", "org4/limited", "org5/missing", "org6/partial", "org2/good-b"]


def read_manifest(path) -> dict[str, dict]:
    return lb.Manifest(path).read()


# ------------------------------------------------------------------ tests
def test_normal_run_retries_404_dedupe_and_coverage(tmp_path, online):
    with v2_hub() as hub:
        s = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url})
        out, man = tmp_path / "out.parquet", tmp_path / "manifest.jsonl"
        report = lb.collect(s, MODELS, tmp_path / "cache", man, out, progress=False)

        df = pl.read_parquet(out)
        assert df.schema == {"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": pl.Int8}
        # the partial model is dropped (coverage: drop), the 404 one failed, the duplicate listed once
        assert sorted(df["model_id"].unique()) == ["org1/good-a", "org2/good-b", "org3/flaky", "org4/limited"]
        assert sorted(df["item_id"].unique()) == sorted(f"{s_}/{i}" for s_ in SUBTASKS for i in range(N_DOCS))
        for m in ("org1/good-a", "org3/flaky"):
            got = df.filter(pl.col("model_id") == m).sort("item_id")
            for sub in SUBTASKS:
                vals = [got.filter(pl.col("item_id") == f"{sub}/{i}")["correct"][0] for i in range(N_DOCS)]
                assert vals == answers_for(m, sub), (m, sub)  # newest run of good-a, not the all-wrong old one

        rec = read_manifest(man)
        assert rec["org1/good-a"]["status"] == "done" and rec["org1/good-a"]["run"] == NEW
        assert all(NEW in f for f in rec["org1/good-a"]["files"])
        assert rec["org5/missing"]["status"] == "failed" and rec["org5/missing"]["error_kind"] == "not_found"
        assert "open-llm-leaderboard/org5__missing-details" in rec["org5/missing"]["error"]
        assert rec["org5/missing"]["started"] and rec["org5/missing"]["finished"]
        # 500 then 200, and 429 with Retry-After, both ended done
        assert rec["org3/flaky"]["status"] == "done" and rec["org4/limited"]["status"] == "done"
        assert ("GET", "/api/datasets/open-llm-leaderboard/org3__flaky-details/tree/main", 500) in hub.requests
        assert any(st == 429 for _, p, st in hub.requests if "org4__limited" in p)

        assert report["duplicate_models"] == ["org2/good-b"]
        assert [r["model_id"] for r in report["incomplete_coverage"]] == ["org6/partial"]
        assert report["incomplete_coverage"][0]["missing"] == 2
        assert report["dropped_incomplete"] == ["org6/partial"]
        assert [f["model_id"] for f in report["failed"]] == ["org5/missing"]
        assert json.loads(Path(report["report"]).read_text())["models_failed"] == 1
        # nothing downloaded twice; the other task's files and the old run never downloaded
        assert hub.downloads and max(hub.downloads.values()) == 1
        assert not any("mmlu_pro" in f or OLD in f for _, f in hub.downloads)

        # a second run with coverage: keep resumes everything from the manifest without any request
        n_requests = len(hub.requests)
        s_keep = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url, "coverage": "keep", "retry_failed": False})
        report2 = lb.collect(s_keep, MODELS, tmp_path / "cache", man, tmp_path / "keep.parquet", progress=False)
        assert len(hub.requests) == n_requests
        assert report2["this_run"]["resumed_from_manifest"] == 5
        keep = pl.read_parquet(tmp_path / "keep.parquet")
        assert keep.filter(pl.col("model_id") == "org6/partial").height == N_DOCS + 3


def test_items_table_defines_coverage(tmp_path, online):
    with v2_hub() as hub:
        items = tmp_path / "items.csv"
        ids = [f"{s_}/{i}" for s_ in SUBTASKS for i in range(N_DOCS + 1)]  # one item nobody answered
        pl.DataFrame({"item_id": ids}).write_csv(items)
        # without the size check, the item table defines coverage
        s = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url, "coverage": "keep", "check_sizes": False})
        report = lb.collect(s, ["org1/good-a", "org2/good-b"], tmp_path / "c", tmp_path / "m.jsonl",
                            tmp_path / "o.parquet", items_path=items, progress=False)
        assert report["reference_items"] == len(ids)
        assert {r["model_id"]: r["missing"] for r in report["incomplete_coverage"]} == {"org1/good-a": 2, "org2/good-b": 2}
        # with it (the default), files of another size than the subtask's items are unusable, never kept
        # (and a collection left with no model stops, after writing its report and summary)
        s = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url, "coverage": "keep"})
        with pytest.raises(CrossdiffError, match="0 model.s. done, 2 failed.*the item table has 6 items"):
            lb.collect(s, ["org1/good-a", "org2/good-b"], tmp_path / "c", tmp_path / "m2.jsonl",
                       tmp_path / "o2.parquet", items_path=items, progress=False)
        report = json.loads((tmp_path / "m2.report.json").read_text())
        assert report["models_done"] == 0 and report["failed_by_reason"] == {"wrong_size": 2}
        assert pl.read_parquet(tmp_path / "o2.parquet").height == 0


def test_v1_parquet_layouts(tmp_path, online):
    arc_a, gsm_a = [1, 0, 1, 1], [0, 1, 1]
    repos = dict([v1_repo("old/m1", "2023-08-19T16:35:46.942696", "2023-08-19T16:35:46.942696", arc_a, gsm_a),
                  v1_repo("old/m2", "2023-11-07T07:11:46.594603", "2023-11-07T07-11-46.594603", [0, 0, 1, 0], [1, 1, 0])])
    with FakeHub(repos) as hub:
        for task, metric, expect in (("arc:challenge|25", "acc_norm", arc_a), ("gsm8k|5", "acc", gsm_a)):
            s = lb.parse_settings({"version": "v1", "task": task, "metric": metric, "endpoint": hub.url})
            out = tmp_path / f"{metric}.parquet"
            report = lb.collect(s, ["old/m1", "old/m2"], tmp_path / "cache", tmp_path / f"{metric}.jsonl", out, progress=False)
            assert report["models_done"] == 2, report["failed"]
            df = pl.read_parquet(out).filter(pl.col("model_id") == "old/m1").sort(pl.col("item_id").cast(pl.Int64))
            assert df["item_id"].to_list() == [str(i) for i in range(len(expect))]  # row position
            assert df["correct"].to_list() == expect
        s = lb.parse_settings({"version": "v1", "task": "arc:challenge|25", "metric": "acc_norm", "item_key": "example",
                               "endpoint": hub.url})
        lb.collect(s, ["old/m1"], tmp_path / "cache", tmp_path / "ex.jsonl", tmp_path / "ex.parquet", progress=False)
        assert pl.read_parquet(tmp_path / "ex.parquet")["item_id"].to_list()[0].startswith("Mercury_")
        assert max(hub.downloads.values()) == 1  # second and third pass read the cache


def test_gated_without_and_with_token(tmp_path, online, monkeypatch):
    name, repo = v2_repo("gate/model", {NEW: {s: answers_for("gate/model", s) for s in SUBTASKS}}, gated=True)
    with FakeHub({name: repo}, tokens={SECRET}) as hub:
        s = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url})
        with pytest.raises(CrossdiffError, match=r"gated dataset and HF_TOKEN is not set.*open-llm-leaderboard/gate__model-details"):
            lb.collect(s, ["gate/model"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)
        rec = read_manifest(tmp_path / "m.jsonl")["gate/model"]
        assert rec["error_kind"] == "gated" and "huggingface.co/datasets/open-llm-leaderboard/gate__model-details" in rec["error"]

        monkeypatch.setenv("HF_TOKEN", "hf_wrongtoken999")
        with pytest.raises(CrossdiffError, match="token in HF_TOKEN has no access"):
            lb.collect(s, ["gate/model"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)

        monkeypatch.setenv("HF_TOKEN", SECRET)
        report = lb.collect(s, ["gate/model"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)
        assert report["models_done"] == 1
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def run_cli(tmp_path, hub, settings, models, extra_env=None, wait=True):
    (tmp_path / "models.txt").write_text("\n".join(models) + "\n")
    code = ("import sys; from crossdiff.cli import COMMANDS, main; "
            "COMMANDS.setdefault('collect-leaderboard', ('crossdiff.responses.leaderboard', 'collect')); "
            "sys.exit(main(sys.argv[1:]))")
    cmd = [str(BIN / "python"), "-c", code, "collect-leaderboard", "--settings", json.dumps(settings),
           "--models-list", str(tmp_path / "models.txt"), "--cache-dir", str(tmp_path / "cache"),
           "--manifest", str(tmp_path / "manifest.jsonl"), "--output", str(tmp_path / "out.parquet")]
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hfhome")}
    env.pop("HF_TOKEN", None)
    env.update(extra_env or {})
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_kill_and_resume_downloads_nothing_twice(tmp_path):
    """The kill lands at a fixed point, whatever the load: the hub holds the first file request of the third
    model unanswered (one worker, so nothing else moves), the test waits for the manifest to record the first
    two models, then kills. Nothing is half-downloaded, so nothing may be downloaded twice."""
    models = [f"org{i}/m{i}" for i in range(6)]
    repos = dict(v2_repo(m, {NEW: {s: answers_for(m, s) for s in SUBTASKS}}, hold=i == 2) for i, m in enumerate(models))
    settings = {**V2_SETTINGS, "concurrency": 1}
    with FakeHub(repos) as hub:
        proc = run_cli(tmp_path, hub, settings, models, wait=False)
        man = tmp_path / "manifest.jsonl"
        assert hub.holding.wait(timeout=120), proc.communicate(timeout=10)
        deadline = time.monotonic() + 120  # the first two models' records: appended independently of the held request
        while len(read_manifest(man) if man.exists() else {}) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the manifest never recorded two models"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        hub.release()
        first = read_manifest(man)
        assert sorted(first) == models[:2]
        assert not (tmp_path / "out.parquet").exists()

        done = run_cli(tmp_path, hub, settings, models)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "6 models done" in done.stdout and "resumed" in done.stdout
        assert max(hub.downloads.values()) == 1  # nothing downloaded twice
        assert len(hub.downloads) == len(models) * len(SUBTASKS)
        df = pl.read_parquet(tmp_path / "out.parquet")
        assert df.height == len(models) * len(SUBTASKS) * N_DOCS
        # models done before the kill were not contacted again
        for m in first:
            slug = m.replace("/", "__")
            assert hub.count("GET", f"{slug}-details/tree") == 1


def test_cli_gated_message_and_token_never_printed(tmp_path):
    name, repo = v2_repo("gate/model", {NEW: {s: [1] * N_DOCS for s in SUBTASKS}}, gated=True)
    with FakeHub({name: repo}, tokens={"hf_other"}) as hub:
        proc = run_cli(tmp_path, hub, V2_SETTINGS, ["gate/model"], extra_env={"HF_TOKEN": SECRET})
        assert proc.returncode == 2
        assert "open-llm-leaderboard/gate__model-details is a gated dataset" in proc.stderr
        assert "has no access" in proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        for f in tmp_path.rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f


def test_models_from_contents_dataset(tmp_path, online):
    contents = pl.DataFrame({"fullname": ["org1/good-a", "org2/good-b", "org2/good-b"],
                             "Available on the hub": [True, True, True], "Precision": ["bfloat16", "float16", "bfloat16"]})
    with v2_hub(**{"open-llm-leaderboard/contents": FakeRepo({"data/train-00000-of-00001.parquet": parquet_bytes(contents),
                                                             "README.md": b"x"})}) as hub:
        s = lb.parse_settings({**V2_SETTINGS, "endpoint": hub.url})
        report = lb.collect(s, None, tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)
        assert report["models_done"] == 2 and report["duplicate_models"] == ["org2/good-b"]


def test_select_files_newest_run_and_subtasks():
    s = lb.parse_settings({"version": "v2", "task": "leaderboard_math", "subtasks": True, "metric": "exact_match"})
    files = ["a__b/samples_leaderboard_math_algebra_hard_2024-06-26T10-00-00.1.json",
             "a__b/samples_leaderboard_math_algebra_hard_2024-07-01T10-00-00.1.jsonl",
             "a__b/samples_leaderboard_math_geometry_hard_2024-06-26T10-00-00.1.jsonl",
             "a__b/samples_leaderboard_mmlu_pro_2024-07-01T10-00-00.1.jsonl", "a__b/results_2024-07-01T10-00-00.1.json"]
    chosen = lb.select_files(files, s)
    assert chosen == {"algebra_hard": ("2024-07-01T10-00-00.1", files[1]), "geometry_hard": ("2024-06-26T10-00-00.1", files[2])}
    s1 = lb.parse_settings({"version": "v1", "task": "gsm8k|5", "metric": "acc"})
    f1 = ["2023-11-05T00:29:27.161865/details_harness|gsm8k|5_2023-11-05T00-29-27.161865.parquet",
          "2023-11-07T07:11:46.594603/details_harness|gsm8k|5_2023-11-07T07-11-46.594603.parquet",
          "2023-11-07T07:11:46.594603/details_harness|drop|3_2023-11-07T07-11-46.594603.parquet"]
    assert lb.select_files(f1, s1) == {"": ("2023-11-07T07-11-46.594603", f1[1])}
    assert lb.repo_for("meta-llama/Llama-2-7b-hf", s1) == "open-llm-leaderboard-old/details_meta-llama__Llama-2-7b-hf"
    assert lb.repo_for("Qwen/Qwen2.5-7B", s) == "open-llm-leaderboard/Qwen__Qwen2.5-7B-details"


def test_with_retries_backoff_and_retry_after():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def err(status, headers=None):
        resp = httpx2.Response(status, headers=headers or {}, request=httpx2.Request("GET", "http://127.0.0.1/x"))
        return HfHubHTTPError(f"{status}", response=resp)

    s = lb.parse_settings({"version": "v2", "task": "t", "max_retries": 3, "backoff_base": 0.5, "backoff_max": 10})
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise err(503)
        if len(calls) == 2:
            raise err(429, {"Retry-After": "7"})
        return "ok"

    assert lb.with_retries(flaky, s, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 7.0]
    sleeps.clear()
    with pytest.raises(HfHubHTTPError):
        lb.with_retries(lambda: (_ for _ in ()).throw(err(500)), s, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0, 2.0]  # gave up after max_retries
    sleeps.clear()
    with pytest.raises(HfHubHTTPError):
        lb.with_retries(lambda: (_ for _ in ()).throw(err(404)), s, sleep=sleeps.append)
    assert sleeps == []  # not retried
    assert lb.classify(err(404), "o/r", None).kind == "not_found"


def test_bad_settings():
    with pytest.raises(CrossdiffError, match="version"):
        lb.parse_settings({"task": "x"})
    with pytest.raises(CrossdiffError, match="task"):
        lb.parse_settings({"version": "v2"})
    with pytest.raises(CrossdiffError, match="coverage"):
        lb.parse_settings({"version": "v2", "task": "t", "coverage": "maybe"})


# ------------------------------------------------------------------ the real file layouts (tests/leaderboard_layouts.py)
import leaderboard_layouts as L  # noqa: E402

from crossdiff.items.adapters import load_items  # noqa: E402
from crossdiff.responses.build import build  # noqa: E402

NO_FILTERS = {"dedupe_models": False, "drop_constant_items": False}
ARC_V1 = {"source": "leaderboard", "version": "v1", "task": "arc:challenge|25", "metric": "acc_norm",
          "item_key": "example", "match_items_on": "question", "match_template": "Question: {text}\nAnswer:",
          "concurrency": 2, "backoff_base": 0.05}


def arc_fixture(tmp_path, n_plain=6):
    rows = L.arc_rows(n_plain)
    (tmp_path / "arc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items("arc", {"path": str(tmp_path / "arc.jsonl")})
    items.write_parquet(tmp_path / "items.parquet")
    return rows, items


def test_v1_arc_rows_by_native_id_by_text_and_twins(tmp_path, online):
    rows, items = arc_fixture(tmp_path)
    n = len(rows)
    order = [(7 * k + 3) % n for k in range(n)]  # the leaderboard's own row order, not the split's
    correct = {m: [(k * (j + 2) + j) % 3 % 2 for k in range(n)] for j, m in enumerate(["o/full", "o/gold", "o/bare", "gpt2"])}
    repos = {}
    for m, fields in (("o/full", "full"), ("o/gold", "gold"), ("o/bare", "bare")):
        data = L.v1_later(L.arc_v1_rows(rows, correct[m], fields, order), "acc_norm")
        repos[L.v1_repo_name(m)] = FakeRepo(L.v1_repo_files("2023-11-07T07:11:46.594603", "2023-11-07T07-11-46.594603",
                                                            {"arc:challenge|25": data}))
    # July 2023: native ids in `example`, flat metric columns; an org-less model id (details_gpt2)
    july = L.v1_july2023([{"example": rows[k]["id"], "correct": correct["gpt2"][k]} for k in reversed(order)])
    repos["open-llm-leaderboard-old/details_gpt2"] = FakeRepo(L.v1_repo_files(
        "2023-07-19T10:23:04.912913", "2023-07-19T10:23:04.912913", {"arc:challenge|25": july}))
    with FakeHub(repos) as hub:
        s = lb.parse_settings({**ARC_V1, "endpoint": hub.url})
        out = tmp_path / "arc.parquet"
        report = lb.collect(s, list(correct), tmp_path / "cache", tmp_path / "m.jsonl", out,
                            items_path=tmp_path / "items.parquet", progress=False)
    assert report["models_done"] == 4 and not report["incomplete_coverage"], report
    raw = pl.read_parquet(out)
    assert {"row", "choices", "gold", "gold_index", "full_prompt"} <= set(raw.columns)

    matrix, dropped, stats = build("leaderboard", out, ARC_V1, NO_FILTERS, items_path=tmp_path / "items.parquet")
    m = stats["matching"]
    # gpt2: 10 by id; full/gold/bare: 6 plain items by text each; the first twin pair (different choices and
    # answers) resolved by choices (full) and by gold (gold), the second pair (equal in everything) dropped
    assert (m["rows_by_id"], m["rows_by_text"], m["rows_twin_resolved"], m["rows_twin_dropped"]) == (10, 18, 4, 8)
    assert m["twins_resolved_by"] == {"choices": 2, "gold": 2}
    ids = dict(zip(items["id"], items["item_id"]))
    got = {(r[0], r[1]): r[2] for r in matrix.iter_rows()}
    for model in correct:
        for k, row in enumerate(rows):
            key = (model, ids[row["id"]])
            twin_b = row["id"] in ("Mercury_SC_LBS10597", "TIMSS_2003_8_pg47")
            twin_a = row["id"] in ("Mercury_406639", "Mercury_7116183")
            if model != "gpt2" and (twin_b or (twin_a and model == "o/bare")):
                assert key not in got, key  # never guessed
            else:
                assert got[key] == correct[model][k], key  # every other row on its own item
    twins = dropped.filter(pl.col("reason") == "ambiguous_twin").sort("id")
    assert twins["id"].to_list() == [ids[t[0]] for t in L.TWINS]
    assert set(twins["kind"]) == {"responses"}  # each keeps rows of models that told it apart (or carried ids)
    assert "same question as" in twins["detail"][2] and "3 model(s)" in twins["detail"][2]


def test_v1_twins_nothing_tells_apart_dropped_from_matrix(tmp_path, online):
    rows, items = arc_fixture(tmp_path, n_plain=3)
    order = list(range(len(rows)))
    repos = {L.v1_repo_name(m): FakeRepo(L.v1_repo_files("2024-02-01T00:00:00.000000", "2024-02-01T00-00-00.000000", {
        "arc:challenge|25": L.v1_later(L.arc_v1_rows(rows, [j % 2] * len(rows), "full", order), "acc_norm")}))
        for j, m in enumerate(["a/m1", "b/m2"])}
    with FakeHub(repos) as hub:
        s = lb.parse_settings({**ARC_V1, "endpoint": hub.url})
        lb.collect(s, ["a/m1", "b/m2"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet",
                   items_path=tmp_path / "items.parquet", progress=False)
    matrix, dropped, stats = build("leaderboard", tmp_path / "o.parquet", ARC_V1, NO_FILTERS, tmp_path / "items.parquet")
    b_ids = set(items.filter(pl.col("id").is_in(["Mercury_SC_LBS10597", "TIMSS_2003_8_pg47"]))["item_id"])
    assert not b_ids & set(matrix["item_id"]) and matrix["item_id"].n_unique() == len(rows) - 2
    d = dropped.filter(pl.col("reason") == "ambiguous_twin")
    assert set(d["id"]) == b_ids and set(d["kind"]) == {"item"} and stats["matching"]["twin_items_dropped"] == 2
    assert stats["dropped"]["item:ambiguous_twin"] == 2


def test_v1_row_positions_refused_against_an_item_table(tmp_path, online):
    rows, items = arc_fixture(tmp_path, n_plain=2)
    s = lb.parse_settings({"version": "v1", "task": "arc:challenge|25", "metric": "acc_norm"})
    with pytest.raises(CrossdiffError, match="leaderboard's own order, not the dataset's"):
        lb.collect(s, ["a/b"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet",
                   items_path=tmp_path / "items.parquet", progress=False)


def test_v1_model_list_from_its_own_contents_dataset(tmp_path, online):
    data = L.v1_later([{"example": f"q{i}", "correct": i % 2} for i in range(4)], "acc")
    v1_models = ["gpt2", "old/only-v1", "old/also"]
    repos = {L.v1_repo_name(m): FakeRepo(L.v1_repo_files("2023-12-03T01:02:03.000000", "2023-12-03T01-02-03.000000",
                                                         {"gsm8k|5": data})) for m in v1_models}
    repos["open-llm-leaderboard-old/contents"] = FakeRepo(L.contents(v1_models))
    repos["open-llm-leaderboard/contents"] = FakeRepo(L.contents(["Qwen/Qwen2.5-7B-Instruct", "new/only-v2"]))
    with FakeHub(repos) as hub:
        s = lb.parse_settings({"version": "v1", "task": "gsm8k|5", "metric": "acc", "endpoint": hub.url})
        report = lb.collect(s, None, tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)
        asked = {p for _, p, _ in hub.requests}
    assert report["models_done"] == 3 and report["models_failed"] == 0
    assert any("details_gpt2/tree" in p for p in asked)
    assert not any("Qwen" in p or "only-v2" in p for p in asked)  # the v2 list is not read for v1
    assert lb.parse_settings({"version": "v2", "task": "t"}).contents_repo == "open-llm-leaderboard/contents"
    assert lb.repo_for("gpt2", lb.parse_settings({"version": "v2", "task": "t"})) == "open-llm-leaderboard/gpt2-details"
    with pytest.raises(CrossdiffError, match="needs an org"):
        lb.repo_for("gpt2", lb.parse_settings({"version": "v1", "task": "t", "repo_template": "x/details_{org}__{name}"}))


MATH_SUBS = {"algebra_hard": 4, "counting_and_prob_hard": 3, "num_theory_hard": 2}
V2_MATH = {"source": "leaderboard", "version": "v2", "task": "leaderboard_math", "subtasks": True,
           "metric": "exact_match", "concurrency": 3, "backoff_base": 0.05}


def math_repo(model, layouts=("jsonl",), runs=("2024-06-13T10-00-00.000000",), break_=None):
    files = {}
    for run, layout in zip(runs, layouts):
        for sub, n in MATH_SUBS.items():
            recs = [L.v2_record(i, "exact_match", (i + len(model)) % 2) for i in range(n)][::-1]  # completion order
            if break_ == "size" and sub == "algebra_hard":
                recs = recs[:-1]
            if break_ == "doc_ids" and sub == "num_theory_hard":
                recs[0]["doc_id"] = 7
            if break_ == "metric" and sub == "counting_and_prob_hard":
                recs = [{k: v for k, v in r.items() if k != "exact_match"} | {"metrics": ["acc"], "acc": 1.0} for r in recs]
            files[L.v2_file(model, f"leaderboard_math_{sub}", run, layout)] = L.v2_samples(recs, layout)
        files[f"{model.replace('/', '__')}/results_{run}.json"] = b"{}"
    return L.v2_repo_name(model), FakeRepo(files)


def test_v2_json_layouts_paginated_listing_and_unusable_files(tmp_path, online):
    items = tmp_path / "items.csv"
    pl.DataFrame({"item_id": [f"{s_}/{i}" for s_, n in MATH_SUBS.items() for i in range(n)]}).write_csv(items)
    repos = dict([
        math_repo("may/array", ("json-array",), ("2024-05-20T10-00-00.000000",)),        # May 2024: indented JSON array
        math_repo("june/lines", ("json-lines",), ("2024-06-05T10-00-00.000000",)),       # June 2024: JSON lines in .json
        math_repo("both/runs", ("json-array", "jsonl"), ("2024-05-20T10-00-00.000000", "2024-07-01T10-00-00.000000")),
        math_repo("bad/size", break_="size"), math_repo("bad/docids", break_="doc_ids"),
        math_repo("bad/metric", break_="metric"),
    ])
    models = ["may/array", "june/lines", "both/runs", "bad/size", "bad/docids", "bad/metric", "gone/missing"]
    with FakeHub(repos, page_size=2) as hub:  # every listing spans several pages
        s = lb.parse_settings({**V2_MATH, "endpoint": hub.url})
        report = lb.collect(s, models, tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet",
                            items_path=items, progress=False, summary_path=tmp_path / "summary.csv")
        pages = [p for m, p, st in hub.requests if "may__array-details/tree" in p]
    assert len(pages) >= 3
    rec = read_manifest(tmp_path / "m.jsonl")
    assert {m: rec[m]["status"] for m in models[:3]} == dict.fromkeys(models[:3], "done")
    assert rec["both/runs"]["run"] == "2024-07-01T10-00-00.000000"
    kinds = {m: rec[m].get("error_kind") for m in models[3:]}
    assert kinds == {"bad/size": "wrong_size", "bad/docids": "missing_doc_ids", "bad/metric": "metric_absent",
                     "gone/missing": "not_found"}
    assert "algebra_hard" in rec["bad/size"]["error"] and "3 samples, the item table has 4" in rec["bad/size"]["error"]
    assert "'exact_match' absent" in rec["bad/metric"]["error"]
    df = pl.read_parquet(tmp_path / "o.parquet")
    assert sorted(df["model_id"].unique()) == sorted(models[:3])  # never mixed in
    assert set(df["item_id"]) == {f"{s_}/{i}" for s_, n in MATH_SUBS.items() for i in range(n)}
    got = df.filter(pl.col("model_id") == "may/array").sort("item_id")
    assert got.filter(pl.col("item_id") == "num_theory_hard/1")["correct"][0] == (1 + len("may/array")) % 2
    summary = pl.read_csv(tmp_path / "summary.csv")
    table = {(r["outcome"], r["reason"] or ""): r["models"] for r in summary.iter_rows(named=True)}
    assert table[("done", "")] == 3 and table[("in matrix", "")] == 3
    assert {k[1]: v for k, v in table.items() if k[0] == "failed"} == {
        "wrong_size": 1, "missing_doc_ids": 1, "metric_absent": 1, "not_found": 1}
    assert report["failed_by_reason"] == {"metric_absent": 1, "missing_doc_ids": 1, "not_found": 1, "wrong_size": 1}


def test_plan_counts_models_files_bytes_and_downloads_nothing(tmp_path, online):
    repos = dict([math_repo("a/one"), math_repo("b/two", ("jsonl", "jsonl"), ("2024-06-13T10-00-00.000000",
                                                                               "2024-07-01T10-00-00.000000"))])
    sizes = sum(len(b) for f, b in repos[L.v2_repo_name("a/one")].files.items() if "samples_" in f)
    repos["open-llm-leaderboard/contents"] = FakeRepo(L.contents(["a/one", "b/two", "c/gone"]))
    with FakeHub(repos, page_size=3) as hub:
        s = lb.parse_settings({**V2_MATH, "endpoint": hub.url})
        from crossdiff.responses.collect_plan import plan

        p = plan(s, None, tmp_path / "c", progress=False)
        assert not any("samples_" in f for _, f in hub.downloads)  # listings only
        assert (p["models"], p["repos_with_files"], p["repos_failed"]) == (3, 2, {"not_found": 1})
        assert p["files"] == 2 * len(MATH_SUBS) and p["download_files"] == p["files"]
        one = next(r for r in p["per_model"] if r["model_id"] == "a/one")
        assert one["bytes"] == sizes and p["bytes"] >= 2 * sizes - 10
        # after collecting one model, its files count as cached
        lb.collect(s, ["a/one"], tmp_path / "c", tmp_path / "m.jsonl", tmp_path / "o.parquet", progress=False)
        p2 = plan(s, ["a/one", "b/two"], tmp_path / "c", progress=False)
        assert p2["cached_files"] == len(MATH_SUBS) and p2["download_files"] == len(MATH_SUBS)
        # the CLI prints the cost and writes the plan
        proc = subprocess.run([str(BIN / "python"), "-m", "crossdiff.cli", "collect-leaderboard", "--settings",
                               json.dumps({**V2_MATH, "models": ["a/one", "b/two", "c/gone"]}), "--cache-dir",
                               str(tmp_path / "c2"), "--plan", str(tmp_path / "plan.json"), "--no-progress"],
                              env={**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"},
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 models" in proc.stdout and f"to download: {2 * len(MATH_SUBS)} files" in proc.stdout
    assert "1 not_found" in proc.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["files"] == 2 * len(MATH_SUBS)


@pytest.mark.parametrize("models", [[], ["no-slash-id", "a/b/c"], ["x/y", "gone/too"]])
def test_plan_with_no_listable_model_fails_and_writes_nothing(tmp_path, online, models):
    """Empty list, only bad ids, or no repo reachable: an error, no '0 B' plan file (issue 20, item 8)."""
    with FakeHub({}) as hub:  # a hub without these repos (an unreachable one fails the same way, slower)
        settings = {**V2_MATH, "models": models, "max_retries": 0, "endpoint": hub.url}
        proc = subprocess.run([str(BIN / "python"), "-m", "crossdiff.cli", "collect-leaderboard", "--settings",
                               json.dumps(settings), "--cache-dir", str(tmp_path / "c"), "--plan",
                               str(tmp_path / "plan.json"), "--no-progress"],
                              env={**os.environ, "HF_HUB_OFFLINE": "0"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "plan: no models" in proc.stderr or "none of the" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "plan.json").exists()
