"""Checkpoints that load without running code.

RecBole pickles its whole ``Config`` (and whatever else a state holds) into every checkpoint with pickle protocol
4, so reading one means unpickling arbitrary objects: a checkpoint from elsewhere can run code. Every checkpoint
our flows write (RecBole's trainer through the patch table, our resume files) is instead plain data: tensors,
numbers, strings, lists and dicts, with the run's settings as a dict (``config``: model, dataset and the settings
given to RecBole's Config, from which the Config is rebuilt). ``load_checkpoint`` reads with torch's
``weights_only=True``, which can only rebuild such data. A pickled checkpoint (RecBole's own format, or ours
before this format) is refused with a message, unless the caller says it trusts the file (``trusted=True``,
``--trust_checkpoint``, or ``RECBOLE_LLM_TRUST_CHECKPOINTS=1``), which names the risk.
"""
from __future__ import annotations

import enum
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import MissingFileError, SettingError

FORMAT = "recbole_llm.checkpoint/1"
TRUST_ENV = "RECBOLE_LLM_TRUST_CHECKPOINTS"


class UntrustedCheckpointError(SettingError):
    """A checkpoint that would have to be unpickled in full (it could run code)."""


def plain(value):
    """``value`` as data ``weights_only`` can load: numpy arrays become tensors, numpy scalars Python numbers,
    enums their names, ordered dicts dicts; anything else that is not plain data becomes its ``str``."""
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float subclass
        return value.item()
    if isinstance(value, enum.Enum):  # before int: IntEnum members are ints
        return value.name
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str, bytes):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):  # OrderedDict too: loaded back as a dict
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, torch.device):
        return str(value)
    return str(value)


def config_record(config) -> dict:
    """What rebuilds a run's Config: its model, dataset and the settings given to it (files, dict, command line)."""
    if isinstance(config, dict) and config.get("format") == FORMAT:
        return config
    settings = dict(getattr(config, "external_config_dict", {}) or {})
    settings.pop("model", None), settings.pop("dataset", None)
    return {"format": FORMAT, "model": str(config["model"]), "dataset": str(config["dataset"]),
            "settings": plain(settings), "seed": config["seed"], "hash": config_hash(config)}


# settings that change where or how loudly a run goes, not what it computes
VOLATILE_SETTINGS = {"state", "show_progress", "data_path", "checkpoint_dir", "device", "gpu_id", "use_gpu",
                     "local_rank", "single_spec", "world_size", "nproc", "offset", "ip", "port", "log_wandb",
                     "wandb_project", "llm_state_shard"}


def config_hash(config) -> str:
    """A digest of everything a run computes from: the resolved settings (RecBole's final config), without the
    ones that only say where files go or how much is printed."""
    import hashlib
    import json

    settings = {str(k): v for k, v in dict(config.final_config_dict).items() if k not in VOLATILE_SETTINGS}
    text = json.dumps(plain(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rebuild_config(record: dict):
    """The Config of a checkpoint's ``config`` record."""
    from recbole.config import Config

    return Config(model=record["model"], dataset=record["dataset"], config_dict=dict(record["settings"]))


def save_checkpoint(state: dict, path: os.PathLike) -> None:
    """``state`` as plain data (its config as a record), written atomically."""
    state = dict(state)
    if "config" in state:
        state["config"] = config_record(state["config"])
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(state), tmp)
    os.replace(tmp, path)


def trusted_by_environment() -> bool:
    return os.environ.get(TRUST_ENV) == "1"


def load_checkpoint(path: os.PathLike, map_location="cpu", trusted: bool = False) -> dict:
    """A checkpoint's state, loaded with ``weights_only=True``. A pickled checkpoint is read in full only when
    ``trusted`` (or ``RECBOLE_LLM_TRUST_CHECKPOINTS=1``); otherwise it is refused, naming the file and the way."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if trusted or trusted_by_environment():
            return torch.load(path, map_location=map_location, weights_only=False)
        raise UntrustedCheckpointError(
            f"checkpoint {path} holds pickled Python objects (RecBole's own checkpoint format, or an older "
            "recbole-llm's): loading it could run code. If you made it yourself, load it as trusted "
            f"(--trust_checkpoint, trusted=True or {TRUST_ENV}=1)") from error
    except (RuntimeError, EOFError, OSError) as error:  # truncated, not a torch file, unreadable zip
        raise SettingError(f"checkpoint {path} is not a readable torch checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]})") from error


def checkpoint_config(checkpoint: dict, path: os.PathLike = "checkpoint"):
    """The Config a loaded checkpoint was trained with (a record is rebuilt; a trusted pickled Config is used)."""
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if config is None:
        raise SettingError(f"{path} has no run settings ('config'): it is not a RecBole or recbole-llm checkpoint")
    if isinstance(config, dict):
        if config.get("format") != FORMAT:
            raise SettingError(f"{path}: unknown checkpoint format {config.get('format')!r}")
        return rebuild_config(config)
    return config
