"""Collect a benchmark's response matrix from the Open LLM Leaderboard's per-model "details" datasets.

The list of models comes from a file (``--models-list``: one ``org/model`` per line, or a
CSV/parquet with a ``fullname``/``model_id`` column), from ``settings.models``, or from the
version's own contents dataset (``data/train-*.parquet``, column ``fullname``): v1
``open-llm-leaderboard-old/contents`` (about 7,300 models), v2 ``open-llm-leaderboard/contents``.

What the collector does, per model, in a thread pool (``concurrency``): list the repo's files
(``HfApi.list_repo_tree``, following the Hub's pages), pick the task's files (several runs of one model: the newest run
timestamp wins, per subtask), download each (``hf_hub_download`` into ``cache_dir/<model slug>/``,
skipped when already there), extract per-item correctness with the configured metric and
threshold, check each file against the item table (``check_sizes``: its size, its doc ids, the
metric; see ``crossdiff.responses.details``), and cache the extracted table. Every finished model (done or failed, with its error)
is appended to the manifest (JSONL, one fsync'ed line per model), so a killed run resumes where it
stopped: models already done are not contacted again. 429 and 5xx answers (and connection errors)
are retried with exponential backoff (``Retry-After`` honoured); a model that keeps failing is
recorded as failed and skipped. ``HF_ENDPOINT`` and ``HF_TOKEN`` are read at run time; the token
is never written anywhere (error texts are scrubbed of it). The outcome per model (done, failed by
reason, dropped by coverage) goes to ``--summary`` (CSV, shown in the report); ``--plan`` lists
what a collection would download without downloading (``crossdiff.responses.collect_plan``). The two
leaderboard versions' repo and file layouts are described in ``crossdiff.responses.details``.

The collector's modules (imports go one way, top to bottom): ``leaderboard`` (this one: the
collection, its report, the CLI), ``collect_plan`` (``--plan``), ``manifest`` (resume), ``hub``
(models, listings, downloads, retries, error classes), ``details`` (file choice and parsing) and
``lb_settings`` (settings, ``ModelFailed``, shared constants).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, write_csv, write_json, write_parquet
from crossdiff.responses.collect_plan import plan, print_plan
from crossdiff.responses.details import check_file, choose_files, doc_check_for, expected_keys, extract_v1, extract_v2
from crossdiff.responses.details import select_files  # noqa: F401 - re-exported: the collector's API as before the split
from crossdiff.responses.hub import (classify, dedupe_models, download, list_files, models_from_contents,
                                     read_models_list, scrub)
from crossdiff.responses.hub import with_retries  # noqa: F401 - re-exported: the collector's API as before the split
from crossdiff.responses.lb_settings import V1_ROW_FIELDS, ModelFailed, Settings, parse_settings, repo_for
from crossdiff.responses.manifest import Manifest, collection_key, utc_now
from crossdiff.slugs import slugify

SCHEMA = {"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": pl.Int8}

# test hook: called in the main thread after each model is recorded (e.g. to simulate a kill)
_after_model_hook = None


# ---------------------------------------------------------------------------------- one model
ROW_SCHEMA = {"item_id": pl.Utf8, "correct": pl.Int8, "row": pl.Int64, **{c: pl.Utf8 for c in V1_ROW_FIELDS}}


def collect_model(model_id: str, s: Settings, api, token, cache_dir: Path, expected: dict | None = None,
                  doc_check=None) -> dict:
    """Download and extract one model; return its manifest record (raises ModelFailed)."""
    repo = repo_for(model_id, s)
    mdir = cache_dir / slugify(model_id)
    parsed_path = mdir / f"responses-{s.extraction_key()}.parquet"
    text_rows = s.version == "v1" and s.item_key != "row"
    try:
        chosen = choose_files(list_files(api, repo, s), s, repo, expected)
        rows: list[tuple] = []
        downloaded = cached = 0
        for label, (ts, f) in sorted(chosen.items()):
            local = mdir / f
            if local.is_file():
                cached += 1
            else:
                local = download(repo, f, s, mdir, token)
                downloaded += 1
            got = extract_v2(local, label, s, doc_check) if s.version == "v2" else extract_v1(local, label, s)
            check_file([r[0].rpartition("/")[2] if label else r[0] for r in got], label, f.rsplit("/", 1)[-1], s, expected)
            rows += got
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, repo, token) from None
    if not rows:
        raise ModelFailed("empty", f"{repo}: the task files hold no samples (filter {s.filter!r})")
    if text_rows:
        df = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")
        n_dup = df.height - df["item_id"].n_unique()  # twins share a text: told apart at import
    else:
        df = pl.DataFrame({"item_id": [r[0] for r in rows], "correct": [r[1] for r in rows]},
                          schema={"item_id": pl.Utf8, "correct": pl.Int8})
        n_dup = df.height - df["item_id"].n_unique()
        if n_dup:
            raise ModelFailed("duplicate_ids", f"{repo}: {n_dup} duplicate item id(s) within one run (item_key {s.item_key!r})")
    write_parquet(df.with_columns(pl.lit(model_id).alias("model_id")).select("model_id", *df.columns), parsed_path)
    runs = sorted({ts for ts, _ in chosen.values()})
    return {"repo": repo, "files": sorted(f for _, f in chosen.values()), "run": runs[-1], "runs": runs,
            "n_items": df.height, "accuracy": round(float(df["correct"].mean()), 6), "shared_keys": n_dup,
            "downloaded_files": downloaded, "cached_files": cached, "parsed": str(parsed_path)}


# ---------------------------------------------------------------------------------- the collector
def collect(s: Settings, models: list[str] | None, cache_dir, manifest_path, output, items_path=None,
            report_path=None, progress: bool = True, summary_path=None) -> dict:
    """Collect every model, resume from the manifest, write the long table; return the report."""
    from huggingface_hub import HfApi, constants
    from tqdm import tqdm

    token = os.environ.get("HF_TOKEN") or None
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(manifest_path)
    api = HfApi(endpoint=s.endpoint, token=token)
    if s.version == "v1" and s.item_key == "row" and items_path:
        raise CrossdiffError(f"responses.item_key 'row' with an item table ({items_path}): v1 details rows come in the "
                             f"leaderboard's own order, not the dataset's, so row positions are not item ids; set "
                             f"item_key: example and match_items_on: question (or use no item table)")
    expected = expected_keys(items_path, s)
    doc_check = doc_check_for(items_path)  # IFEval: each sample's doc is the item's prompt (else the model fails, named)
    key = collection_key(s, expected)

    def offline_check():
        if constants.is_offline_mode():
            raise CrossdiffError("HF_HUB_OFFLINE is set, but the leaderboard collector has models left to download; "
                                 "unset HF_HUB_OFFLINE (or HF_HUB_OFFLINE=0)")

    if models is None:
        offline_check()
        models = models_from_contents(s, api, token, cache_dir)
    models, duplicates = dedupe_models(models)
    if not models:
        raise CrossdiffError("no models to collect (empty models list)")

    previous = manifest.read()

    def is_done(m):
        r = previous.get(m)
        return bool(r and r.get("status") == "done" and r.get("key") == key and Path(r.get("parsed", "")).is_file())

    resumed = [m for m in models if is_done(m)]
    skipped_failed = [m for m in models if not is_done(m) and not s.retry_failed
                      and previous.get(m, {}).get("status") == "failed" and previous[m].get("key") == key]
    pending = [m for m in models if m not in set(resumed) | set(skipped_failed)]
    if s.max_models > 0:
        pending = pending[: s.max_models]
    if pending:
        offline_check()
        if s.version == "v2" and not token and progress:
            print("note: the v2 details datasets are gated; HF_TOKEN is not set, so gated repos will fail "
                  "(accept each repo's terms on the Hub and export HF_TOKEN)", file=sys.stderr)

    counts = {"done": 0, "failed": 0, "resumed": len(resumed), "cached_files": 0, "downloaded_files": 0}
    bar = tqdm(total=len(pending), desc=f"leaderboard {s.version} {s.task}", unit="model", file=sys.stderr,
               disable=not progress or not pending, dynamic_ncols=True)
    bar.set_postfix(done=0, failed=0, cached=len(resumed))

    def work(m):
        started = utc_now()
        t0 = time.monotonic()
        try:
            rec = collect_model(m, s, api, token, cache_dir, expected, doc_check)
            rec.update(status="done")
        except ModelFailed as exc:
            rec = {"repo": _safe_repo(m, s), "status": "failed", "error_kind": exc.kind, "error": scrub(str(exc), token)}
        except Exception as exc:  # noqa: BLE001 - never lose a model silently
            f = classify(exc, _safe_repo(m, s), token)
            rec = {"repo": _safe_repo(m, s), "status": "failed", "error_kind": f.kind, "error": scrub(str(f), token)}
        rec.update(model_id=m, key=key, version=s.version, task=s.task, started=started, finished=utc_now(),
                   seconds=round(time.monotonic() - t0, 3))
        return rec

    pool = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="leaderboard")
    try:
        futures = {pool.submit(work, m): m for m in pending}
        not_done = set(futures)
        while not_done:
            finished, not_done = wait(not_done, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                rec = fut.result()
                manifest.append(rec)
                previous[rec["model_id"]] = rec
                if rec["status"] == "done":
                    counts["done"] += 1
                    counts["cached_files"] += rec.get("cached_files", 0)
                    counts["downloaded_files"] += rec.get("downloaded_files", 0)
                else:
                    counts["failed"] += 1
                    bar.write(f"  failed: {rec['model_id']}: {rec['error']}", file=sys.stderr)
                bar.update(1)
                bar.set_postfix(done=counts["done"], failed=counts["failed"], cached=counts["resumed"])
                if _after_model_hook is not None:
                    _after_model_hook(rec)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()

    # ---- assemble from every done model (this run and earlier ones)
    # is_done checks the extraction key too: tables extracted under other settings never mix in
    done_models = [m for m in models if is_done(m)]
    frames = [pl.read_parquet(previous[m]["parsed"]) for m in done_models if Path(previous[m].get("parsed", "")).is_file()]
    long = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=SCHEMA)
    long = long.with_columns(pl.col("correct").cast(pl.Int8))

    # ---- coverage: the benchmark's items (item table, else every item any model answered)
    incomplete = []
    if s.text_keys:
        # keys are texts (or native ids in older files), matched at import: compare row counts instead
        n_ref = sum(expected.values()) if expected else 0
        per_n = dict(long.group_by("model_id").len().iter_rows()) if long.height else {}
        n_ref = n_ref or max(per_n.values(), default=0)
        reference = range(n_ref)
        for m, n in per_n.items():
            if n < n_ref:
                incomplete.append({"model_id": m, "items": n, "missing": n_ref - n, "coverage": round(n / n_ref, 6)})
    elif items_path:
        items_df = read_table(items_path, "item table")
        if "item_id" not in items_df.columns:
            raise CrossdiffError(f"{items_path}: item table lacks column 'item_id'")
        reference = set(items_df["item_id"].cast(pl.Utf8).to_list())
    else:
        reference = set(long["item_id"].unique().to_list())
    if reference and long.height and not s.text_keys:
        per = long.group_by("model_id").agg(pl.col("item_id"))
        for m, ids in per.iter_rows():
            missing = len(reference - set(ids))
            if missing:
                incomplete.append({"model_id": m, "items": len(ids), "missing": missing,
                                   "coverage": round(1 - missing / len(reference), 6)})
    incomplete.sort(key=lambda r: r["model_id"])
    dropped_incomplete = []
    if s.coverage == "drop" and incomplete:
        dropped_incomplete = [r["model_id"] for r in incomplete]
        long = long.filter(~pl.col("model_id").is_in(dropped_incomplete))
    extra = [c for c in ("row", *V1_ROW_FIELDS) if c in long.columns]
    long = long.sort(["model_id", "item_id", *extra[:1]]).select("model_id", "item_id", "correct", *extra)
    write_parquet(long, output)

    failed = sorted(({"model_id": m, "error_kind": previous[m].get("error_kind"), "error": previous[m].get("error")}
                     for m in models if previous.get(m, {}).get("status") == "failed" and m not in done_models),
                    key=lambda r: r["model_id"])
    report = {
        "version": s.version, "task": s.task, "metric": s.metric, "threshold": s.threshold,
        "models_requested": len(models) + len(duplicates), "duplicate_models": duplicates,
        "models_done": len(done_models), "models_failed": len(failed), "models_pending": len(models) - len(done_models) - len(failed),
        "this_run": {"collected": counts["done"], "failed": counts["failed"], "resumed_from_manifest": counts["resumed"],
                     "files_downloaded": counts["downloaded_files"], "files_from_cache": counts["cached_files"]},
        "reference_items": len(reference), "reference": ("rows per model (text keys)" if s.text_keys else "item table" if items_path else "union of models' items"),
        "incomplete_coverage": incomplete, "coverage_policy": s.coverage, "dropped_incomplete": dropped_incomplete,
        "failed": failed, "output_models": long["model_id"].n_unique(), "output_items": long["item_id"].n_unique(),
        "output_rows": long.height, "manifest": str(manifest.path),
    }
    gated = [f for f in failed if f["error_kind"] == "gated"]
    if gated:
        report["gated_message"] = gated[0]["error"]
    report["failed_by_reason"] = dict(sorted(Counter(f["error_kind"] for f in failed).items()))
    report_path = Path(report_path) if report_path else manifest.path.with_suffix(".report.json")
    write_json(report, report_path)
    write_csv(summary_table(report), summary_path or report_path.with_name(report_path.name.replace(".report.json", "") + ".summary.csv"))
    report["report"] = str(report_path)
    if not done_models and failed and len(gated) == len(failed):
        raise CrossdiffError(f"every model failed on access to a gated dataset; e.g. {gated[0]['error']} "
                             f"(details in {manifest.path})")
    if long.height == 0:  # nothing to import: stop here, naming why, not later with "no responses found"
        why = f"e.g. {failed[0]['model_id']}: {failed[0]['error']}; " if failed else ""
        raise CrossdiffError(f"no responses collected: {len(done_models)} model(s) done, {len(failed)} failed, "
                             f"{report['models_pending']} pending, {len(dropped_incomplete)} dropped for incomplete "
                             f"coverage (coverage: {s.coverage}); {why}details in {manifest.path} and {report_path}")
    return report


def summary_table(report: dict) -> pl.DataFrame:
    """The collection's outcome per model, as the report shows it: done, failed by reason, dropped by coverage."""
    rows = [("requested", "", report["models_requested"], "")]
    if report["duplicate_models"]:
        rows.append(("duplicate", "listed twice", len(report["duplicate_models"]), report["duplicate_models"][0]))
    rows.append(("done", "", report["models_done"], ""))
    by_kind: dict[str, list] = {}
    for f in report["failed"]:
        by_kind.setdefault(f["error_kind"] or "error", []).append(f)
    for kind, fs in sorted(by_kind.items()):
        rows.append(("failed", kind, len(fs), f"{fs[0]['model_id']}: {fs[0]['error']}"[:300]))
    inc = report["incomplete_coverage"]
    if inc:
        outcome = "dropped" if report["coverage_policy"] == "drop" else "kept"
        rows.append((outcome, "incomplete coverage", len(inc), f"{inc[0]['model_id']}: {inc[0]['missing']} of "
                                                               f"{report['reference_items']} items missing"))
    if report["models_pending"]:
        rows.append(("pending", "max_models", report["models_pending"], ""))
    what = "distinct keys, matched to items at import" if report["reference"].endswith("(text keys)") else "items"
    rows.append(("in matrix", "", report["output_models"], f"{report['output_items']} {what}, {report['output_rows']} responses"))
    return pl.DataFrame(rows, schema={"outcome": pl.Utf8, "reason": pl.Utf8, "models": pl.Int64, "example": pl.Utf8},
                        orient="row")


