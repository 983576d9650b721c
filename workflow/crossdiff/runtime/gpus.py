"""``crossdiff gpu-run``: give a job its own GPU(s) on a workstation, then run it.

Snakemake counts a ``gpu`` resource (``--resources gpu=2`` caps how many GPU jobs run at once) but
never tells a job WHICH GPU to use: two jobs would both train on GPU 0. Rules that declare
``resources: gpu=N`` therefore run their command through this wrapper::

    crossdiff gpu-run [--devices auto|0,1] [--count N] [--lock-dir DIR] [--wait-timeout S] -- CMD ARGS...

It takes N distinct device slots, sets ``CUDA_VISIBLE_DEVICES`` to them, runs CMD as a child
(forwarding SIGTERM/SIGINT/SIGHUP, returning its exit status, 128+N if signal N ended it)
and releases the slots when CMD ends.

Slots are race-free: one lock file per device in the lock directory, taken with a non-blocking
``fcntl.flock``. The kernel drops such a lock when the last process holding the file open ends,
however it ends (SIGKILL, crash, power-off of the process), so a dead job never keeps a GPU. The
lock file descriptors are inherited by CMD: the slot stays taken as long as the job runs, even if
the wrapper alone is killed (CMD is then sent SIGTERM, see ``PR_SET_PDEATHSIG``). While every
candidate device is busy the wrapper polls, saying once (and every minute) what it waits for.

Which devices are candidates (``--devices``, default ``auto``):

- a list (``0,1`` or ``2,3`` for a subset): exactly these. They need not exist, so the locking can
  be tested on machines without GPUs ("virtual" devices);
- ``auto``: ``CUDA_VISIBLE_DEVICES`` if set (see below), else ``$CROSSDIFF_GPUS`` (a comma list),
  else the GPUs that ``nvidia-smi -L`` lists (torch is not imported: too slow to start), else an
  error.

Pass-through (no locking, CMD runs with the environment as it is):

- inside a SLURM job (``SLURM_JOB_ID`` set): SLURM already gave the job its GPUs;
- ``--devices auto`` and ``CUDA_VISIBLE_DEVICES`` already set to exactly N devices (fewer, or empty,
  is an error: the job would run on fewer GPUs than it needs): a scheduler
  (PBS, LSF, Kubernetes, ...) chose them. When it holds MORE than N devices (a user restricting
  snakemake to some GPUs, or a multi-GPU allocation running several local jobs), they are the
  candidates and the wrapper locks among them.

Devices are numbered as nvidia-smi numbers them: ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set unless
already set. Jobs that need no GPU never call it.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from crossdiff.errors import CrossdiffError

ENV_DEVICES = "CROSSDIFF_GPUS"
ENV_LOCK_DIR = "CROSSDIFF_GPU_LOCK_DIR"
PREFIX = "crossdiff gpu-run"


def default_lock_dir() -> Path:
    """One directory per machine (shared by every snakemake run on it), unless configured."""
    env = os.environ.get(ENV_LOCK_DIR)
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / "crossdiff-gpu-locks"


def _say(msg: str) -> None:
    print(f"{PREFIX}: {msg}", file=sys.stderr, flush=True)


def parse_devices(text: str) -> list[str]:
    """'0,1, 3' -> ['0', '1', '3']; device names may be indices or GPU UUIDs (GPU-...)."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if not re.fullmatch(r"[A-Za-z0-9_.:-]+", d)]
    if bad:
        raise CrossdiffError(f"bad device name(s) {bad} in '{text}': use indices like 0,1 or GPU UUIDs")
    if len(set(devices)) != len(devices):
        raise CrossdiffError(f"device list '{text}' names a device twice")
    return devices


