"""Stage 12, plan: the study as the workflow will run it, computed once from the validated config: every job's
effective settings (one resolver), every file a config names (rule inputs), and the checks before any work.
Reads the config (and local config.json files); writes nothing but ``estimate``'s token-count cache. CLI: ``resolve`` (print the resolved settings),
``estimate`` (the study's tokens, GPU-hours and disk before it runs).
"""
