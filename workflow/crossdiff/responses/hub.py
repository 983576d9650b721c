"""The leaderboard collector's side of the Hugging Face Hub: which models, listings, downloads, errors.

The models to collect (a models-list file, or the version's contents dataset), a repo's file listing
(``HfApi.list_repo_tree``, following the Hub's pages) and one file's download (``hf_hub_download``),
each retried on 429/5xx and connection errors with exponential backoff (``Retry-After`` honoured,
:func:`with_retries`); a failure that stays is turned into a :class:`ModelFailed` with a message a
user can act on (:func:`classify`: gated, not found, HTTP, network), with the token scrubbed from it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import time
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table
from crossdiff.responses.lb_settings import ModelFailed, Settings

_RETRY_STATUS = (429, 500, 502, 503, 504)


# ---------------------------------------------------------------------------------- errors, retries
def _status(exc: BaseException) -> tuple[int | None, object]:
    """HTTP status and response of the first HTTP error in ``exc``'s cause/context chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        resp = getattr(exc, "response", None)
        code = getattr(resp, "status_code", None)
        if isinstance(code, int):
            return code, resp
        exc = exc.__cause__ or exc.__context__
    return None, None


def _is_connection_error(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "RemoteProtocolError",
                    "ReadError", "NetworkError", "WriteError", "PoolTimeout") or isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"(?i)(bearer\s+)[A-Za-z0-9_\-.]+", r"\1***", text)


def classify(exc: BaseException, repo: str, token: str | None) -> ModelFailed:
    """A permanent failure with a message a user can act on."""
    if isinstance(exc, (ModelFailed,)):
        return exc
    if isinstance(exc, CrossdiffError):
        return ModelFailed("bad_file", str(exc))
    code, _ = _status(exc)
    kind_name = type(exc).__name__
    gated = any(type(e).__name__ == "GatedRepoError" for e in _chain(exc))
    url = f"https://huggingface.co/datasets/{repo}"
    if gated or code in (401, 403):
        if not token:
            return ModelFailed("gated", f"{repo} is a gated dataset and HF_TOKEN is not set: accept its terms at {url} "
                                        f"and export HF_TOKEN=<a read token of that account>")
        return ModelFailed("gated", f"{repo} is a gated dataset and the token in HF_TOKEN has no access to it "
                                    f"(HTTP {code}): accept its terms at {url} with the token's account")
    if code == 404 or kind_name in ("RepositoryNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError"):
        what = "file" if "Entry" in kind_name else "dataset repo"
        return ModelFailed("not_found", f"{what} not found: {repo} (HTTP 404; the model was not evaluated by this "
                                        f"leaderboard version, or its name differs)")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if code is not None:
        return ModelFailed("http", f"{repo}: HTTP {code} after retries: {scrub(first, token)}")
    if _is_connection_error(exc):
        return ModelFailed("network", f"{repo}: cannot reach the Hub ({kind_name}: {scrub(first, token)})")
    return ModelFailed("error", f"{repo}: {kind_name}: {scrub(first, token)}")


def _chain(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def with_retries(fn, s: Settings, sleep=time.sleep):
    """Call ``fn()``; retry on 429/5xx/connection errors with exponential backoff (Retry-After wins)."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            code, resp = _status(exc)
            transient = code in _RETRY_STATUS or (code is None and _is_connection_error(exc))
            if not transient or attempt >= s.max_retries:
                raise
            wait_s = min(s.backoff_max, s.backoff_base * (2 ** attempt))
            retry_after = getattr(resp, "headers", {}).get("Retry-After") if resp is not None else None
            if retry_after:
                with contextlib.suppress(ValueError):
                    wait_s = min(s.backoff_max, max(wait_s, float(retry_after)))
            attempt += 1
            sleep(wait_s)


# ---------------------------------------------------------------------------------- models
def read_models_list(path) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise CrossdiffError(f"{p}: models list not found")
    if p.suffix in (".txt", ".lst", ""):
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    df = read_table(p, "models list")
    for col in ("model_id", "fullname", "model"):
        if col in df.columns:
            return [str(x).strip() for x in df[col].drop_nulls().to_list() if str(x).strip()]
    raise CrossdiffError(f"{p}: models list needs a 'model_id' or 'fullname' column; found {', '.join(df.columns)}")


def models_from_contents(s: Settings, api, token, cache_dir: Path) -> list[str]:
    files = with_retries(lambda: api.list_repo_files(s.contents_repo, repo_type="dataset", revision=s.revision), s)
    parquets = sorted(f for f in files if fnmatch.fnmatch(f, "data/*.parquet"))
    if not parquets:
        raise CrossdiffError(f"{s.contents_repo}: no data/*.parquet file; pass --models-list instead")
    frames = []
    for f in parquets:
        local = download(s.contents_repo, f, s, cache_dir / "_contents", token)
        frames.append(pl.read_parquet(local))
    df = pl.concat(frames, how="diagonal_relaxed")
    if s.contents_column not in df.columns:
        raise CrossdiffError(f"{s.contents_repo}: no column {s.contents_column!r} (responses.contents_column); "
                             f"found {', '.join(df.columns[:20])}")
    return [str(x) for x in df[s.contents_column].drop_nulls().to_list()]


def dedupe_models(models: list[str]) -> tuple[list[str], list[str]]:
    seen, out, dups = set(), [], []
    for m in models:
        m = m.strip()
        if m in seen:
            dups.append(m)
        else:
            seen.add(m)
            out.append(m)
    return out, dups


# ---------------------------------------------------------------------------------- listing, downloads
def list_files(api, repo: str, s: Settings) -> dict[str, int | None]:
    """path -> size of every file in a repo (the Hub pages long listings; huggingface_hub follows them)."""
    def listing():
        return {e.path: getattr(e, "size", None) for e in api.list_repo_tree(repo, repo_type="dataset", revision=s.revision,
                                                                             recursive=True)
                if type(e).__name__ == "RepoFile"}
    return with_retries(listing, s)


def download(repo: str, filename: str, s: Settings, local_dir: Path, token) -> Path:
    """One file of a dataset repo, to ``local_dir``/``filename`` (retried like every Hub request)."""
    from huggingface_hub import hf_hub_download

    return Path(with_retries(lambda: hf_hub_download(repo, filename, repo_type="dataset", revision=s.revision,
                                                      local_dir=local_dir, token=token, endpoint=s.endpoint), s))
