"""Start the N ranks of one fine-tuning job with ``accelerate launch`` (torchrun's elastic launcher).

The same command on GPUs and on CPU: ``--multi_gpu`` selects accelerate's multi-process launcher; the
engine (FSDP2 on GPUs, DDP over gloo on CPU) is chosen inside the ranks from TrainingArguments. Each
job gets its own rendezvous port, so several jobs can share a node. SIGTERM/SIGINT are forwarded to
the launcher, which stops the ranks (a SLURM scancel or snakemake's own stop thus ends all of them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from crossdiff.errors import CrossdiffError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` ("" = every interface: a rendezvous other nodes connect to)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when this launcher dies, even by SIGKILL (Linux PR_SET_PDEATHSIG),
    so no rank outlives its job."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def launch_command(n: int, model, train, output, work_dir, s: dict, prompt: dict, port: int | None = None, *,
                   machines: int = 1, machine_rank: str = "0", address: str = "127.0.0.1") -> list[str]:
    """``accelerate launch`` of the ``n`` ranks of a job (all its nodes'). ``machines`` > 1: this is the launcher
    of node ``machine_rank`` (crossdiff.finetune.multinode), static rendezvous at ``address:port`` on node 0."""
    nodes = ["--machine_rank", str(machine_rank), "--rdzv_backend", "static"] if machines > 1 else []
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(n), "--num_machines", str(machines), *nodes,
        "--main_process_ip", address, "--main_process_port", str(port or free_port()),
        "--mixed_precision", "no",  # precision is set by the Trainer (bf16 compute, fp32 master)
        "--dynamo_backend", "no",
        "-m", "crossdiff.cli", "finetune", "--worker",
        "--model", str(model), "--train", str(train), "--output", str(output), "--work-dir", str(work_dir),
        "--settings", json.dumps(s, sort_keys=True), "--prompt", json.dumps(prompt, sort_keys=True),
    ]  # fmt: skip


def launch_ranks(n: int, model, train, output, work_dir, s: dict, prompt: dict) -> None:
    cmd = launch_command(n, model, train, output, work_dir, s, prompt)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    print(f"launching {n} ranks: accelerate launch --multi_gpu --num_processes {n} ...", flush=True)
    rc = run_forwarding_signals(cmd, env)
    if rc != 0:
        raise CrossdiffError(f"distributed fine-tune ({n} ranks) failed with exit status {rc}; see the log above")


def run_forwarding_signals(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` (a launcher: accelerate, or srun starting one per node), forwarding SIGTERM/SIGINT to it and
    killing it with this process; returns its exit status."""
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        proc.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
    return rc
