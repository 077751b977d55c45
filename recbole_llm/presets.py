"""The presets' files: which yaml a run of a model on a dataset reads, in order. A ground-floor home, so that models
that build another model's config (the ensemble, the hybrids) and the entry points read one rule.

- ``paper`` (the default): our protocol (``properties/overall.yaml``), then the paper's published configuration of
  the model on the dataset (``properties/paper/<dataset>/<Model>.yaml``), for reproduction.
- ``best``: the same, then ``properties/best/<dataset>/<Model>.yaml`` where we ship one: what the validation
  sessions chose beyond the paper (each file says on which evidence). Same protocol, so rows stay comparable.
"""
from __future__ import annotations

from pathlib import Path

from .errors import MissingFileError, SettingError
from .registry import PROPERTIES_DIR

PROTOCOL_FILE = PROPERTIES_DIR / "overall.yaml"
PAPER_CONFIG_DIR = PROPERTIES_DIR / "paper"
PRESETS = ("paper", "best")


def paper_config_file(model, dataset) -> Path | None:
    """The paper's published configuration of ``model`` on ``dataset``, if we ship one."""
    name = model if isinstance(model, str) else getattr(model, "__name__", None)
    path = PAPER_CONFIG_DIR / str(dataset) / f"{name}.yaml"
    return path if name and dataset and path.is_file() else None


def best_config_file(model, dataset) -> Path | None:
    """The ``best`` preset's configuration of ``model`` on ``dataset``, if we ship one."""
    name = model if isinstance(model, str) else getattr(model, "__name__", None)
    path = PROPERTIES_DIR / "best" / str(dataset) / f"{name}.yaml"
    return path if name and dataset and path.is_file() else None


def preset_name(settings) -> str:
    """The preset a run asked for (``preset`` among its settings; ``paper`` by default), checked."""
    name = (settings or {}).get("preset") or "paper"
    if name not in PRESETS:
        raise SettingError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return name


def config_files(user_files=None, model=None, dataset=None, preset: str = "paper") -> list[str]:
    """The preset's files: our protocol, then the paper's published configuration of ``model`` on ``dataset`` when
    we ship one, then (``best``) the configuration chosen beyond the paper, then the user's files (later files
    win)."""
    preset = preset_name({"preset": preset})
    missing = [str(f) for f in (user_files or []) if not Path(f).is_file()]
    if missing:
        raise MissingFileError(f"config file not found: {', '.join(missing)} (--config_files)")
    for file in user_files or []:
        check_config_file(file)
    chosen = [paper_config_file(model, dataset)] + ([best_config_file(model, dataset)] if preset == "best" else [])
    return [str(PROTOCOL_FILE)] + [str(f) for f in chosen if f] + [str(f) for f in (user_files or [])]


def check_config_file(path) -> None:
    """A user's yaml must parse to a mapping of settings: RecBole would fail on it with a traceback."""
    import yaml

    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SettingError(f"{path}: not UTF-8 (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SettingError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    if settings is None:
        raise SettingError(f"{path}: the file is empty; a config file holds settings, one 'key: value' a line")
    if not isinstance(settings, dict):
        raise SettingError(f"{path}: a config file holds 'key: value' settings, not a {type(settings).__name__}")
