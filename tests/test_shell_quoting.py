"""Config paths and strings reach the rules' shell commands quoted (issue 13, item 1).

A path holding spaces, quotes or ``$(...)`` must arrive as one argument and never run anything:
one real DAG run on such paths (table, lm-eval samples and item-file sources, in a work directory
with a hostile name too), and a dry run of every other rule (leaderboard cache, models list, GPU
lock dir and device list, hub model ids, fine-tuning and evaluation) whose printed commands are
split the way a POSIX shell splits them.
"""

import json
import shlex

import numpy as np
import polars as pl

from conftest import make_workdir, snakemake

# each name would run `touch` if it reached a shell unquoted, and breaks on a space otherwise
HOSTILE = "a dir 'q' \"dq\" $(touch PWNED1) `touch PWNED2`"


def _responses(n_models=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    ability, difficulty = rng.normal(size=n_models), rng.normal(size=n_items)
    p = 1 / (1 + np.exp(-(ability[:, None] - difficulty[None, :])))
    return (rng.random(p.shape) < p).astype(int)


def _long_table(correct, prefix="m"):
    rows = [(f"{prefix}{m}", f"i{i}", int(correct[m, i])) for m in range(correct.shape[0]) for i in range(correct.shape[1])]
    return pl.DataFrame(rows, schema=["model_id", "item_id", "correct"], orient="row")


def _write_samples(root, correct):
    for m in range(correct.shape[0]):
        d = root / f"org__model-{m}"
        d.mkdir(parents=True)
        lines = [json.dumps({"doc_id": i, "acc": float(correct[m, i])}) for i in range(correct.shape[1])]
        (d / "samples_arc_easy_2026-01-01T00-00-00.000.jsonl").write_text("\n".join(lines) + "\n")


def _no_pwned(*roots):
    found = [p for root in roots for p in root.rglob("PWNED*")]
    assert not found, f"a shell command ran from a config path: {found}"


def test_hostile_paths_run_the_dag_and_execute_nothing(tmp_path):
    data = tmp_path / HOSTILE
    data.mkdir()
    table = data / "resp 'x' $(touch PWNED3).csv"
    _long_table(_responses(seed=1)).write_csv(table)
    samples = data / "samples $(touch PWNED4)"
    _write_samples(samples, _responses(seed=2))
    items = data / "items \"$(touch PWNED5)\".csv"
    pl.DataFrame({"item_id": [f"i{i}" for i in range(40)], "length": list(range(40))}).write_csv(items)
    filed = data / "filed;touch PWNED6.csv"
    _long_table(_responses(seed=3)).write_csv(filed)
    config = {
        "datasets": {
            "tab": {"items": {"source": "none"}, "responses": {"source": "table", "path": str(table)}},
            "samples": {"items": {"source": "none"},
                        "responses": {"source": "lm_eval_samples", "path": str(samples), "task": "arc_easy"}},
            "filed": {"items": {"source": "file", "path": str(items)},
                      "responses": {"source": "table", "path": str(filed)}},
        },
        "filters": {"min_responses_per_model": 5, "min_responses_per_item": 5},
        "irt": {"engine": "fast", "epochs": 300, "stability": {"seeds": [], "engines": []}},
        "bins": {"n_bins": 3},
        "models": [],
    }
    wd = make_workdir(tmp_path / "work dir $(touch PWNED7)", json.dumps(config))
    snakemake(wd, "--cores", "2", timeout=300)
    for name in ("tab", "samples", "filed"):
        assert (wd / f"results/bins/{name}/bins.parquet").exists(), name
        assert (wd / f"results/figures/{name}/difficulty/spearman.png").stat().st_size > 1000, name
    stats = json.loads((wd / "results/responses/samples.stats.json").read_text())
    assert stats["input"] == str(samples) and stats["models"] == 30
    _no_pwned(tmp_path)


def test_every_rule_passes_config_strings_as_single_arguments(tmp_path):
    """Dry run of the whole study on hostile paths: each path is exactly one shell word."""
    data = tmp_path / HOSTILE
    data.mkdir()
    items = data / "items $(touch PWNED8).parquet"
    pl.DataFrame({"item_id": ["a", "b"], "question": ["q1", "q2"], "answer": ["1", "2"]}).write_parquet(items)
    models_list = data / "models `touch PWNED9`.txt"
    models_list.write_text("org/model\n")
    cache = str(data / "cache $(touch PWNED10)")
    lock_dir = str(data / "locks $(touch PWNED11)")
    hub_id = "org/model$(touch PWNED12)"
    config = {
        "datasets": {
            "lb": {"items": {"source": "file", "path": str(items)},
                   "responses": {"source": "leaderboard", "version": "v2", "task": "leaderboard_gpqa",
                                 "models_list": str(models_list), "cache_dir": cache}},
        },
        "bins": {"n_bins": 2},
        "models": [{"id": hub_id}],
        "resources": {"finetune": {"gpu": 1}, "evaluate": {"gpu": 1}},
        "gpus": {"devices": "0;touch PWNED13", "lock_dir": lock_dir},
    }
    wd = make_workdir(tmp_path / "wd", json.dumps(config))
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    out = proc.stdout + proc.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in out.splitlines() if line.startswith("Shell command: ")]
    words = [w for c in commands for w in shlex.split(c)]
    expected = {
        str(items): "--items",
        str(models_list): "--models-list",
        f"{cache}/lb": "--cache-dir",
        f"{cache}/lb/manifest.jsonl": "--manifest",
        lock_dir: "--lock-dir",
        "0;touch PWNED13": "--devices",
        hub_id: ("--model", "results/models/models.tsv"),  # register-models takes the ids last
    }
    for value, option in expected.items():
        hits = [i for i, w in enumerate(words) if w == value]
        assert hits, f"{value!r} is not one shell word in:\n" + "\n".join(commands)
        assert all(words[i - 1] in option for i in hits) if isinstance(option, tuple) else all(
            words[i - 1] == option for i in hits), (value, option)
    ran = {words[i + 1] for i, w in enumerate(words) if w == "crossdiff"}
    assert {"collect-leaderboard", "import-responses", "make-task", "make-sft-data", "finetune", "evaluate",
            "plot-difficulty", "gpu-run"} <= ran, ran
    # no word of any command holds a command substitution outside quotes: each would be a word of its own
    assert not any(w.startswith(("$(", "`")) for w in words)
    _no_pwned(tmp_path)
