# The study's cost before it runs (crossdiff.plan.estimate): every dry run prints a few lines of totals
# (training and evaluation GPU-hours, disk) computed from the resolved plan; `crossdiff estimate --configfile
# FILE` prints the full table per model x dataset x method. The dry run's version never loads a tokenizer
# nor asks the hub (token counts come from the estimate's cache, else characters) and never stops the run.
import re as _re
import sys as _sys

from crossdiff.plan.estimate import dry_run_summary

_DRY_RUN_FLAGS = ("-n", "--dry-run", "--dryrun", "--just-print")


def is_dry_run(argv):
    """Whether snakemake was started with -n (alone or among short flags without values, e.g. -np)."""
    return any(
        a in _DRY_RUN_FLAGS or _re.fullmatch(r"-[pqFfkr]*n[pqFfkr]*", a)
        for a in argv[1:]
    )


if is_dry_run(_sys.argv) and study_datasets():
    _summary = dry_run_summary(
        PLAN, CONFIGFILES[0] if CONFIGFILES else "config/config.yaml"
    )
    if _summary:
        print(_summary, file=_sys.stderr)
