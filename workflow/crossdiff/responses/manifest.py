"""The leaderboard collector's manifest: what a killed or repeated collection resumes from.

An append-only JSONL, one fsync'ed line per finished model (done or failed, with its error); the last
line per model wins and a line torn by a kill is ignored. A done model counts for a later run only
under the same :func:`collection_key` (the settings that determine its extracted table, and the item
table it was checked against).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from crossdiff.responses.lb_settings import Settings


class Manifest:
    """Append-only JSONL of per-model outcomes; the last line per model wins; a torn last line is ignored."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def read(self) -> dict[str, dict]:
        last: dict[str, dict] = {}
        if not self.path.exists():
            return last
        with open(self.path) as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(rec, dict) and "model_id" in rec:
                    last[rec["model_id"]] = rec
        return last

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, sort_keys=True) + "\n"
        with self.lock:
            # a previous run killed mid-line left no newline: start on a fresh line
            prefix = ""
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    prefix = "" if fh.read(1) == b"\n" else "\n"
            with open(self.path, "a") as fh:
                fh.write(prefix + line)
                fh.flush()
                os.fsync(fh.fileno())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collection_key(s: Settings, expected: dict | None) -> str:
    """The key a done model's manifest record must carry to be reused by this collection."""
    # the item table's sizes decide which files are usable: part of what a done model was checked against
    return s.extraction_key() + ("" if not expected or not s.check_sizes else "-" + hashlib.sha256(
        json.dumps(sorted((k, sorted(v) if isinstance(v, set) else v) for k, v in expected.items())).encode()).hexdigest()[:8])
