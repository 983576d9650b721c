"""The console summary of failed jobs, printed by the Snakefile's ``onerror`` handler.

Every rule sends its command's output to its own log file, so on the console Snakemake shows only
"Error in rule X ... log: PATH (check log file(s) for error details)". This module reads
Snakemake's main log for those blocks, takes the error line out of each failed job's log (the
``crossdiff <command>: error: ...`` line, or the exception line of the last Python traceback) and
prints one line per failed job, with the log to read for the rest. Progress bars (tqdm's
carriage-return updates, ``50%|#####     | 5/10 [00:01<00:01, 4.2it/s]``) are never taken for the
error: a bar printed after a traceback, or glued in front of it, is skipped.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_ERROR_IN_RULE = re.compile(r"^Error in rule (\S+?):\s*$")
_FIELD = re.compile(r"^\s{4}(\w+): (.*)$")
_CLI_ERROR = re.compile(r"^crossdiff [\w-]+: error: ")
_MAX_CHARS = 600
# tqdm's bar ("50%|#####     |") and its bracket ("[00:01<00:01, 4.21it/s]", "[00:00, 12.3 examples/s]")
_BAR = re.compile(r"\d{1,3}%\|")
_BRACKET = re.compile(r"\[(?:\d+:)?\d{1,2}:\d{2}(?:<[^\]\[,]*)?,[^\]\[]*/[^\]\[]*\]")
# Snakemake's RuleException just before a job's "Error in rule" block carries the shell's status
_STATUS = re.compile(r"(?:returned non-zero exit status (-?\d+)|died with <Signals\.(\w+): \d+>)\.?\s*$")


@dataclass
class FailedJob:
    rule: str
    wildcards: str = ""
    logs: list[str] = field(default_factory=list)
    signal: str | None = None  # e.g. "SIGKILL" when the command was killed by a signal


def signal_of(status: int) -> str | None:
    """The signal behind a shell exit status (128 + N, or -N from Python), else None."""
    import signal as _signal

    n = -status if status < 0 else status - 128 if 128 < status < 128 + 65 else None
    if n is None:
        return None
    try:
        return _signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def failed_jobs(main_log: str) -> list[FailedJob]:
    """The failed jobs of a Snakemake main log, in order (each job once)."""
    jobs: list[FailedJob] = []
    current: FailedJob | None = None
    killed_by: str | None = None
    for line in main_log.splitlines():
        st = _STATUS.search(line)
        if st:
            killed_by = st.group(2) or signal_of(int(st.group(1)))
            continue
        m = _ERROR_IN_RULE.match(line)
        if m:
            current = FailedJob(m.group(1), signal=killed_by)
            killed_by = None
            jobs.append(current)
            continue
        if current is None:
            continue
        f = _FIELD.match(line)
        if not f:
            if line.strip() and not line.startswith(" "):
                current = None  # the block ended
            continue
        key, value = f.groups()
        if key == "wildcards":
            current.wildcards = value.strip()
        elif key == "log":
            value = value.split(" (check log file", 1)[0]
            current.logs = [v.strip() for v in value.split(", ") if v.strip()]
    unique: dict[tuple, FailedJob] = {}
    for j in jobs:  # a retried job fails several times: report it once
        unique.setdefault((j.rule, j.wildcards, tuple(j.logs)), j)
    return list(unique.values())


def without_progress(segment: str) -> str:
    """``segment`` without a tqdm progress bar: "" when it is one, the text after it when a bar was
    left unfinished in front of other output (a crash mid-bar glues the traceback to it)."""
    last = None
    for last in _BRACKET.finditer(segment):
        pass
    if last is not None:
        return segment[last.end():].strip()
    return "" if _BAR.search(segment) else segment.rstrip()


def log_lines(text: str) -> list[str]:
    """The non-empty lines of a log as a terminal would leave them, progress bars left out: each
    carriage-return update is its own segment, and segments that are progress bars are dropped."""
    out = []
    for raw in text.split("\n"):
        for segment in raw.split("\r"):
            line = without_progress(segment)
            if line.strip():
                out.append(line)
    return out


def error_line(log_path: str | Path, workdir: str | Path = ".") -> str:
    """The line of a job log that says what went wrong: the last ``crossdiff <command>: error:``
    line, else the exception line of the last traceback, else the last line that is not a
    progress bar."""
    p = Path(log_path)
    if not p.is_absolute():
        p = Path(workdir) / p
    try:
        lines = log_lines(p.read_text(errors="replace"))
    except OSError as exc:
        return f"(log not readable: {exc.strerror or exc})"
    if not lines:
        return "(the log is empty)"
    cli = [line for line in lines if _CLI_ERROR.match(line)]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if cli:
        line = cli[-1]
    elif tracebacks:
        after = lines[tracebacks[-1] + 1:]
        line = next((x for x in after if not x.startswith((" ", "\t"))), lines[-1])
    else:
        line = lines[-1]
    return line if len(line) <= _MAX_CHARS else line[:_MAX_CHARS] + " ..."


def summary(main_logs, workdir: str | Path = ".") -> str:
    """One line per failed job of the run whose main log(s) are ``main_logs``; empty when none is found."""
    jobs: list[FailedJob] = []
    for path in [main_logs] if isinstance(main_logs, (str, Path)) else list(main_logs or []):
        try:
            jobs += failed_jobs(Path(path).read_text(errors="replace"))
        except OSError:
            continue
    if not jobs:
        return ""
    out = [f"crossdiff: {len(jobs)} job(s) failed:"]
    for j in jobs:
        where = f"{j.rule} ({j.wildcards})" if j.wildcards else j.rule
        if not j.logs:
            out.append(f"  {where}: no log file (see Snakemake's message above)")
            continue
        for log in j.logs:
            line = error_line(log, workdir)
            if j.signal:  # a killed job's last log line is progress, not its error
                line = f"killed by {j.signal} (its log ends: {line})"
            out.append(f"  {where}: {line}")
            out.append(f"      full log: {log}")
    return "\n".join(out)


def print_summary(main_logs, workdir: str | Path = ".", stream=None) -> None:
    """The ``onerror`` handler's body; never raises (the run has failed already)."""
    try:
        text = summary(main_logs, workdir)
    except Exception as exc:  # noqa: BLE001 - a summary must not hide Snakemake's own error
        text = f"crossdiff: could not summarise the failed jobs ({type(exc).__name__}: {exc})"
    if text:
        print(text, file=stream or sys.stderr, flush=True)
