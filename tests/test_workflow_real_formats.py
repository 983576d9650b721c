"""The difficulty half on real-format inputs: ARC items in the hub's schema and lm-eval --log_samples logs."""

import json

import numpy as np
import polars as pl

from conftest import make_workdir, snakemake


def write_inputs(root, n_items=60, n_models=40, seed=0):
    rng = np.random.default_rng(seed)
    with open(root / "arc.jsonl", "w") as fh:
        for i in range(n_items):
            fh.write(json.dumps({"id": f"Q{i}", "question": f"Question number {i}" + " word" * int(rng.integers(1, 30)),
                                 "choices": {"text": ["a", "b", "c", "d"], "label": ["A", "B", "C", "D"]},
                                 "answerKey": "ABCD"[i % 4]}) + "\n")
    b = rng.normal(size=n_items)
    for m in range(n_models):
        theta = rng.normal()
        d = root / "lm_eval_out" / f"org__model-{m:02d}"
        d.mkdir(parents=True)
        with open(d / "samples_arc_challenge_2026-03-01T10-00-00.000000.jsonl", "w") as fh:
            for i in range(n_items):
                if rng.random() < 0.05:
                    continue  # missing
                p = 1 / (1 + np.exp(-(theta - b[i])))
                acc = float(rng.random() < p)
                fh.write(json.dumps({"doc_id": i, "doc": {"id": f"Q{i}"}, "filter": "none", "metrics": ["acc", "acc_norm"],
                                     "acc": acc, "acc_norm": acc}) + "\n")
    return b


