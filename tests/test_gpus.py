"""crossdiff gpu-run: distinct GPU slots per job, on virtual devices (no GPU needed).

Each job is the wrapper around a small shell command that records CUDA_VISIBLE_DEVICES and its start
and end times; the assertions are about those records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossdiff.runtime import gpus
from crossdiff.errors import CrossdiffError

# records "<CUDA_VISIBLE_DEVICES> <start> <end>" into $1 (and touches $1.started when it starts),
# sleeping $2 seconds in between
JOB = 'start=$(date +%s.%N); : > "$1.started"; sleep "$2"; echo "$CUDA_VISIBLE_DEVICES $start $(date +%s.%N)" > "$1"'
# writes '<CUDA_VISIBLE_DEVICES> <its pid>' to $1 then sleeps (same pid) until killed
LONG = 'echo "$CUDA_VISIBLE_DEVICES $$" > "$1.tmp" && mv "$1.tmp" "$1"; exec sleep 60'


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", gpus.ENV_DEVICES)}
    env.update(extra)
    return env


def wrapper(lock_dir: Path, *options: str, cmd: list[str], env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "crossdiff.runtime.gpus", "--lock-dir", str(lock_dir), "--poll-interval", "0.05", *options, "--", *cmd]
    return subprocess.Popen(argv, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def job(out: Path, seconds: float) -> list[str]:
    return ["sh", "-c", JOB, "job", str(out), str(seconds)]


def long_job(out: Path) -> list[str]:
    return ["sh", "-c", LONG, "long", str(out)]


def wait_for(path: Path, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def records(paths: list[Path]) -> list[tuple[str, float, float]]:
    out = []
    for p in paths:
        device, start, end = p.read_text().split()
        out.append((device, float(start), float(end)))
    return out


def test_concurrent_jobs_never_share_a_device(tmp_path):
    locks, n_jobs = tmp_path / "locks", 6
    outs = [tmp_path / f"job{i}.txt" for i in range(n_jobs)]
    procs = [wrapper(locks, "--devices", "0,1", cmd=job(out, 0.4)) for out in outs]
    for proc in procs:
        code, err = finish(proc)
        assert code == 0, err
    recs = records(outs)
    assert {d for d, _, _ in recs} == {"0", "1"}
    for device in ("0", "1"):
        spans = sorted((s, e) for d, s, e in recs if d == device)
        for (_, end1), (start2, _) in zip(spans, spans[1:]):
            assert start2 >= end1, f"two jobs on GPU {device} at once: {spans}"
    # and the two devices were used in parallel (6 x 0.4 s of work in well under 2.4 s)
    assert max(e for _, _, e in recs) - min(s for _, s, _ in recs) < 2.4


def test_multi_gpu_job_gets_distinct_devices(tmp_path):
    out = tmp_path / "job.txt"
    code, err = finish(wrapper(tmp_path / "locks", "--devices", "0,1,2", "--count", "2", cmd=job(out, 0)))
    assert code == 0, err
    devices = records([out])[0][0].split(",")
    assert len(devices) == 2 and len(set(devices)) == 2 and set(devices) <= {"0", "1", "2"}


def test_extra_job_waits_until_a_slot_frees(tmp_path):
    locks = tmp_path / "locks"
    holders = [tmp_path / "a.txt", tmp_path / "b.txt"]
    first = [wrapper(locks, "--devices", "0,1", cmd=job(out, 1.0)) for out in holders]
    for out in holders:  # both slots taken
        wait_for(Path(f"{out}.started"))
    third_out = tmp_path / "c.txt"
    third = wrapper(locks, "--devices", "0,1", cmd=job(third_out, 0))
    code, err = finish(third)
    assert code == 0, err
    assert "waiting for 1 of GPU(s) 0,1" in err
    for proc in first:
        assert finish(proc)[0] == 0
    (d3, start3, _), = records([third_out])
    ends = {d: e for d, _, e in records(holders)}
    assert start3 >= ends[d3], "the waiting job started before its GPU was released"


def test_wait_timeout(tmp_path):
    locks, marker = tmp_path / "locks", tmp_path / "held"
    holder = wrapper(locks, "--devices", "0", cmd=long_job(marker))
    try:
        wait_for(marker)
        t0 = time.monotonic()
        code, err = finish(wrapper(locks, "--devices", "0", "--wait-timeout", "0.5", cmd=["true"]))
        assert code == 2 and "no 1 free GPU(s) among 0 after 0.5 s" in err
        assert time.monotonic() - t0 < 5
    finally:
        holder.terminate()
        finish(holder)


@pytest.mark.parametrize("victim", ["wrapper and command", "wrapper only"])
def test_killed_job_frees_its_slot(tmp_path, victim):
    locks, marker = tmp_path / "locks", tmp_path / "held"
    holder = wrapper(locks, "--devices", "0", cmd=long_job(marker))
    device, child_pid = wait_for(marker).split()
    assert device == "0"
    if victim == "wrapper and command":
        os.kill(int(child_pid), signal.SIGKILL)
    # wrapper only: the command, which inherited the lock, gets SIGTERM on its parent's death
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    out = tmp_path / "next.txt"
    code, err = finish(wrapper(locks, "--devices", "0", "--wait-timeout", "10", cmd=job(out, 0)))
    assert code == 0, err
    assert records([out])[0][0] == "0"


def test_slot_stays_taken_while_the_child_runs(tmp_path):
    """The lock is inherited by the command: it is the command's lifetime, not the wrapper's, that counts."""
    locks, marker = tmp_path / "locks", tmp_path / "held"
    holder = wrapper(locks, "--devices", "0", cmd=long_job(marker))
    try:
        wait_for(marker)
        assert gpus.try_acquire(locks, ["0"], 1) is None
    finally:
        holder.terminate()
        finish(holder)
    taken = gpus.try_acquire(locks, ["0"], 1)
    assert taken is not None
    gpus.release(taken)


def test_sigterm_is_forwarded_and_exit_code_returned(tmp_path):
    marker = tmp_path / "held"
    script = f'sleep 30 & pid=$!; trap \'kill $pid; echo got-term > "{tmp_path}/term"; exit 7\' TERM; echo up > "{marker}"; wait'
    proc = wrapper(tmp_path / "locks", "--devices", "0", cmd=["sh", "-c", script])
    wait_for(marker)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 7, err
    assert (tmp_path / "term").read_text().strip() == "got-term"
    code, _ = finish(wrapper(tmp_path / "locks", "--devices", "0", cmd=["sh", "-c", "exit 3"]))
    assert code == 3


def test_device_subset_respected(tmp_path):
    outs = [tmp_path / f"j{i}.txt" for i in range(4)]
    procs = [wrapper(tmp_path / "locks", "--devices", "2,3", cmd=job(out, 0.1)) for out in outs]
    for proc in procs:
        assert finish(proc)[0] == 0
    assert {d for d, _, _ in records(outs)} <= {"2", "3"}


def test_auto_uses_env_list_then_nvidia_smi(tmp_path):
    out = tmp_path / "env.txt"
    env = clean_env(**{gpus.ENV_DEVICES: "5,7"})
    assert finish(wrapper(tmp_path / "locks", cmd=job(out, 0), env=env))[0] == 0
    assert records([out])[0][0] in {"5", "7"}

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-a)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = clean_env(PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "smi.txt"
    code, err = finish(wrapper(tmp_path / "locks", "--count", "2", cmd=job(out, 0), env=env))
    assert code == 0, err
    assert records([out])[0][0] == "0,1"
    assert "from nvidia-smi" in err


def test_no_gpu_anywhere_is_a_clear_error(tmp_path):
    env = clean_env(PATH="/usr/bin:/bin")  # no nvidia-smi here
    code, err = finish(wrapper(tmp_path / "locks", cmd=["true"], env=env))
    assert code == 2 and "no GPU found" in err
    code, err = finish(wrapper(tmp_path / "locks", "--devices", "0", "--count", "2", cmd=["true"]))
    assert code == 2 and "only 1 device(s)" in err


def test_slurm_and_scheduler_pass_through(tmp_path):
    locks = tmp_path / "locks"
    out = tmp_path / "slurm.txt"
    # inside a SLURM job: SLURM chose the GPU; even an explicit --devices is ignored, nothing is locked
    env = clean_env(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="3")
    code, err = finish(wrapper(locks, "--devices", "0,1", cmd=job(out, 0), env=env))
    assert code == 0 and "pass-through: SLURM job 42" in err
    assert records([out])[0][0] == "3"
    assert not locks.exists() or not any(locks.iterdir())

    # another scheduler set CUDA_VISIBLE_DEVICES for exactly this job: run as is
    out = tmp_path / "sched.txt"
    code, err = finish(wrapper(locks, cmd=job(out, 0), env=clean_env(CUDA_VISIBLE_DEVICES="1")))
    assert code == 0 and "pass-through" in err
    assert records([out])[0][0] == "1"
    assert not locks.exists() or not any(locks.iterdir())

    # more visible devices than the job needs: they are the pool, and the wrapper locks among them
    out = tmp_path / "pool.txt"
    code, err = finish(wrapper(locks, cmd=job(out, 0), env=clean_env(CUDA_VISIBLE_DEVICES="2,3")))
    assert code == 0 and "from CUDA_VISIBLE_DEVICES" in err
    assert records([out])[0][0] in {"2", "3"}


def test_plan_and_parse_units():
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert gpus.plan("auto", 2, env=env).candidates == ["0", "1", "2", "3"]
    assert gpus.plan("auto", 4, env=env).passthrough
    assert gpus.plan("2,3", 1, env=env).candidates == ["2", "3"]
    assert gpus.plan("0", 1, env={"SLURM_JOB_ID": "1"}).passthrough
    assert gpus.parse_devices(" 0, GPU-1a2b ") == ["0", "GPU-1a2b"]
    with pytest.raises(CrossdiffError, match="twice"):
        gpus.parse_devices("0,0")
    with pytest.raises(CrossdiffError, match="bad device"):
        gpus.parse_devices("0;rm -rf")


def test_registered_as_cli_subcommand():
    from crossdiff.cli import COMMANDS

    assert COMMANDS.get("gpu-run", ("",))[0] == "crossdiff.runtime.gpus", "register: 'gpu-run': ('crossdiff.runtime.gpus', ...) in cli.COMMANDS"


def test_count_zero_runs_without_a_gpu_and_takes_no_lock(tmp_path):
    """--count 0 (a model whose fine-tune has `gpu: 0` in a config where others have GPUs): the command
    runs at once with CUDA_VISIBLE_DEVICES emptied, and no device slot is locked."""
    out = tmp_path / "rec"
    env = clean_env(CUDA_VISIBLE_DEVICES="0,1")
    proc = wrapper(tmp_path / "locks", "--count", "0", "--devices", "0", cmd=job(out, 0), env=env)
    code, err = finish(proc)
    assert code == 0, err
    assert "pass-through: --count 0" in err
    assert out.read_text().startswith(" ")  # "<CUDA_VISIBLE_DEVICES> <start> <end>" with no device
    assert not (tmp_path / "locks").exists() or not list((tmp_path / "locks").iterdir())


def test_lock_dir_mode_kept_file_refused_and_too_few_visible_devices(tmp_path):
    """issue 20, item 12: an existing lock dir keeps its mode; a lock dir that is a file and a
    CUDA_VISIBLE_DEVICES that is empty or lists fewer devices than --count are clear errors."""
    import os as _os

    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o750)
    code, err = finish(wrapper(mine, "--devices", "0", cmd=["true"]))
    assert code == 0, err
    assert _os.stat(mine).st_mode & 0o7777 == 0o750
    fresh = tmp_path / "fresh" / "locks"
    assert finish(wrapper(fresh, "--devices", "0", cmd=["true"]))[0] == 0
    assert _os.stat(fresh).st_mode & 0o7777 == 0o1777  # made here: shared with the machine's users
    afile = tmp_path / "afile"
    afile.write_text("")
    code, err = finish(wrapper(afile, "--devices", "0", cmd=["true"]))
    assert code == 2 and "not a directory" in err and "Traceback" not in err
    for visible, count in (("", "1"), ("0", "2")):
        code, err = finish(wrapper(tmp_path / "l", "--count", count, cmd=["true"], env=clean_env(CUDA_VISIBLE_DEVICES=visible)))
        assert code == 2 and f"the job needs {count}" in err, err
