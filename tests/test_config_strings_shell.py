"""No config string is ever formatted into a rule's shell template (issue 20, item 1).

Config strings holding Snakemake placeholders (``{params.settings}``, ``{x}``) and command
substitutions go into every config string that can reach a shell command: the GPU lock dir and
device list, evaluation model args, model ids, item/response/models-list paths. A dry run must
succeed (no NameError), and each printed command, executed by a POSIX shell with a stub
``crossdiff`` that records its argv, must run nothing and pass each string as one argument.
"""

import json
import os
import shlex
import subprocess
import sys

import polars as pl
import pytest

from conftest import make_workdir, snakemake

STUB = """#!{python}
import json, sys
with open({record!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def _run_printed_commands(wd, out, stub_dir):
    commands = [line.split("Shell command: ", 1)[1] for line in out.splitlines() if line.startswith("Shell command: ")
                and line != "Shell command: None"]
    assert commands
    for c in commands:
        words = shlex.split(c)
        for i, w in enumerate(words):
            if w == ">" and i + 1 < len(words):
                (wd / words[i + 1]).parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}"}
        proc = subprocess.run(["sh", "-c", c], cwd=wd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (c, proc.stderr)
    return commands


@pytest.mark.parametrize("devices,lock_dir", [
    ("{params.settings}", "/tmp/x{params.settings}"),
    ("0", "locks {x} $(touch PWNED_L)"),
    ("{x}`touch PWNED_D`", "{params.base}"),
])
def test_config_strings_never_become_shell_template_text(tmp_path, devices, lock_dir):
    data = tmp_path / "data 'q' $(touch PWNED_P)"
    data.mkdir()
    items = data / "items `touch PWNED_I` $(touch PWNED_J).parquet"
    pl.DataFrame({"item_id": [f"i{i}" for i in range(6)], "question": ["q"] * 6, "answer": ["1"] * 6,
                  "length": list(range(6))}).write_parquet(items)
    table = data / "resp \"x\" `touch PWNED_R`.csv"
    pl.DataFrame({"model_id": ["m"], "item_id": ["i0"], "correct": [1]}).write_csv(table)
    hub_id = "org/model{x}$(touch PWNED_M)"
    config = {
        "datasets": {
            "d": {"items": {"source": "file", "path": str(items)},
                  "responses": {"source": "table", "path": str(table)}},
        },
        "bins": {"n_bins": 2},
        "models": [{"id": hub_id}],
        "resources": {"finetune": {"gpu": 1}, "evaluate": {"gpu": 1}, "memory_check": "off"},
        "gpus": {"devices": devices, "lock_dir": lock_dir},
        "evaluate": {"model_args": {"x": "$(touch PWNED_A) {params.settings}"}},
    }
    wd = make_workdir(tmp_path / "wd", json.dumps(config))
    proc = snakemake(wd, "-n", "-p", "--cores", "1", "--forceall", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "NameError" not in out
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    record = tmp_path / "argv.jsonl"
    (stub_dir / "crossdiff").write_text(STUB.format(python=sys.executable, record=str(record)))
    (stub_dir / "crossdiff").chmod(0o755)
    _run_printed_commands(wd, out, stub_dir)
    found = [p for p in tmp_path.rglob("PWNED*")]
    assert not found, f"a shell command ran from a config string: {found}"
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    gpu_runs = [c for c in calls if c[0] == "gpu-run"]
    assert gpu_runs, "no GPU rule was planned"
    for c in gpu_runs:
        assert c[c.index("--devices") + 1] == devices and c[c.index("--lock-dir") + 1] == lock_dir, c
    evaluates = [c[c.index("--") + 1:] for c in gpu_runs if "evaluate" in c]
    assert evaluates
    for c in evaluates:
        settings = json.loads(c[c.index("--settings") + 1])
        assert settings["model_args"]["x"] == "$(touch PWNED_A) {params.settings}"
    finetunes = [c[c.index("--") + 1:] for c in gpu_runs if "finetune" in c]
    assert finetunes and all(c[c.index("--model") + 1] == hub_id for c in finetunes)
    imports = [c for c in calls if c[0] == "import-responses"]
    assert imports and imports[0][imports[0].index("--input") + 1] == str(table)


def test_brace_in_a_tracked_path_is_refused_by_name(tmp_path):
    """Input paths are Snakemake patterns: a '{' in one is refused at validation, naming the key."""
    items = tmp_path / "items {x}.parquet"
    config = {"datasets": {"d": {"items": {"source": "file", "path": str(items)},
                                 "responses": {"source": "table", "path": str(tmp_path / "r.csv")}}},
              "models": []}
    wd = make_workdir(tmp_path / "wd", json.dumps(config))
    proc = snakemake(wd, "-n", "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.d.items.path" in out and "wildcard" in out, out[-2000:]