def _safe_repo(model_id: str, s: Settings) -> str:
    try:
        return repo_for(model_id, s)
    except CrossdiffError:
        return ""


# ---------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", type=json_arg, required=True,
                   help="JSON: the dataset's responses section (version, task, metric, threshold, ...)")
    p.add_argument("--models-list", help="file of model ids (one org/model per line, or a table with a "
                                         "model_id/fullname column); default: the leaderboard's contents dataset")
    p.add_argument("--cache-dir", required=True, help="raw per-model files and extracted tables are kept here")
    p.add_argument("--manifest", help="JSONL of done/failed models (resumes from it); required unless --plan")
    p.add_argument("--output", help="canonical long parquet (model_id, item_id, correct); required unless --plan")
    p.add_argument("--summary", help="CSV of the outcome per model (done, failed by reason, dropped by coverage); "
                                     "default: beside the report")
    p.add_argument("--plan", nargs="?", const="-", metavar="JSON",
                   help="download nothing: list every model's repo and print how many models, files and bytes the "
                        "collection would download (one listing request per model); write the plan to JSON if given")
    p.add_argument("--items", help="item table (item_id column) defining the benchmark's items for the coverage check")
    p.add_argument("--report", help="JSON summary (default: <manifest>.report.json)")
    p.add_argument("--max-models", type=int, help="collect at most this many pending models in this run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    raw = dict(args.settings)
    if args.max_models is not None:
        raw["max_models"] = args.max_models
    s = parse_settings(raw)
    models = read_models_list(args.models_list) if args.models_list else raw.get("models")
    if args.plan:
        result = plan(s, models, args.cache_dir, items_path=args.items, progress=not args.no_progress)
        print_plan(result)
        if args.plan != "-":
            write_json(result, args.plan)
        return
    if not args.manifest or not args.output:
        raise CrossdiffError("collect-leaderboard needs --manifest and --output (or --plan to only list the cost)")
    report = collect(s, models, args.cache_dir, args.manifest, args.output, items_path=args.items,
                     report_path=args.report, progress=not args.no_progress, summary_path=args.summary)
    r = report
    print(f"leaderboard {s.version} {s.task} ({s.metric} >= {s.threshold}): {r['models_done']} models done, "
          f"{r['models_failed']} failed, {r['models_pending']} pending; this run: {r['this_run']['collected']} collected, "
          f"{r['this_run']['resumed_from_manifest']} resumed, {r['this_run']['files_downloaded']} files downloaded, "
          f"{r['this_run']['files_from_cache']} from cache")
    print(f"output: {args.output}: {r['output_models']} models x {r['output_items']} items, {r['output_rows']} responses")
    if r["incomplete_coverage"]:
        print(f"incomplete coverage ({r['coverage_policy']}): {len(r['incomplete_coverage'])} model(s), e.g. "
              + ", ".join(f"{x['model_id']} ({x['missing']} missing)" for x in r["incomplete_coverage"][:3]))
    if r["duplicate_models"]:
        print(f"duplicate model ids ignored: {len(r['duplicate_models'])}")
    for f in r["failed"][:10]:
        print(f"failed: {f['model_id']}: {f['error']}")
    if len(r["failed"]) > 10:
        print(f"... and {len(r['failed']) - 10} more failed (see {r['manifest']})")
    print(f"report: {r['report']}")
