"""A tiny fake of the Hugging Face Hub for tests: loopback only, bounded, with fault injection.

It serves exactly the endpoints ``huggingface_hub`` (2.x) calls for the leaderboard collector:

- ``GET /api/datasets/{repo}/tree/{revision}[/{path}]`` (``HfApi.list_repo_files`` ->
  ``list_repo_tree``): a JSON list of ``{"type": "file", "path", "size", "oid"}`` (``lfs`` too for
  LFS files) and ``{"type": "directory", "path", "oid"}`` entries; with ``page_size`` set, paginated
  like the real Hub (which pages tree listings of 1,000 entries): a ``Link: <...&cursor=N>;
  rel="next"`` header, followed by ``huggingface_hub``'s paginator;
- ``GET /api/datasets/{repo}[/revision/{revision}]`` (``HfApi.dataset_info``): id, sha, siblings;
- ``HEAD``/``GET /datasets/{repo}/resolve/{revision}/{path}`` (``hf_hub_download``): ``X-Repo-Commit``
  (40 hex digits; hf_hub_download refuses a response without it), ``ETag`` and ``Content-Length``.
  Files whose name ends with an ``lfs_suffixes`` entry answer like LFS files on the real Hub:
  a 302 to a content-addressed ``/cdn-lfs/...`` path on the same host, carrying
  ``X-Linked-Etag``/``X-Linked-Size``; ``huggingface_hub`` follows same-host redirects.

Errors carry the ``X-Error-Code`` header the real Hub sends (``RepoNotFound``, ``GatedRepo``,
``EntryNotFound``), which is what ``huggingface_hub`` turns into ``RepositoryNotFoundError`` /
``GatedRepoError`` / ``EntryNotFoundError``.

Fault injection per repo (:class:`FakeRepo`): ``fail_first`` requests answered 500, then normal;
``rate_limit_first`` requests answered 429 with ``Retry-After``; ``gated`` (anonymous -> 401,
a token without access -> 403, both ``X-Error-Code: GatedRepo``); ``delay`` seconds before a
file body is sent; ``hold``: the first request for one of its files (HEAD or GET) is held without
an answer, ``hub.holding`` is set, and once the test calls ``hub.release()`` the connection is closed
unanswered (nothing counted): a test can kill a client at exactly that point, with no timing race.
Missing repos answer 404 ``RepoNotFound``.

Counting: ``hub.downloads[(repo, path)]`` counts file bodies sent completely (GET 200), and
``hub.requests`` logs ``(method, path, status)`` for every request. The server never records
request headers, so a token cannot leak through it.

Bounded: binds 127.0.0.1 only, answers 503 after ``max_requests``, 10 s socket timeout, daemon
threads; use it as a context manager (or call :meth:`FakeHub.close`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False
    fail_first: int = 0          # answer this many requests with 500 first
    rate_limit_first: int = 0    # answer this many requests with 429 first
    retry_after: int = 1
    delay: float = 0.0           # seconds before a file body is sent
    hold: bool = False           # hold the first file request unanswered until hub.release()
    sha: str = ""
    _seen: int = field(default=0, repr=False)

    def __post_init__(self):
        if not self.sha:
            h = hashlib.sha1()
            for p in sorted(self.files):
                h.update(p.encode())
                h.update(self.files[p])
            self.sha = h.hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, repos: dict[str, FakeRepo] | None = None, tokens: set[str] | None = None,
                 max_requests: int = 5000, lfs_suffixes: tuple[str, ...] = (".parquet",), page_size: int | None = None):
        self.repos: dict[str, FakeRepo] = dict(repos or {})
        self.tokens = set(tokens or ())      # tokens with access to gated repos
        self.max_requests = max_requests
        self.lfs_suffixes = lfs_suffixes
        self.page_size = page_size          # entries per tree-listing page (None: one page)
        self.downloads: Counter = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.holding = threading.Event()    # set while a repo's ``hold`` request waits
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def release(self) -> None:
        """Let a held request go (it is closed unanswered)."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and contains in p)

    # ------------------------------------------------------------------ request handling
    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

        return Handler

    def _send(self, h, method, status, body: bytes = b"", headers: dict | None = None, delay: float = 0.0,
              count_key=None):
        path = urlsplit(h.path).path
        with self.lock:
            self.requests.append((method, unquote(path), status))
        h.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if method == "GET" and body:
            if delay:
                time.sleep(delay)
            h.wfile.write(body)
            h.wfile.flush()
            if count_key is not None:
                with self.lock:
                    self.downloads[count_key] += 1

    def _error(self, h, method, status, code=None, message="", extra=None):
        body = json.dumps({"error": message or code or str(status)}).encode()
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        headers.update(extra or {})
        self._send(h, method, status, body if method == "GET" else b"", headers)

    def _handle(self, h, method):
        with self.lock:
            total = len(self.requests)
        if total >= self.max_requests:
            return self._error(h, method, 503, message="fake hub request limit reached")
        path = unquote(urlsplit(h.path).path)
        if path.startswith("/api/datasets/"):
            return self._api(h, method, path[len("/api/datasets/"):])
        if path.startswith("/datasets/"):
            return self._resolve(h, method, path[len("/datasets/"):])
        if path.startswith("/cdn-lfs/"):
            return self._cdn(h, method, path[len("/cdn-lfs/"):])
        return self._error(h, method, 404, message=f"unknown path {path}")

    def _split_repo(self, rest: str) -> tuple[str, str]:
        parts = rest.split("/", 2)
        return "/".join(parts[:2]), (parts[2] if len(parts) > 2 else "")

    def _gate(self, h, method, repo_id: str) -> FakeRepo | None:
        """Apply faults and access rules; return the repo, or None when a response was sent."""
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, method, 404, "RepoNotFound", "Repository not found")
            return None
        with self.lock:
            repo._seen += 1
            n = repo._seen
        if n <= repo.rate_limit_first:
            self._error(h, method, 429, message="rate limited", extra={"Retry-After": str(repo.retry_after)})
            return None
        if n <= repo.rate_limit_first + repo.fail_first:
            self._error(h, method, 500, message="internal error")
            return None
        if repo.gated:
            auth = h.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not token:
                self._error(h, method, 401, "GatedRepo",
                            f"Access to dataset {repo_id} is restricted. You must be authenticated to access it.")
                return None
            if token not in self.tokens:
                self._error(h, method, 403, "GatedRepo",
                            f"Access to dataset {repo_id} is restricted and you are not in the authorized list.")
                return None
        return repo

    def _api(self, h, method, rest):
        repo_id, tail = self._split_repo(rest)
        repo = self._gate(h, method, repo_id)
        if repo is None:
            return
        if tail.startswith("tree/"):
            sub = tail[len("tree/"):].split("/", 1)
            prefix = sub[1].rstrip("/") + "/" if len(sub) > 1 and sub[1] else ""
            entries, dirs = [], set()
            for p, b in sorted(repo.files.items()):
                if not p.startswith(prefix):
                    continue
                parts = p.split("/")
                for k in range(1, len(parts)):
                    d = "/".join(parts[:k])
                    if d.startswith(prefix.rstrip("/")) and d + "/" != prefix and d not in dirs:
                        dirs.add(d)
                        entries.append({"type": "directory", "path": d, "oid": _git_oid(d.encode())})
                e = {"type": "file", "path": p, "size": len(b), "oid": _git_oid(b)}
                if p.endswith(self.lfs_suffixes):
                    e["lfs"] = {"oid": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}
                entries.append(e)
            headers = {"Content-Type": "application/json"}
            if self.page_size:
                query = dict(parse_qsl(urlsplit(h.path).query))
                start = int(query.get("cursor", 0))
                if start + self.page_size < len(entries):
                    query["cursor"] = str(start + self.page_size)
                    headers["Link"] = f'<{self.url}{urlsplit(h.path).path}?{urlencode(query)}>; rel="next"'
                entries = entries[start:start + self.page_size]
            return self._send(h, method, 200, json.dumps(entries).encode(), headers)
        elif tail == "" or tail.startswith("revision/"):
            body = json.dumps({"id": repo_id, "sha": repo.sha, "private": False, "gated": "auto" if repo.gated else False,
                               "siblings": [{"rfilename": p} for p in sorted(repo.files)]}).encode()
        else:
            return self._error(h, method, 404, message=f"unknown api path {tail}")
        self._send(h, method, 200, body, {"Content-Type": "application/json"})

    def _resolve(self, h, method, rest):
        repo_id, tail = self._split_repo(rest)
        if not tail.startswith("resolve/"):
            return self._error(h, method, 404, message="not a resolve url")
        repo = self._gate(h, method, repo_id)
        if repo is None:
            return
        _, filename = tail[len("resolve/"):].split("/", 1)
        if self._held(h, repo):
            return
        data = repo.files.get(filename)
        if data is None:
            return self._error(h, method, 404, "EntryNotFound", f"{filename} does not exist on main",
                               extra={"X-Repo-Commit": repo.sha})
        if filename.endswith(self.lfs_suffixes):
            sha256 = hashlib.sha256(data).hexdigest()
            return self._send(h, method, 302, b"", {
                "Location": f"/cdn-lfs/{repo_id}/{sha256}?name={filename.replace('/', '%2F').replace('|', '%7C')}",
                "X-Repo-Commit": repo.sha, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
                "ETag": f'"{_git_oid(data)}"'})
        self._send(h, method, 200, data, {"X-Repo-Commit": repo.sha, "ETag": f'"{_git_oid(data)}"',
                                          "Content-Type": "application/octet-stream"},
                   delay=repo.delay, count_key=(repo_id, filename))

    def _held(self, h, repo: FakeRepo) -> bool:
        """The repo's first file request with ``hold``: wait for release(), then close unanswered."""
        with self.lock:
            hold, repo.hold = repo.hold, False
        if not hold:
            return False
        self.holding.set()
        self._released.wait(timeout=120)
        h.close_connection = True
        return True

    def _cdn(self, h, method, rest):
        org, name, sha256 = rest.split("/", 2)
        repo_id = f"{org}/{name}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, method, 404, message="no such blob")
        for filename, data in repo.files.items():
            if hashlib.sha256(data).hexdigest() == sha256:
                return self._send(h, method, 200, data, {"X-Repo-Commit": repo.sha, "ETag": f'"{sha256}"',
                                                         "Content-Type": "application/octet-stream"},
                                  delay=repo.delay, count_key=(repo_id, filename))
        return self._error(h, method, 404, message="no such blob")
