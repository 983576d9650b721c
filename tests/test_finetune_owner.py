"""One trainer per work directory (issue 20, item 3) and no empty work directory after a refusal (item 20).

A second `crossdiff finetune` on a work directory whose trainer is alive stops with an error naming
that trainer's pid and host, before touching the work directory; once that trainer is dead (kill -9,
no clean-up), its lock is taken over.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from crossdiff.errors import CrossdiffError

ENV = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}

HOLDER = """
import sys, time
from crossdiff.finetune.owner import acquire
f = acquire(sys.argv[1])
print("owned", flush=True)
time.sleep(120)
"""


def _train_file(tmp_path):
    path = tmp_path / "bin0.jsonl"
    path.write_text(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n")
    return path


def _finetune(tmp_path, out, model="no-such-model-dir"):
    cmd = [sys.executable, "-m", "crossdiff.cli", "finetune", "--model", str(model), "--train",
           str(_train_file(tmp_path)), "--output", str(out), "--settings", json.dumps({"max_steps": 1})]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture
def live_owner(tmp_path):
    work = tmp_path / "bin0.work"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "owned"
    yield work, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_second_trainer_on_a_live_work_dir_is_refused_naming_pid_and_host(tmp_path, live_owner):
    work, holder = live_owner
    (work / "checkpoint-600").mkdir(parents=True)
    (work / "checkpoint-600" / "trainer_state.json").write_text("{}")
    proc = _finetune(tmp_path, tmp_path / "bin0")
    assert proc.returncode != 0
    err = proc.stderr
    assert f"pid {holder.pid}" in err and socket.gethostname() in err and "in use by a running trainer" in err, err
    assert "Traceback" not in err
    # the live trainer's files are untouched
    assert (work / "checkpoint-600" / "trainer_state.json").read_text() == "{}"


def test_lock_of_a_killed_trainer_is_taken_over(tmp_path, live_owner):
    work, holder = live_owner
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    proc = _finetune(tmp_path, tmp_path / "bin0")
    # the lock no longer stops it: it gets as far as the (missing) base model
    assert "in use by a running trainer" not in proc.stderr
    assert "no-such-model-dir" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bin0.work.owner").exists(), "the lock is released when the job ends"


def test_in_process_owner_blocks_a_second_owner(tmp_path):
    from crossdiff.finetune.owner import acquire, release

    f = acquire(tmp_path / "w.work")
    try:
        with pytest.raises(CrossdiffError, match=f"pid {os.getpid()} on host"):
            acquire(tmp_path / "w.work")
    finally:
        release(f)
    release(acquire(tmp_path / "w.work"))  # free again


def test_refused_precision_leaves_no_empty_work_dir(tmp_path):
    """Pure bf16 (opted in) is refused on CPU after the work directory was prepared: none is left."""
    from crossdiff.models.tiny import build_base_model
    from crossdiff.finetune.run import finetune

    tiny = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "warmup_problems": 0,
            "warmup_steps": 0, "eval_items": 0}
    build_base_model(tmp_path / "base", None, tiny)
    out = tmp_path / "ft"
    with pytest.raises(CrossdiffError, match="needs a CUDA device"):
        finetune(tmp_path / "base", _train_file(tmp_path), out,
                 settings={"master_weights": "bf16", "allow_pure_bf16": True, "max_steps": 1, "device": "cpu"})
    assert not out.exists() and not (tmp_path / "ft.work").exists()
    assert not (tmp_path / "ft.work.owner").exists()


@pytest.mark.parametrize("save_dtype,name,st", [("bf16", "bfloat16", "BF16"), ("fp32", "float32", "F32")])
def test_config_json_names_the_saved_dtype(tmp_path, save_dtype, name, st):
    """issue 20, item 15: save_dtype bf16 writes bf16 tensors, and config.json says bfloat16."""
    from safetensors import safe_open

    from crossdiff.models.tiny import build_base_model
    from crossdiff.finetune.run import finetune

    tiny = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "warmup_problems": 0,
            "warmup_steps": 0, "eval_items": 0}
    build_base_model(tmp_path / "base", None, tiny)
    out = tmp_path / "ft"
    finetune(tmp_path / "base", _train_file(tmp_path), out,
             settings={"save_dtype": save_dtype, "max_steps": 1, "device": "cpu", "per_device_train_batch_size": 1})
    assert json.loads((out / "config.json").read_text())["dtype"] == name
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {st}