def nvidia_smi_devices() -> list[str] | None:
    """Indices of the GPUs nvidia-smi lists, or None when there is no nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CrossdiffError(f"'nvidia-smi -L' failed: {exc}") from exc
    if proc.returncode != 0:
        raise CrossdiffError(f"'nvidia-smi -L' failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", proc.stdout, flags=re.M)]


@dataclass
class Plan:
    """What the wrapper will do: pass through (why), or lock ``count`` of ``candidates``."""

    passthrough: str | None = None
    candidates: list[str] = field(default_factory=list)
    source: str = ""


def plan(devices: str, count: int, env: dict[str, str] | None = None) -> Plan:
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        return Plan(passthrough=f"SLURM job {env['SLURM_JOB_ID']} (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')!s})")
    if devices.strip().lower() != "auto":
        return Plan(candidates=parse_devices(devices), source="--devices")
    if "CUDA_VISIBLE_DEVICES" in env:
        visible = parse_devices(env["CUDA_VISIBLE_DEVICES"]) if env["CUDA_VISIBLE_DEVICES"].strip() else []
        if len(visible) < count:  # empty or too few: the job would run on fewer GPUs than it needs, or on none
            raise CrossdiffError(
                f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} makes {len(visible)} device(s) visible, but the "
                f"job needs {count}; unset it, list at least {count} device(s), or lower the job's gpu count")
        if len(visible) == count:
            return Plan(passthrough=f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} already set")
        return Plan(candidates=visible, source="CUDA_VISIBLE_DEVICES")
    if env.get(ENV_DEVICES, "").strip():
        return Plan(candidates=parse_devices(env[ENV_DEVICES]), source=ENV_DEVICES)
    found = nvidia_smi_devices()
    if found is None:
        raise CrossdiffError(
            f"--devices auto: no GPU found (no CUDA_VISIBLE_DEVICES, no ${ENV_DEVICES}, no nvidia-smi); "
            "give the devices, e.g. --devices 0,1"
        )
    if not found:
        raise CrossdiffError("--devices auto: 'nvidia-smi -L' lists no GPU")
    return Plan(candidates=found, source="nvidia-smi")


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{device}.lock"


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # someone else's lock file: flock works on a read-only fd
    try:
        os.fchmod(fd, 0o666)  # let other users of the machine lock it too
    except OSError:
        pass
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def try_acquire(lock_dir: Path, candidates: list[str], count: int) -> dict[str, int] | None:
    """Lock ``count`` free devices (first free ones in order) or none at all; device -> fd."""
    taken: dict[str, int] = {}
    for device in candidates:
        fd = _open_lock(_lock_path(lock_dir, device))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue
            raise
        taken[device] = fd
        if len(taken) == count:
            return taken
    release(taken)  # never sit on part of a multi-GPU request
    return None


def release(taken: dict[str, int]) -> None:
    for fd in taken.values():
        try:
            os.close(fd)  # closing our last descriptor drops the flock
        except OSError:
            pass


def _note_holder(fd: int, device: str) -> None:
    """Write who holds the slot into its lock file (for the waiting message; informational only)."""
    try:
        text = f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%H:%M:%S')}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError:
        pass


def acquire(lock_dir: Path, candidates: list[str], count: int, wait_timeout: float | None, poll: float) -> dict[str, int]:
    if count < 1:
        raise CrossdiffError(f"--count must be at least 1, got {count}")
    if count > len(candidates):
        raise CrossdiffError(f"--count {count} but only {len(candidates)} device(s) configured: {','.join(candidates)}")
    if lock_dir.exists() and not lock_dir.is_dir():
        raise CrossdiffError(f"--lock-dir {lock_dir}: exists but is not a directory; give a directory for the GPU locks")
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:  # a folder made here is shared by the machine's users; an existing one keeps its owner's mode
            lock_dir.chmod(0o1777)
        except OSError:
            pass
    start = time.monotonic()
    next_message = start
    while True:
        taken = try_acquire(lock_dir, candidates, count)
        if taken is not None:
            for device, fd in taken.items():
                _note_holder(fd, device)
            return taken
        now = time.monotonic()
        if wait_timeout is not None and now - start >= wait_timeout:
            raise CrossdiffError(f"no {count} free GPU(s) among {','.join(candidates)} after {wait_timeout:g} s")
        if now >= next_message:
            busy = "; ".join(f"{d}: {_holder(_lock_path(lock_dir, d))}" for d in candidates)
            _say(f"waiting for {count} of GPU(s) {','.join(candidates)} (busy: {busy}; locks in {lock_dir})")
            next_message = now + 60
        time.sleep(poll)


def _parent_death_signal(sig: int):
    """preexec_fn: the child gets ``sig`` if the wrapper dies (Linux only; else a no-op)."""

    def set_it():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return set_it


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _in_terminal_foreground() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def run_child(cmd: list[str], env: dict[str, str], keep_fds: tuple[int, ...] = ()) -> int:
    """Run cmd, forwarding signals; its exit code, or 128+N when a signal N ended it."""
    if not cmd:
        raise CrossdiffError("no command given: crossdiff gpu-run [options] -- CMD ARGS...")
    child: subprocess.Popen | None = None
    pending: list[int] = []

    # In the terminal's foreground group (an interactive run), the child stays in our process group,
    # so it can read the terminal (a debugger) and gets Ctrl-C from the terminal itself: forwarding
    # SIGINT/SIGHUP too would deliver them twice. Otherwise (snakemake, batch) the child gets its
    # own group and every signal is forwarded exactly once.
    foreground = _in_terminal_foreground()
    forwarded = (signal.SIGTERM,) if foreground else FORWARDED

    def forward(signum, _frame):
        if signum not in forwarded:
            return  # the terminal sent it to the child as well
        if child is None:
            pending.append(signum)  # arrived before the child exists: deliver once it does
            return
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            child = subprocess.Popen(
                cmd,
                env=env,
                pass_fds=keep_fds,
                process_group=None if foreground else 0,
                preexec_fn=_parent_death_signal(signal.SIGTERM),
            )
        except FileNotFoundError as exc:
            raise CrossdiffError(f"command not found: {cmd[0]}") from exc
        except PermissionError as exc:
            raise CrossdiffError(f"cannot run {cmd[0]}: {exc}") from exc
        for signum in pending:
            child.send_signal(signum)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        default="auto",
        help="GPUs to choose from: 'auto' (CUDA_VISIBLE_DEVICES, else $CROSSDIFF_GPUS, else nvidia-smi -L) "
        "or a list such as 0,1 or 2,3 (default: auto)",
    )
    parser.add_argument("--count", type=int, default=1, help="how many GPUs the command needs (default: 1)")
    parser.add_argument(
        "--lock-dir",
        type=Path,
        default=None,
        help=f"where the per-GPU lock files live; share it between all runs on the machine "
        f"(default: ${ENV_LOCK_DIR}, else {default_lock_dir()})",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        help="give up (exit status 2) after waiting this many seconds for free GPUs (default: wait forever)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between tries while waiting (default: 2)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")


def execute(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise CrossdiffError("no command given: crossdiff gpu-run [options] -- CMD ARGS...")
    env = dict(os.environ)
    if args.count == 0:  # a job that needs no GPU (per-model resources may mix 0 and N in one rule)
        env["CUDA_VISIBLE_DEVICES"] = ""
        _say("pass-through: --count 0 (no GPU; CUDA_VISIBLE_DEVICES emptied)")
        return run_child(cmd, env)
    p = plan(args.devices, args.count)
    if p.passthrough is not None:
        _say(f"pass-through: {p.passthrough}")
        return run_child(cmd, env)
    lock_dir = args.lock_dir or default_lock_dir()
    taken = acquire(lock_dir, p.candidates, args.count, args.wait_timeout, args.poll_interval)
    try:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
        # nvidia-smi numbers GPUs in PCI bus order; CUDA's default order (fastest first) may differ
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        _say(f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} (from {p.source}: {','.join(p.candidates)})")
        return run_child(cmd, env, keep_fds=tuple(taken.values()))
    finally:
        release(taken)


def run(args: argparse.Namespace) -> None:
    """Subcommand entry point: exits with the command's exit status."""
    code = execute(args)
    if code != 0:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """``python -m crossdiff.runtime.gpus [options] -- CMD`` (same as ``crossdiff gpu-run``)."""
    parser = argparse.ArgumentParser(prog="crossdiff gpu-run", description="run a command on its own GPU(s)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return execute(args)
    except CrossdiffError as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
