"""One trainer per work directory: an owner lock beside it (``<work_dir>.owner``).

A trainer orphaned by a killed snakemake keeps writing checkpoints (and finally the model) while a
rerun starts a second trainer on the same work directory: the two delete each other's checkpoints.
The owner holds an exclusive ``flock`` on the lock file for its lifetime and writes its pid and host
into it. The kernel drops the lock when the process dies (kill -9 included), so the lock of a dead
process is simply taken over; a live owner is a clear error naming its pid and host.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from crossdiff.errors import CrossdiffError


def lock_path(work_dir) -> Path:
    work_dir = Path(work_dir)
    return work_dir.with_name(work_dir.name + ".owner")


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
        raise CrossdiffError(f"{work_dir} is in use by a running trainer: pid {owner.get('pid', '?')} on host "
                             f"{owner.get('host', '?')} (lock {path}); wait for it to end or stop it before "
                             "rerunning") from None
    f.seek(0)
    previous = f.read().strip()
    f.seek(0)
    if previous:
        say(f"{path}: taking over the lock of a trainer that is no longer running ({previous})")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    f.flush()
    return f


def release(f) -> None:
    """Remove the lock file, then give the lock up (a trainer that opened the removed file retries)."""
    Path(f.name).unlink(missing_ok=True)
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


@contextmanager
def owned(work_dir, say=print):
    f = acquire(work_dir, say)
    try:
        yield lock_path(work_dir)
    finally:
        release(f)
