"""Settings: reading a RecBole Config (or a plain dict, as the embedding recipes are) and where caches live."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where paid and slow work is kept across runs (embeddings, LLM answers, model files):
    ``RECBOLE_LLM_CACHE`` or ~/.cache/recbole_llm."""
    return Path(os.environ.get("RECBOLE_LLM_CACHE", Path.home() / ".cache" / "recbole_llm"))


def config_value(config, key: str, default=None):
    """``config[key]`` for a RecBole Config or a dict, ``default`` when unset."""
    try:
        value = config[key]
    except KeyError:
        return default
    return default if value is None else value
