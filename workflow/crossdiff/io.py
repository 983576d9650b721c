"""Atomic writes and table readers with clear errors.

Every output goes to a temporary path beside its destination and is renamed into place only
when complete, so a killed job never leaves a half file that looks finished. Before the rename
it gets the permissions of a file (or directory tree) created normally under the user's umask:
``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask, and a private result on a shared
cluster is one nobody else in the lab can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import polars as pl

from crossdiff.errors import CrossdiffError


def current_umask() -> int:
    """The process umask, read without changing it (Linux's /proc; elsewhere set and restored)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (recursively, for a directory) the modes of a normal creation under the umask.

    Directories get 0o777 & ~umask, files 0o666 & ~umask (0o777 & ~umask where the owner may
    execute them). Symbolic links are left alone.
    """
    mask = current_umask()

    def fix(p: str) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            mode = 0o777
        else:
            mode = 0o777 if st.st_mode & stat.S_IXUSR else 0o666
        os.chmod(p, mode & ~mask)

    fix(os.fspath(path))
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                fix(os.path.join(root, name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, remove it on error.

    With ``directory=True`` the temporary path is an empty directory, replaced as a whole.
    The result gets the umask's normal permissions (see ``publish_modes``).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        publish_modes(tmp)
        if directory:
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                dest.rename(old)
                tmp.rename(dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(dest)
        else:
            os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def write_csv(df: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.write_csv(tmp)


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_jsonl(rows, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def iter_jsonl(path: str | os.PathLike):
    """Yield (line number, record) for each non-empty line; a bad line raises CrossdiffError naming it."""
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CrossdiffError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None


def read_rows(path: str | os.PathLike, what: str = "items file") -> list[dict]:
    """Rows of one .jsonl / .json (a list, or {"examples": [...]}) / .parquet file, as dicts."""
    path = Path(path)
    if not path.exists():
        raise CrossdiffError(f"{path}: {what} not found")
    if path.suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data.get("examples", [])
    return [row for _, row in iter_jsonl(path)]


def read_table(path: str | os.PathLike, what: str = "table") -> pl.DataFrame:
    """Read a CSV, TSV, parquet or JSONL file, raising CrossdiffError naming the file when it fails."""
    p = Path(path)
    if not p.exists():
        raise CrossdiffError(f"{p}: {what} not found (expected a CSV, TSV, parquet or JSONL file)")
    if p.is_dir():
        raise CrossdiffError(f"{p}: {what} is a directory, expected a file")
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(p)
        if suffix in (".csv", ".csv.gz"):
            return pl.read_csv(p, infer_schema_length=10000)
        if suffix in (".tsv", ".tsv.gz"):
            return pl.read_csv(p, separator="\t", infer_schema_length=10000)
        if suffix in (".jsonl", ".ndjson"):
            try:
                return pl.read_ndjson(p)
            except Exception:
                _locate_bad_jsonl_line(p, what)  # name the line when one is to blame
                raise
    except CrossdiffError:
        raise
    except Exception as exc:  # polars raises many types; all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossdiffError(f"{p}: cannot read {what}: {first}") from exc
    raise CrossdiffError(
        f"{p}: unknown {what} format '{suffix or '(no extension)'}'; expected .csv, .tsv, .parquet or .jsonl"
    )


def _locate_bad_jsonl_line(path: Path, what: str) -> None:
    """Raise CrossdiffError naming the first line of a JSONL table that is not a JSON object."""
    for n, rec in iter_jsonl(path):  # raises on the first line that is not JSON, with its number
        if not isinstance(rec, dict):
            raise CrossdiffError(f"{path}: line {n}: expected a JSON object (one {what} row), got {type(rec).__name__}")


def _is_jsonl(path) -> bool:
    p = Path(path)
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    return suffix in (".jsonl", ".ndjson")


def row_location(path, index: int) -> str:
    """Where the 0-based data row ``index`` of a table read by ``read_table`` is, in the user's terms.

    CSV/TSV: the file's line (``row 2`` is the first data row, under the header); JSONL: the
    file's line (blank lines, which the reader skips, counted); parquet and others: ``row 1`` is
    the first row.
    """
    p = Path(path)
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    if suffix in (".csv", ".csv.gz", ".tsv", ".tsv.gz"):
        return f"row {index + 2}"
    if _is_jsonl(p) and p.is_file():
        seen = -1
        with open(p) as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    seen += 1
                    if seen == index:
                        return f"line {n}"
    return f"row {index + 1}"


def require_columns(df: pl.DataFrame, columns, path, what: str = "table") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CrossdiffError(
            f"{path}: {what} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(c) for c in df.columns)}"
        )
