"""Which snakemake executor runs this workflow, known while the Snakefile is parsed.

snakemake 9 parses the Snakefile before it hands the executor to the workflow (``snakemake/api.py``:
``DAGApi.__post_init__`` includes the Snakefile, ``execute_workflow`` sets ``workflow.executor_plugin`` later), so
``workflow.executor_plugin`` is still None at parse. The executor is the command line's: ``--executor`` or a
profile's ``executor:`` key, both parsed into ``args.executor`` by ``snakemake.cli.parse_args`` and handed to
``snakemake.cli.args_to_api(args, parser)``, which is on the call stack while the Snakefile is parsed (it builds
the DAG API inside). A dry run (``-n``) keeps the intended executor there (``args.executor``; the "dryrun"
pseudo-executor only replaces it for execution), so ``snakemake -n --profile profiles/slurm`` reads "slurm", and
a job inside a SLURM allocation reads "slurm-jobstep" (the plugin's inner call, ``--executor slurm-jobstep``).
The snakemake that runs one job's rule (``--mode remote``: the jobstep's nested call, which names no executor) is
no scheduling process: None.
"""

from __future__ import annotations

import sys

SLURM = ("slurm", "slurm-jobstep")
# snakemake commands that run or dry-run no job (a report, a lint, a listing ... from a login node)
NO_JOBS = ("report", "lint", "list_rules", "list_target_rules", "dag", "rulegraph", "filegraph", "d3dag", "unlock",
           "summary", "detailed_summary", "cleanup_metadata", "delete_all_output", "delete_temp_output", "archive",
           "containerize", "generate_unit_tests", "print_compilation", "list_changes", "list_untracked")


def snakemake_executor(workflow=None) -> str | None:
    """The executor name ("local", "slurm", "slurm-jobstep", ...) of the running ``snakemake`` command, or None
    when it cannot be known (snakemake called through its Python API rather than its command line), the command
    runs no job (``--report``, ``--lint``, ``--list-rules``, ``--dag``, ...: :data:`NO_JOBS`), or it runs one job
    an executor dispatched (``--mode remote`` / ``subprocess``)."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is not None and getattr(plugin, "name", None):
        return str(plugin.name)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "args_to_api" and frame.f_globals.get("__name__") == "snakemake.cli":
            args = frame.f_locals.get("args")
            if args is not None:
                if any(getattr(args, flag, None) for flag in NO_JOBS):
                    return None
                mode = getattr(args, "mode", None)
                if mode is not None and str(getattr(mode, "name", mode)).lower() not in ("default", "none"):
                    return None  # a job dispatched by an executor (--mode remote/subprocess): it schedules nothing
                return str(getattr(args, "executor", None) or "local")
        frame = frame.f_back
    return None
