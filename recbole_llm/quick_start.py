"""run / load: the functions behind ``run_recbole_llm.py``, thin over RecBole's own."""
from __future__ import annotations

import os
from pathlib import Path

import recbole.quick_start
from recbole.config import Config

from .data.datasets import ensure_dataset
from .registry import PROPERTIES_DIR

PROTOCOL_FILE = PROPERTIES_DIR / "overall.yaml"
PAPER_CONFIG_DIR = PROPERTIES_DIR / "paper"


def paper_config_file(model, dataset) -> Path | None:
    """The paper's published configuration of ``model`` on ``dataset``, if we ship one."""
    name = model if isinstance(model, str) else getattr(model, "__name__", None)
    path = PAPER_CONFIG_DIR / str(dataset) / f"{name}.yaml"
    return path if name and dataset and path.is_file() else None


def config_files(user_files=None, model=None, dataset=None) -> list[str]:
    """The ``paper`` preset: our protocol, then the paper's published configuration of
    ``model`` on ``dataset`` when we ship one, then the user's files (later files win)."""
    missing = [str(f) for f in (user_files or []) if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"config file not found: {', '.join(missing)} (--config_files)")
    for file in user_files or []:
        check_config_file(file)
    paper = paper_config_file(model, dataset)
    return [str(PROTOCOL_FILE)] + ([str(paper)] if paper else []) + [str(f) for f in (user_files or [])]


def check_config_file(path) -> None:
    """A user's yaml must parse to a mapping of settings: RecBole would fail on it with a traceback."""
    import yaml

    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    if settings is None:
        raise ValueError(f"{path}: the file is empty; a config file holds settings, one 'key: value' a line")
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: a config file holds 'key: value' settings, not a {type(settings).__name__}")


def prepare_dataset(model, dataset, config_file_list, config_dict) -> Config:
    """Resolve the config as RecBole will and make sure the dataset's files exist."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    folder = ensure_dataset(config["dataset"], Path(config["data_path"]).parent)
    check_run_settings(config, folder)
    return config


# settings in RecBole's flat namespace carry their model's prefix; the old names are refused, not ignored
RENAMED_SETTINGS = {
    "distill_weight": "llmsrec_distill_weight",
    "uniformity_weight": "llmsrec_uniformity_weight",
    "lora_rank": "llm_lora_rank",
    "dry_run": "llm_dry_run",
    "max_train_steps": "llm_max_train_steps (LLMSeqPrompt) or llmsrec_max_train_steps (LLMSRec)",
}


def check_run_settings(config: Config, folder: Path) -> None:
    """Settings that would run and give a wrong or empty result, refused before any work."""
    from .registry import fits_in_one_pass
    from .secrets import refuse_secret_settings

    refuse_secret_settings(config.final_config_dict, "the run's settings")
    if config["enable_amp"] and str(config["device"]).startswith("cpu"):
        from .llm.states import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            raise ValueError("enable_amp=True trains in bf16 (CPU autocast), but this CPU has no AVX-512 BF16 "
                             "(see /proc/cpuinfo): bf16 would be emulated, slower than fp32. Set enable_amp=False")
    renamed = {key: RENAMED_SETTINGS[key] for key in config.external_config_dict if key in RENAMED_SETTINGS}
    if renamed:
        raise ValueError("settings renamed to carry their model's prefix: " + "; ".join(
            f"{old} -> {new}" for old, new in renamed.items()))
    check_numbers(config)
    check_known_keys(config)
    from .prepare import check_settings

    check_settings(config)  # the model's own options, before the data is read or anything is paid for
    epochs = config["epochs"]
    if not fits_in_one_pass(config) and (epochs is None or int(epochs) < 1):
        raise ValueError(f"epochs={epochs}: {config['model']} learns by training, give --epochs=1 or more")
    split = (config["eval_args"] or {}).get("split")
    time_field = config["TIME_FIELD"]
    inter = Path(folder) / f"{config['dataset']}.inter"
    if isinstance(split, dict) and "SESSION" in split and inter.is_file():
        import pandas as pd

        header = pd.read_csv(inter, sep="\t", nrows=0).columns
        column = next((c for c in header if c.split(":")[0] == time_field), None)
        if column is not None:
            times = pd.read_csv(inter, sep="\t", usecols=[column])[column]
            bad = int(pd.to_numeric(times, errors="coerce").isna().sum())
            if bad:
                raise ValueError(f"{inter}: {bad} interactions have no valid {time_field}; the SESSION split orders "
                                 "sessions by time, so fix or drop those rows (RecBole would fill them with the mean)")


# sizes that must be whole numbers of at least 1 (a 0 or a negative size fails deep inside torch)
POSITIVE_SIZES = ("hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads", "num_layers",
                  "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size", "embedding_dim", "llmsrec_dim",
                  "softmax_negatives", "llm_max_new_tokens", "prompt_samples")
NON_NEGATIVE_NUMBERS = ("learning_rate", "weight_decay", "embedding_max_cost_usd", "hidden_dropout_prob",
                        "attn_dropout_prob", "dropout_prob", "clip_grad_norm")


# the run script's own flags, which RecBole's Config also reads from the command line
SCRIPT_FLAGS = {"model", "dataset", "config_files", "nproc", "world_size", "ip", "port", "group_offset",
                "recbole_defaults", "tune", "max_evals", "folds", "params_file", "budget_seconds", "warmup",
                "early_stop", "prune_after", "output_dir", "debug", "m", "d"}


def declared_settings() -> set[str]:
    """Every key a yaml of ours declares: any model's, the presets', the datasets', and ``properties/settings.yaml``
    (settings read with a default in code)."""
    import yaml

    from .registry import PROPERTIES_DIR

    keys = set()
    for path in PROPERTIES_DIR.rglob("*.yaml"):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(loaded, dict):
            keys |= set(map(str, loaded))
    return keys


def check_known_keys(config) -> None:
    """A setting on the command line that no default, preset or user file declares is a typo until shown
    otherwise: ``--epoch=1`` would otherwise train the default 300 epochs. Declare a new key in your own yaml."""
    import difflib

    known = (set(config.internal_config_dict) | set(getattr(config, "file_config_dict", {}) or {})
             | set(getattr(config, "variable_config_dict", {}) or {}) | SCRIPT_FLAGS | declared_settings())
    for category in getattr(config, "parameters", {}).values():
        known |= set(category)
    unknown = sorted(set(getattr(config, "cmd_config_dict", {}) or {}) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(map(str, known)), n=1, cutoff=0.7)
            hints.append(f"--{key}" + (f" (did you mean --{close[0]}?)" if close else ""))
        raise ValueError(f"unknown setting {', '.join(hints)}: no default, preset or config file declares it; fix the "
                         "name, or declare it in your own yaml (--config_files) if a model of yours reads it")


def check_numbers(config) -> None:
    """Sizes and rates a run would otherwise fail on with a traceback far from the setting, named here."""
    for key in POSITIVE_SIZES:
        value = config[key]
        if value is None or (key == "embedding_dim" and value in ("auto",)):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r}: a whole number, 1 or more")
    for key in NON_NEGATIVE_NUMBERS:
        value = config[key]
        if value is None or isinstance(value, dict):  # clip_grad_norm may be RecBole's {max_norm: ...}
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ValueError(f"{key}={value!r}: a number, 0 or more")


class MultiProcessNeedsGPUs(ValueError):
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
    files = config_files(config_file_list, model, dataset) if protocol_defaults else list(config_file_list or [])
    prepare_dataset(model, dataset, files, config_dict)
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
