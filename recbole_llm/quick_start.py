"""run / load: the functions behind ``run_recbole_llm.py``, thin over RecBole's own."""
from __future__ import annotations

import os

import recbole.quick_start

from .checks import prepare_dataset
from .errors import SettingError
from .presets import config_files


class MultiProcessNeedsGPUs(SettingError):
    """``nproc`` > 1 is RecBole's DDP, which runs one NCCL process per CUDA device."""


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
    protocol_defaults: bool = True,
    preset: str = "paper",
):
    """Train and evaluate ``model`` (a name or class, ours or RecBole's) on
    ``dataset`` under the paper's protocol (RecBole's defaults when
    ``protocol_defaults`` is False)."""
    import torch

    if nproc > 1 and torch.cuda.device_count() < nproc:
        raise MultiProcessNeedsGPUs(
            f"--nproc={nproc} runs RecBole's multi-GPU training (NCCL, one process per GPU) but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s); use --nproc=1 on CPU, or at most that many processes "
            "(and list them in gpu_id, e.g. gpu_id: '0,1')."
        )
    if protocol_defaults and preset != "paper":
        config_dict = {**(config_dict or {}), "preset": preset}
    files = (config_files(config_file_list, model, dataset, preset) if protocol_defaults
             else list(config_file_list or []))
    from .pipeline import train_missing_members

    train_missing_members(prepare_dataset(model, dataset, files, config_dict))  # an ensemble's untrained members
    return recbole.quick_start.run(
        model,
        dataset,
        config_file_list=files,
        config_dict=config_dict,
        saved=saved,
        nproc=nproc,
        world_size=world_size,
        ip=ip,
        port=port,
        group_offset=group_offset,
    )


def load_data_and_model(model_file: os.PathLike, trusted: bool = False):
    """RecBole's ``load_data_and_model`` for checkpoints of any model, ours included, read with
    ``weights_only=True``; ``trusted=True`` also reads a pickled checkpoint (RecBole's own format), which could run
    code: only for files you made."""
    return recbole.quick_start.load_data_and_model(str(model_file), trusted=trusted)


def preset_config(model, dataset, preset: str = "paper", config_file_list=None, config_dict=None):
    """RecBole's ``Config`` for ``model`` on ``dataset`` under a preset (``paper``: our protocol and the paper's
    published configuration; ``best``: what validation chose beyond it), checked as a run checks it: the Python path
    to the protocol for a user's own RecBole code (``run_recbole`` alone uses RecBole's protocol)::

        config = recbole_llm.preset_config("PaperSASRec", "beauty", "best", config_dict={"epochs": 5})
        dataset = recbole.data.create_dataset(config)
        train, valid, test = recbole.data.data_preparation(config, dataset)
    """
    settings = dict(config_dict or {})
    if preset != "paper":
        settings["preset"] = preset
    return prepare_dataset(model, dataset, config_files(config_file_list, model, dataset, preset), settings)