def test_difficulty_half_on_arc_items_and_lm_eval_logs(tmp_path):
    true_b = write_inputs(tmp_path)
    config = f"""
datasets:
  arc:
    items: {{source: hub, adapter: arc, path: {tmp_path / "arc.jsonl"}}}
    responses: {{source: lm_eval_samples, path: {tmp_path / "lm_eval_out"}, task: arc_challenge, metric: acc_norm}}
irt: {{engine: fast, stability: {{seeds: [], engines: []}}}}
bins: {{n_bins: 4}}
"""
    wd = make_workdir(tmp_path / "wd", config)
    snakemake(wd, "--cores", "2")
    items = pl.read_parquet(wd / "results/items/arc.parquet")
    assert items.height == 60 and items["item_id"][:3].to_list() == ["0", "1", "2"]
    matrix = pl.read_parquet(wd / "results/responses/arc.parquet")
    assert matrix["model_id"].n_unique() == 40 and set(matrix["item_id"]) <= set(items["item_id"])
    bins = pl.read_parquet(wd / "results/bins/arc/bins.parquet")
    assert sorted(bins.group_by("bin").len()["len"].to_list()) == [bins.height // 4] * 4
    irt = pl.read_parquet(wd / "results/irt/arc/items.parquet").with_columns(pl.col("item_id").cast(pl.Int64)).sort("item_id")
    est = irt["difficulty"].to_numpy()
    assert np.corrcoef(est, true_b[irt["item_id"].to_numpy()])[0, 1] > 0.7
    assert (wd / "results/figures/arc/difficulty/spearman.png").stat().st_size > 10_000
    assert not (wd / "results/figures/arc/difficulty/truth.png").exists()  # no truth for real data


def test_difficulty_half_from_the_leaderboard_through_a_local_hub(tmp_path):
    """BBH items in the hub schema; responses collected from a loopback hub with v2 details repos."""
    from hub_server import FakeHub, FakeRepo

    rng = np.random.default_rng(1)
    subtasks, n_docs, n_models = ["boolean_expressions", "navigate"], 12, 30
    items_dir = tmp_path / "bbh"
    items_dir.mkdir()
    for sub in subtasks:
        (items_dir / f"{sub}.jsonl").write_text("".join(
            json.dumps({"input": f"{sub} question {i}", "target": "True"}) + "\n" for i in range(n_docs)))
    b = rng.normal(size=(len(subtasks), n_docs))
    repos, models = {}, []
    for m in range(n_models):
        model, theta = f"org{m % 3}/model-{m:02d}", rng.normal()
        models.append(model)
        slug = model.replace("/", "__")
        files = {}
        for s, sub in enumerate(subtasks):
            lines = [json.dumps({"doc_id": i, "filter": "none", "metrics": ["acc_norm"],
                                 "acc_norm": float(rng.random() < 1 / (1 + np.exp(b[s, i] - theta)))})
                     for i in range(n_docs)]
            files[f"{slug}/samples_leaderboard_bbh_{sub}_2024-06-26T10-00-00.123456.jsonl"] = ("\n".join(lines) + "\n").encode()
        repos[f"open-llm-leaderboard/{slug}-details"] = FakeRepo(files)
    with FakeHub(repos) as hub:
        config = {
            "datasets": {"bbh": {
                "items": {"source": "hub", "adapter": "bbh", "path": str(items_dir), "subtasks": subtasks},
                "responses": {"source": "leaderboard", "version": "v2", "task": "leaderboard_bbh", "subtasks": True,
                              "metric": "acc_norm", "models": models, "endpoint": hub.url,
                              "cache_dir": str(tmp_path / "cache"), "concurrency": 4},
            }},
            "irt": {"engine": "fast", "stability": {"seeds": [], "engines": []}},
            "bins": {"n_bins": 3},
        }
        wd = make_workdir(tmp_path / "wd", json.dumps(config))
        snakemake(wd, "--cores", "2", env={"HF_HUB_OFFLINE": "0"})
        downloads = sum(hub.downloads.values())
    matrix = pl.read_parquet(wd / "results/responses/bbh.parquet")
    assert matrix["model_id"].n_unique() == n_models
    assert set(matrix["item_id"]) <= {f"{s}/{i}" for s in subtasks for i in range(n_docs)}
    assert downloads == n_models * len(subtasks)  # each per-sample file fetched once
    assert (tmp_path / "cache" / "bbh" / "manifest.jsonl").exists()
    bins = pl.read_parquet(wd / "results/bins/bbh/bins.parquet")
    assert bins.height == matrix["item_id"].n_unique() and bins["bin"].n_unique() == 3


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_paper_config_collects_imports_and_bins_all_six_datasets_from_real_layouts(tmp_path):
    """config/paper.yaml's six `responses` sections, unchanged, against a loopback hub serving the real
    layouts (tests/leaderboard_layouts.py): both contents datasets, v1 parquet (later columns, July-2023
    flat columns with native ids, ARC twins, an org-less model), v2 samples as .jsonl, .json lines and a
    JSON array, MATH's real file names, paginated listings. Few models and items; no fine-tuning."""
    import zlib

    import yaml

    import leaderboard_layouts as L
    from hub_server import FakeHub, FakeRepo

    from conftest import REPO

    rng = np.random.default_rng(7)
    root = tmp_path / "items"
    root.mkdir()
    # ---- items in each dataset's hub schema
    arc = L.arc_rows(16)
    (root / "arc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arc))
    gsm = [{"question": f"Tom has {i} apples and buys {i + 3} more. How many now?",
            "answer": f"He has {i}+{i + 3}=<<{i}+{i + 3}={2 * i + 3}>>{2 * i + 3}.\n#### {2 * i + 3}"} for i in range(18)]
    (root / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    mmlu = [{"question_id": i, "question": f"MMLU-Pro question {i}?", "options": [f"o{k}" for k in range(10)],
             "answer": "C", "answer_index": 2, "category": "math", "src": "x"} for i in range(18)]
    (root / "mmlu_pro.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mmlu))
    from crossdiff.items.adapters import BBH_SCORED

    # BBH at its default: the authors' 21 subtasks (two with 8 items, the others 2); the hub also serves the
    # leaderboard's other three, which the collector must leave alone
    bbh_subs = {s: 8 if s in ("boolean_expressions", "navigate") else 2 for s in BBH_SCORED}
    bbh_left_out = ("causal_judgement", "penguins_in_a_table", "snarks")
    subs = {"bbh": bbh_subs, "math": {"counting_and_probability": 8, "number_theory": 6, "algebra": 5},
            "musr": {"murder_mysteries": 6, "team_allocation": 8}}
    for name, per in subs.items():
        (root / name).mkdir()
        for sub, n in per.items():
            if name == "bbh":
                rows = [{"input": f"{sub} q{i}", "target": "True"} for i in range(n)]
            elif name == "math":  # level-5 rows, with one of level 4 that MATH-hard excludes
                rows = [{"problem": f"{sub} p{i}", "solution": f"so \\boxed{{{i}}}", "level": "Level 5", "type": sub}
                        for i in range(n)] + [{"problem": "easy", "solution": "\\boxed{1}", "level": "Level 4", "type": sub}]
            else:
                rows = [{"narrative": f"story {i}", "question": f"{sub} who?", "choices": "['a', 'b', 'c']",
                         "answer_index": i % 3} for i in range(n)]
            (root / name / f"{sub}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    math_files = {"counting_and_probability": "counting_and_prob_hard", "number_theory": "num_theory_hard",
                  "algebra": "algebra_hard"}

    # ---- models: v1-only (one without an org), v2-only (the paper's generation), both
    v1_models = ["gpt2", "old/llama-7b", "old/falcon-7b", "both/mistral-7b", "both/yi-6b", "old/pythia-1b"]
    v2_models = ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "both/mistral-7b", "both/yi-6b",
                 "new/phi-3", "new/gemma-2b"]
    theta = {m: rng.normal() for m in sorted(set(v1_models) | set(v2_models))}

    def answers(model, n, key):  # seeded by crc32: the same fixtures in every process
        b = np.random.default_rng(zlib.crc32(key.encode())).normal(size=n)
        r = np.random.default_rng(zlib.crc32(f"{model}|{key}".encode())).random(n)
        return [int(x) for x in (r < _sigmoid(theta[model] - b))]

    repos = {"open-llm-leaderboard-old/contents": FakeRepo(L.contents(v1_models)),
             "open-llm-leaderboard/contents": FakeRepo(L.contents(v2_models))}
    order = [(7 * k + 2) % len(arc) for k in range(len(arc))]  # a permutation: the leaderboard's own order
    for j, m in enumerate(v1_models):
        a = answers(m, len(arc), "arc")
        if m == "old/falcon-7b":  # July 2023: native ids, flat columns
            arc_file = L.v1_july2023([{"example": arc[k]["id"], "correct": a[k]} for k in order])
            run_dir = run_file = "2023-07-19T10:23:04.912913"
        else:
            arc_file = L.v1_later(L.arc_v1_rows(arc, a, ("full", "gold", "bare")[j % 3], order), "acc_norm")
            run_dir, run_file = "2023-11-07T07:11:46.594603", "2023-11-07T07-11-46.594603"
        g = answers(m, len(gsm), "gsm8k")
        gsm_file = L.v1_later([{"example": gsm[k]["question"], "correct": g[k]} for k in reversed(range(len(gsm)))], "acc")
        repos[L.v1_repo_name(m)] = FakeRepo(L.v1_repo_files(run_dir, run_file, {"arc:challenge|25": arc_file,
                                                                                "gsm8k|5": gsm_file}))
    for j, m in enumerate(v2_models):
        layout, run = (("jsonl", "2024-07-01T10-00-00.000000"), ("json-lines", "2024-06-05T10-00-00.000000"),
                       ("json-array", "2024-05-20T10-00-00.000000"))[j % 3]
        files = {f"{m.replace('/', '__')}/results_{run}.json": b"{}"}

        def put(task, n, metric, key):
            recs = [L.v2_record(i, metric, v) for i, v in enumerate(answers(m, n, key))][::-1]
            if m == "new/gemma-2b" and task == "leaderboard_math_num_theory_hard":
                recs = recs[1:]  # one sample short: unusable for MATH, fine for the other tasks
            files[L.v2_file(m, task, run, layout)] = L.v2_samples(recs, layout)

        put("leaderboard_mmlu_pro", len(mmlu), "acc", "mmlu")
        for sub, n in subs["bbh"].items():
            put(f"leaderboard_bbh_{sub}", n, "acc_norm", f"bbh{sub}")
        for sub in bbh_left_out:  # subtasks the item table leaves out
            put(f"leaderboard_bbh_{sub}", 4, "acc_norm", sub)
        for sub, n in subs["math"].items():
            put(f"leaderboard_math_{math_files[sub]}", n, "exact_match", f"math{sub}")
        for sub, n in subs["musr"].items():
            put(f"leaderboard_musr_{sub}", n, "acc_norm", f"musr{sub}")
        repos[L.v2_repo_name(m)] = FakeRepo(files)

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    paths = {"arc": root / "arc.jsonl", "gsm8k": root / "gsm8k.jsonl", "mmlu_pro": root / "mmlu_pro.jsonl"}
    with FakeHub(repos, page_size=4) as hub:
        for name, ds in config["datasets"].items():
            ds["items"]["path"] = str(paths.get(name, root / name))
            if name in subs and name != "bbh":  # bbh runs at its default subtasks
                ds["items"]["subtasks"] = list(subs[name])
            ds["responses"].update(endpoint=hub.url, cache_dir=str(tmp_path / "cache"), concurrency=4)
        config.update(models=[], filters={"min_responses_per_model": 1, "min_responses_per_item": 1},
                      irt={**config["irt"], "stability": {"seeds": [], "engines": []}}, bins={"n_bins": 3})
        wd = make_workdir(tmp_path / "wd", yaml.safe_dump(config))
        targets = [f"results/bins/{d}/bins.parquet" for d in config["datasets"]]
        snakemake(wd, "--cores", "2", *targets, env={"HF_HUB_OFFLINE": "0"})
        asked = {p for _, p, _ in hub.requests}
        fetched = set(hub.downloads)
        plan = snakemake(wd, "--cores", "1", "results/leaderboard/math.plan.json", env={"HF_HUB_OFFLINE": "0"})
    assert plan.returncode == 0
    # each version asked its own contents dataset's models only
    assert not any("Qwen" in p for p in asked if "open-llm-leaderboard-old/" in p)
    assert not any("details_old__" in p or "gpt2" in p for p in asked if "open-llm-leaderboard/" in p)
    for name in config["datasets"]:
        bins = pl.read_parquet(wd / f"results/bins/{name}/bins.parquet")
        assert bins.height > 3 and bins["bin"].n_unique() == 3, name
        summary = pl.read_csv(wd / f"results/leaderboard/{name}.summary.csv")
        done = summary.filter(pl.col("outcome") == "done")["models"][0]
        assert done == (5 if name == "math" else 6), (name, summary)
    failed = pl.read_csv(wd / "results/leaderboard/math.summary.csv").filter(pl.col("outcome") == "failed")
    assert failed.select("reason", "models").rows() == [("wrong_size", 1)] and "new/gemma-2b" in failed["example"][0]
    assert "new/gemma-2b" not in set(pl.read_parquet(wd / "results/responses/math.parquet")["model_id"])
    assert "new/gemma-2b" in set(pl.read_parquet(wd / "results/responses/bbh.parquet")["model_id"])
    math = pl.read_parquet(wd / "results/responses/math.parquet")
    assert {i.split("/")[0] for i in math["item_id"]} == set(math_files.values())
    bbh_items = pl.read_parquet(wd / "results/items/bbh.parquet")
    assert sorted(bbh_items["subtask"].unique()) == sorted(BBH_SCORED) and bbh_items.height == 2 * 8 + 19 * 2
    bbh_matrix = pl.read_parquet(wd / "results/responses/bbh.parquet")
    assert {i.split("/")[0] for i in bbh_matrix["item_id"]} <= set(BBH_SCORED)
    assert not any(f"leaderboard_bbh_{sub}_" in path for _, path in fetched for sub in bbh_left_out)  # never downloaded
    assert sum(1 for _, path in fetched if "leaderboard_bbh_" in path) == 6 * 21
    stats = json.loads((wd / "results/responses/arc.stats.json").read_text())["matching"]
    # falcon's 20 rows by native id; 5 models x 16 plain rows by text; twin pair A resolved for the
    # two "full" and the two "gold" models, dropped for the "bare" one; pair B dropped for all five
    assert (stats["rows_by_id"], stats["rows_by_text"], stats["rows_twin_resolved"], stats["rows_twin_dropped"]) == \
        (20, 80, 8, 12), stats
    dropped = pl.read_csv(wd / "results/responses/arc.dropped.csv")
    assert dropped.filter(pl.col("reason") == "ambiguous_twin").height == 4
    gstats = json.loads((wd / "results/responses/gsm8k.stats.json").read_text())["matching"]
    assert gstats["rows_by_text"] == 6 * len(gsm) and gstats["rows_twin_dropped"] == 0
    plan_json = json.loads((wd / "results/leaderboard/math.plan.json").read_text())
    assert plan_json["models"] == 6 and plan_json["files"] == 6 * 3 and plan_json["cached_files"] == 6 * 3
    # the collection summaries are in the report, with their caption
    import zipfile

    snakemake(wd, "--report", str(wd / "report.zip"), *targets[:2])
    with zipfile.ZipFile(wd / "report.zip") as z:
        names = z.namelist()
        html = z.read("report/report.html").decode()
    assert any(n.endswith("arc.summary.csv") for n in names) and "Collection of" in html
