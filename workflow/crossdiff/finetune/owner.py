"""One trainer per work directory: an owner lock beside it (``<work_dir>.owner``).

A trainer orphaned by a killed snakemake keeps writing checkpoints (and finally the model) while a
rerun starts a second trainer on the same work directory: the two delete each other's checkpoints.
The owner holds an exclusive ``flock`` on the lock file for its lifetime and writes its pid and host
into it. The kernel drops the lock when the process dies (kill -9 included), so the lock of a dead
process is simply taken over; a live owner is a clear error naming its pid and host.

The owner's log keeps a second name, ``<work_dir>.log``. Snakemake deletes a job's ``log:`` file
before it runs the job's command, so the rerun whose trainer is then refused would remove the log of
the trainer that keeps running (an orphan of a killed snakemake). While it runs, the owner's output
file (its stdout, when that is a regular file, i.e. the rule's ``> {log} 2>&1``) is hard-linked to
``<work_dir>.log``: the file outlives the deletion of its Snakemake name, the trainer (and its
ranks, which share the file) keep writing to it, and the refusal names it. When the trainer ends with
its Snakemake log still in place, the second name is removed; otherwise it stays as the trainer's
log, and the next owner moves it to ``<work_dir>.previous.log``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
from contextlib import contextmanager
from pathlib import Path

from crossdiff.errors import CrossdiffError


def lock_path(work_dir) -> Path:
    work_dir = Path(work_dir)
    return work_dir.with_name(work_dir.name + ".owner")


def log_path(work_dir) -> Path:
    """The second name of the owner's log (see the module docstring)."""
    work_dir = Path(work_dir)
    return work_dir.with_name(work_dir.name + ".log")


def previous_log_path(work_dir) -> Path:
    work_dir = Path(work_dir)
    return work_dir.with_name(work_dir.name + ".previous.log")


def acquire(work_dir, say=print):
    """Become the owner of ``work_dir`` (returns the open lock file; keep it open) or raise
    CrossdiffError naming the live owner's pid and host."""
    path = lock_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        f = _try(path, work_dir, say)
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous owner removed on release while we opened it
            return f
        f.close()
    raise CrossdiffError(f"{path}: could not take the owner lock of {work_dir}")


def _try(path: Path, work_dir, say):
    f = open(path, "a+")  # noqa: SIM115 - held open for the trainer's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            say(f"warning: {path}: this filesystem gives no file locks ({exc.strerror}); "
                "two trainers on one work directory are not prevented")
            return f
        f.seek(0)
        try:
            owner = json.loads(f.read() or "{}")
        except ValueError:
            owner = {}
        f.close()
        log = f"; its output goes on in {owner['log']}" if owner.get("log") else ""
        raise CrossdiffError(f"{work_dir} is in use by a running trainer: pid {owner.get('pid', '?')} on host "
                             f"{owner.get('host', '?')} (lock {path}{log}); wait for it to end or stop it before "
                             "rerunning") from None
    f.seek(0)
    previous = f.read().strip()
    f.seek(0)
    if previous:
        say(f"{path}: taking over the lock of a trainer that is no longer running ({previous})")
    _record(f, {"pid": os.getpid(), "host": socket.gethostname()})
    return f


def _record(f, owner: dict) -> None:
    f.seek(0)
    f.truncate()
    f.write(json.dumps(owner))
    f.flush()


def _identity(st) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def stdout_file(fd: int = 1) -> tuple[Path, tuple[int, int]] | None:
    """(path, (device, inode)) of the regular file ``fd`` writes to, when it has a name (Linux /proc);
    None for a terminal, a pipe, or a file without a name."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        return (path, _identity(st)) if _identity(os.stat(path)) == _identity(st) else None
    except OSError:
        return None


def _same_file(path: Path, ident) -> bool:
    try:
        return _identity(os.stat(path)) == ident
    except OSError:
        return False


@contextmanager
def kept_log(work_dir, say=print):
    """While the block runs (its caller owns ``work_dir``), this process's log file has a second name,
    ``<work_dir>.log``; yields that path, or None when stdout is no named regular file (or the link
    cannot be made: another filesystem). A log left by an earlier owner becomes ``<work_dir>.previous.log``."""
    name = log_path(work_dir)
    out = stdout_file()
    if (name.exists() or name.is_symlink()) and not (out and _same_file(name, out[1])):
        previous = previous_log_path(work_dir)
        os.replace(name, previous)
        say(f"{previous}: the log of an earlier trainer of {work_dir} (its job log had been removed by a rerun)")
    linked = None
    if out is not None and not _same_file(name, out[1]):
        try:
            os.link(out[0], name)
            linked = name
        except OSError as exc:
            say(f"note: {name}: no second name for this job's log ({exc.strerror}); a rerun started while this "
                "trainer runs would delete its log")
    try:
        yield linked
    finally:
        # the job's log still has its Snakemake name: the second one is not needed; else it is the only one
        if linked is not None and _same_file(out[0], out[1]):
            name.unlink(missing_ok=True)


def release(f) -> None:
    """Remove the lock file, then give the lock up (a trainer that opened the removed file retries)."""
    Path(f.name).unlink(missing_ok=True)
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


@contextmanager
def owned(work_dir, say=print):
    """Own ``work_dir`` for the block, with the log kept under a second name (kept_log)."""
    f = acquire(work_dir, say)
    try:
        with kept_log(work_dir, say) as log:
            if log is not None:
                _record(f, {"pid": os.getpid(), "host": socket.gethostname(), "log": str(log)})
            yield lock_path(work_dir)
    finally:
        release(f)
