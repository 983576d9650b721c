"""The leaderboard collector's settings and shared types: the bottom of the collector's imports.

:class:`Settings` (the dataset's ``responses`` section, parsed by :func:`parse_settings`), the
per-version defaults, a model's details repo (:func:`repo_for`), and :class:`ModelFailed`, the
reason a model is unusable for a collection (recorded in the manifest). Imported by ``details``
(file parsing), ``hub`` (Hub access), ``manifest``, ``collect_plan`` and ``leaderboard``; imports
none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from crossdiff.errors import CrossdiffError

# {slug} is the model id with "/" -> "__": details_meta-llama__Llama-2-7b-hf, and details_gpt2 for ids without an org
DEFAULTS = {
    "v1": {"repo_template": "open-llm-leaderboard-old/details_{slug}", "metric": "acc_norm", "item_key": "row",
           "contents_repo": "open-llm-leaderboard-old/contents"},
    "v2": {"repo_template": "open-llm-leaderboard/{slug}-details", "metric": "acc_norm", "item_key": "doc_id",
           "contents_repo": "open-llm-leaderboard/contents"},
}
CONTENTS_REPO = DEFAULTS["v2"]["contents_repo"]

# v1 row fields kept beside a text key (item_key other than row): they tell twin items apart at import
V1_ROW_FIELDS = ("choices", "gold", "gold_index", "full_prompt")


class ModelFailed(Exception):
    """A model unusable for this collection, with the reason (``kind``) recorded in the manifest."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    version: str
    task: str
    subtasks: bool
    metric: str
    threshold: float
    filter: str | None
    item_key: str
    repo_template: str
    revision: str
    concurrency: int
    max_retries: int
    backoff_base: float
    backoff_max: float
    coverage: str
    retry_failed: bool
    max_models: int
    contents_repo: str
    contents_column: str
    endpoint: str | None
    check_sizes: bool = True
    text_keys: bool = False  # item keys are texts matched at import (match_items_on): no item-id coverage

    def extraction_key(self) -> str:
        """Hash of what determines the extracted table (not how it was downloaded)."""
        key = json.dumps([self.version, self.task, self.subtasks, self.metric, self.threshold, self.filter,
                          self.item_key, self.repo_template, self.revision])
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def parse_settings(raw: dict) -> Settings:
    raw = dict(raw or {})
    raw.pop("source", None)
    version = str(raw.get("version", "")).lower()
    if version not in DEFAULTS:
        raise CrossdiffError(f"responses.version: {raw.get('version')!r}; expected 'v1' (open-llm-leaderboard-old "
                             f"details parquet) or 'v2' (open-llm-leaderboard lm-eval samples)")
    task = raw.get("task")
    if not task or not isinstance(task, str):
        raise CrossdiffError("responses.task: required, e.g. 'leaderboard_bbh' (v2, with subtasks: true), "
                             "'leaderboard_mmlu_pro' (v2), 'arc:challenge|25' or 'gsm8k|5' (v1)")
    if version == "v1" and not task.startswith("harness|"):
        task = f"harness|{task}"
    d = DEFAULTS[version]
    coverage = raw.get("coverage", "drop")
    if coverage not in ("drop", "keep"):
        raise CrossdiffError(f"responses.coverage: {coverage!r}; expected 'drop' or 'keep'")
    try:
        s = Settings(
            version=version, task=task, subtasks=bool(raw.get("subtasks", False)),
            metric=str(raw.get("metric", d["metric"])), threshold=float(raw.get("threshold", 0.5)),
            filter=raw.get("filter"), item_key=str(raw.get("item_key", d["item_key"])),
            repo_template=str(raw.get("repo_template", d["repo_template"])), revision=str(raw.get("revision", "main")),
            concurrency=max(1, int(raw.get("concurrency", 8))), max_retries=max(0, int(raw.get("max_retries", 5))),
            backoff_base=float(raw.get("backoff_base", 1.0)), backoff_max=float(raw.get("backoff_max", 60.0)),
            coverage=coverage, retry_failed=bool(raw.get("retry_failed", True)),
            max_models=int(raw.get("max_models", 0)), contents_repo=str(raw.get("contents_repo") or d["contents_repo"]),
            contents_column=str(raw.get("contents_column", "fullname")),
            endpoint=raw.get("endpoint") or os.environ.get("HF_ENDPOINT") or None,
            check_sizes=bool(raw.get("check_sizes", True)), text_keys=bool(raw.get("match_items_on")),
        )
    except (TypeError, ValueError) as exc:
        raise CrossdiffError(f"responses (leaderboard): bad setting: {exc}") from None
    if "{org}" not in s.repo_template and "{slug}" not in s.repo_template:
        raise CrossdiffError(f"responses.repo_template {s.repo_template!r} must contain {{org}}/{{name}} or {{slug}}")
    return s


def repo_for(model_id: str, s: Settings) -> str:
    org, _, name = model_id.strip().partition("/")
    if not org or "/" in name or (not name and "{slug}" not in s.repo_template):
        raise CrossdiffError(f"model id {model_id!r}: expected 'org/model' or an org-less id like 'gpt2' as on the Hub"
                             + ("" if name or not org else f" (repo_template {s.repo_template!r} needs an org; use {{slug}})"))
    return s.repo_template.format(org=org, name=name, slug=model_id.strip().replace("/", "__"))
