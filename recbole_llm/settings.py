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


class ModelSettings:
    """A model's settings in one typed home, read once from its Config.

    A subclass is a frozen dataclass whose fields are config keys, each with its type (``int``, ``float``, ``bool``,
    ``str``, ``Literal[...]`` for a choice, ``X | None`` where empty means something the yaml says, ``list``,
    ``dict``). No field has a default: a model's defaults live only in yaml (``properties/model/<Class>.yaml`` along
    the model's classes, ``properties/overall.yaml``), so the file a user reads is the whole truth and code and yaml
    cannot disagree. ``read`` refuses a key no yaml declared, a value of the wrong type and a value outside its
    choices, each naming the key, before any data is read or anything is paid for."""

    @classmethod
    def read(cls, config):
        import dataclasses
        import typing

        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in config:
                raise SettingError(f"{field.name} is not set: {cls.__name__} keeps no default in code; declare it in "
                                   "the model's yaml (properties/model/) or in your config")
            values[field.name] = typed_value(field.name, config[field.name], hints[field.name])
        return cls(**values)


def typed_value(key: str, value, kind):
    """``value`` as ``kind`` (see ``ModelSettings``), or a ``SettingError`` naming ``key``."""
    import types
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return typed_value(key, value, kind)
    if origin is typing.Literal:
        if value not in args:
            raise SettingError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if kind is typing.Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind in (list, dict):
        if isinstance(value, (list, tuple)) and kind is list:
            return list(value)
        if isinstance(value, dict) and kind is dict:
            return dict(value)
    else:
        raise TypeError(f"{key}: settings of type {kind!r} are not supported")
    name = {bool: "True or False", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}[kind]
    raise SettingError(f"{key} must be {name}; got {value!r}")
