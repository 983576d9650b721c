"""Runtime helpers around the DAG: GPU slots on a workstation (``gpu-run``) and the console summary of
failed jobs (used by the Snakefile's ``onerror``). Imports no stage. CLI: ``gpu-run``.
"""
