"""Hub and offline settings shared by every stage that loads a model or tokenizer."""

from __future__ import annotations

import os
from pathlib import Path


def offline_env(model_path=None) -> None:
    """Passive OpenMP waiting (busy-waiting threads made 2-core runs many times slower whenever
    another process was busy), and an offline hub when the model is a local directory (a hub id
    such as ``Qwen/Qwen2.5-1.5B-Instruct`` must be allowed to download or use the HF cache).
    Effective when called before torch is first imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if model_path is None or Path(model_path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
