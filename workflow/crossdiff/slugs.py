"""Safe, stable, reversible slugs for model ids (HF ids like ``Qwen/Qwen2.5-1.5B-Instruct`` or paths).

A slug contains only ``[A-Za-z0-9._-]``, never ``/``, never ``..``, never starts with ``.`` or ``-``,
and is at most ~80 characters. An id that is already safe is its own slug; any other id gets the
sanitised form plus ``-`` and an 8-hex-digit hash of the full id, so ``a/b`` and ``a_b`` never
collide. The slug table (TSV: ``slug<TAB>model_id``) maps slugs back to ids.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_MAX = 64


def is_safe(slug: str) -> bool:
    return bool(_SAFE.match(slug)) and ".." not in slug and len(slug) <= _MAX + 9


def slugify(model_id: str) -> str:
    """A path- and wildcard-safe slug of ``model_id``; identity for already-safe short ids."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise CrossdiffError(f"model id must be a non-empty string, got {model_id!r}")
    if is_safe(model_id) and len(model_id) <= _MAX:
        return model_id
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id.strip())
    base = re.sub(r"\.{2,}", ".", base)
    base = base.lstrip("._-")[:_MAX].rstrip("._-") or "model"
    digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:8]
    return f"{base}-{digest}"


def read_slug_table(path: str | os.PathLike) -> dict[str, str]:
    """slug -> model_id from a TSV written by :func:`write_slug_table` (empty dict if absent)."""
    p = Path(path)
    if not p.exists():
        return {}
    table: dict[str, str] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip() or (n == 1 and line == "slug\tmodel_id"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise CrossdiffError(f"{p}:{n}: expected 'slug<TAB>model_id', got {line!r}")
        slug, model_id = parts
        if slugify(model_id) != slug:
            raise CrossdiffError(f"{p}:{n}: slug {slug!r} does not match model id {model_id!r} (expected {slugify(model_id)!r})")
        table[slug] = model_id
    return table


def write_slug_table(model_ids, path: str | os.PathLike, merge: bool = True) -> dict[str, str]:
    """Write slug -> model_id for ``model_ids`` (merged with an existing table); returns the table."""
    table = read_slug_table(path) if merge else {}
    for model_id in model_ids:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in model_id):  # would split the TSV's line or column
            raise CrossdiffError(f"{path}: model id {model_id!r} holds a control character (newline, tab, ...); "
                                 f"expected a hub id or path on one line")
        slug = slugify(model_id)
        if table.get(slug, model_id) != model_id:
            raise CrossdiffError(f"{path}: slug {slug!r} already maps to {table[slug]!r}, not {model_id!r}")
        table[slug] = model_id
    with atomic_path(path) as tmp:
        tmp.write_text("slug\tmodel_id\n" + "".join(f"{s}\t{m}\n" for s, m in sorted(table.items())))
    return table


def unslug(slug: str, path: str | os.PathLike) -> str:
    table = read_slug_table(path)
    if slug not in table:
        raise CrossdiffError(f"{path}: no model id for slug {slug!r} (known: {', '.join(sorted(table)) or 'none'})")
    return table[slug]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="slug table (TSV: slug, model_id)")
    p.add_argument("model_ids", nargs="+", help="model ids to register")


def run(args: argparse.Namespace) -> None:
    table = write_slug_table(args.model_ids, args.output)
    for slug, model_id in sorted(table.items()):
        print(f"{slug}\t{model_id}")
