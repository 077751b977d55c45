"""Settings: reading a RecBole Config (or a plain dict, as the embedding recipes are) and where caches live."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SettingError


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


def config_choice(config, key: str, allowed, default=None):
    """``config[key]`` (``default`` when unset or empty), refused with the allowed values unless one of them."""
    value = config_value(config, key)
    if not value and default is not None:
        value = default
    if value not in allowed:
        raise SettingError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value
