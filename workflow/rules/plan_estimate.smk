# The study's cost before it runs (crossdiff.plan.estimate): every dry run prints a few lines of totals
# (training and evaluation GPU-hours, job overhead, disk) computed from the resolved plan; `crossdiff estimate
# --configfile FILE` prints the full table per model x dataset x method. The dry run's version never loads a
# tokenizer nor asks the hub (token counts come from the estimate's cache, else characters) and never stops
# the run.
import sys as _sys

import crossdiff.plan.estimate as plan_estimate

if plan_estimate.is_dry_run(_sys.argv) and study_datasets():
    _summary = plan_estimate.dry_run_summary(
        PLAN, CONFIGFILES[0] if CONFIGFILES else "config/config.yaml"
    )
    if _summary:
        print(_summary, file=_sys.stderr)
