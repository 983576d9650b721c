"""Which configuration produced ``results/``: ``results/summary/run.json`` (written by ``summarize``) holds the
validated config and the config file(s) it came from. ``snakemake --report`` builds the report from the DAG of
the config it is given, while the front page (``results/summary/summary.rst``) describes the run: a report built
with another config would describe methods and figures it leaves out. :func:`check_report_config` stops such a
report with the command that builds the right one.
"""

from __future__ import annotations

import json
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.io import write_json

RECORD = "results/summary/run.json"


def write_record(config: dict, configfiles: list[str], path) -> None:
    write_json({"configfiles": list(configfiles), "config": config}, path)


def check_report_config(config: dict, configfiles: list[str], path=RECORD) -> None:
    """Refuse a report whose config is not the one the results were made with (no record: nothing to check)."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        record = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CrossdiffError(f"{p}: unreadable run record ({exc}); rerun `snakemake` to rewrite it") from None
    ran = json.loads(json.dumps(record.get("config"), sort_keys=True))
    now = json.loads(json.dumps(config, sort_keys=True))
    if ran == now:
        return
    keys = sorted(k for k in set(ran or {}) | set(now) if (ran or {}).get(k) != now.get(k))
    files = record.get("configfiles") or []
    cmd = "snakemake --report results/report.html" + "".join(f" --configfile {f}" for f in files)
    raise CrossdiffError(
        f"{p}: results/ were made with another configuration (it differs in: {', '.join(keys)}); a report built "
        "from this one would leave out that run's figures while its front page describes them. Build the report "
        f"with the run's config: {cmd}" + ("" if files else " (the run used the embedded default config)"))
