"""What a leaderboard collection will download, before it starts: ``crossdiff collect-leaderboard --plan``.

The full v1 leaderboard lists about 7,300 models (``open-llm-leaderboard-old/contents``) and v2 about
4,500: a collection can mean thousands of repos and gigabytes. The plan lists every requested model's
repo (one tree-listing request per model, with the same concurrency, retries and error classes as the
collection itself), picks the files the collection would pick (newest run per (sub)task, only the
subtasks of the item table when given) and adds up their sizes, separating files already in the
cache. Nothing but the listings (and the contents dataset, when no models are given) is downloaded.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.responses.details import choose_files, expected_keys
from crossdiff.responses.hub import classify, dedupe_models, list_files, models_from_contents
from crossdiff.responses.lb_settings import ModelFailed, Settings, repo_for
from crossdiff.slugs import slugify


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def plan_model(model_id: str, s: Settings, api, token, cache_dir: Path, expected) -> dict:
    try:
        repo = repo_for(model_id, s)
    except CrossdiffError as exc:
        return {"model_id": model_id, "status": "failed", "error_kind": "bad_id", "error": str(exc)}
    try:
        files = list_files(api, repo, s)
        chosen = choose_files(files, s, repo, expected)
    except Exception as exc:  # noqa: BLE001 - classified like the collection does
        f = exc if isinstance(exc, ModelFailed) else classify(exc, repo, token)
        return {"model_id": model_id, "repo": repo, "status": "failed", "error_kind": f.kind, "error": str(f)}
    mdir = cache_dir / slugify(model_id)
    sizes = {f: files.get(f) or 0 for _, f in chosen.values()}
    cached = [f for f in sizes if (mdir / f).is_file()]
    return {"model_id": model_id, "repo": repo, "status": "listed", "files": len(sizes),
            "bytes": sum(sizes.values()), "cached_files": len(cached),
            "download_files": len(sizes) - len(cached), "download_bytes": sum(sizes[f] for f in sizes if f not in cached),
            "unknown_sizes": sum(1 for f in sizes if files.get(f) is None)}


def plan(s: Settings, models: list[str] | None, cache_dir, items_path=None, progress: bool = True) -> dict:
    from huggingface_hub import HfApi, constants
    from tqdm import tqdm

    if constants.is_offline_mode():
        raise CrossdiffError("HF_HUB_OFFLINE is set, but planning a collection lists the repos on the Hub; "
                             "unset HF_HUB_OFFLINE (or HF_HUB_OFFLINE=0)")
    token = os.environ.get("HF_TOKEN") or None
    cache_dir = Path(cache_dir)
    api = HfApi(endpoint=s.endpoint, token=token)
    source = "settings / models list"
    if models is None:
        models = models_from_contents(s, api, token, cache_dir)
        source = s.contents_repo
    models, duplicates = dedupe_models(models)
    if not models:
        raise CrossdiffError(f"plan: no models to list for leaderboard {s.version} {s.task} (from {source}); "
                             "give responses.models, a models_list file with ids, or neither (the contents dataset)")
    expected = expected_keys(items_path, s)
    bar = tqdm(total=len(models), desc=f"plan {s.version} {s.task}", unit="repo", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="plan") as pool:
        rows = []
        for r in pool.map(lambda m: plan_model(m, s, api, token, cache_dir, expected), models):
            rows.append(r)
            bar.update(1)
    bar.close()
    listed = [r for r in rows if r["status"] == "listed"]
    failed: dict[str, int] = {}
    for r in rows:
        if r["status"] == "failed":
            failed[r["error_kind"]] = failed.get(r["error_kind"], 0) + 1
    if not listed:  # an empty plan is no plan: Snakemake would cache it as done
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(failed.items()))
        raise CrossdiffError(f"plan: none of the {len(models)} model(s) could be listed ({kinds}); first: "
                             f"{rows[0]['model_id']}: {rows[0]['error']}; check the ids, the endpoint and the network")
    return {
        "version": s.version, "task": s.task, "models_from": source, "models": len(models),
        "duplicate_models": len(duplicates), "repos_with_files": len(listed), "repos_failed": dict(sorted(failed.items())),
        "files": sum(r["files"] for r in listed), "bytes": sum(r["bytes"] for r in listed),
        "cached_files": sum(r["cached_files"] for r in listed),
        "download_files": sum(r["download_files"] for r in listed),
        "download_bytes": sum(r["download_bytes"] for r in listed),
        "unknown_sizes": sum(r["unknown_sizes"] for r in listed),
        "listing_requests": len(models), "per_model": rows,
    }


def print_plan(p: dict) -> None:
    failed = ", ".join(f"{n} {k}" for k, n in p["repos_failed"].items()) or "none"
    dups = f", {p['duplicate_models']} duplicates ignored" if p["duplicate_models"] else ""
    print(f"plan: leaderboard {p['version']} {p['task']}: {p['models']} models (from {p['models_from']}{dups})")
    print(f"  repos with the task's files: {p['repos_with_files']}; failing: {failed}")
    print(f"  files: {p['files']} ({_human(p['bytes'])}); in the cache: {p['cached_files']}; "
          f"to download: {p['download_files']} files, {_human(p['download_bytes'])}"
          + (f" (+{p['unknown_sizes']} files of unknown size)" if p["unknown_sizes"] else ""))
    for r in [r for r in p["per_model"] if r["status"] == "failed"][:5]:
        print(f"  failed: {r['model_id']}: {r['error']}")
