"""Checks before any work: the settings of a run resolved as RecBole will, refused when they would run and give a
wrong or empty result (unknown or renamed keys, impossible sizes, options a model ignores, a CPU without bf16), and
the dataset's files made sure of. Shared by every entry point (``pipeline``, ``quick_start.run``, tuning)."""
from __future__ import annotations

from pathlib import Path

from recbole.config import Config

from .data.datasets import ensure_dataset
from .errors import SettingError


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


def _trains_with_catalog_trainer(config) -> bool:
    """Whether the configured model trains through ``CatalogTrainer``, the reader of ``learner: lazy_adam`` and
    ``train_precision`` (the Paper models and their subclasses)."""
    from .lazy_adam import CatalogTrainer
    from .registry import get_trainer

    return issubclass(get_trainer(config["MODEL_TYPE"], config["model"]), CatalogTrainer)


def check_run_settings(config: Config, folder: Path) -> None:
    """Settings that would run and give a wrong or empty result, refused before any work."""
    from .registry import fits_in_one_pass
    from .secrets import refuse_secret_settings

    refuse_secret_settings(config.final_config_dict, "the run's settings")
    if config["enable_amp"] and str(config["device"]).startswith("cpu"):
        from .llm.precision import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            raise SettingError("enable_amp=True trains in bf16 (CPU autocast), but this CPU has no AVX-512 BF16 "
                             "(see /proc/cpuinfo): bf16 would be emulated, slower than fp32. Set enable_amp=False")
    if config["train_precision"] not in (None, "fp32"):  # a Paper model's CatalogTrainer: refuse bf16 up front
        from .registry import declares_setting

        if declares_setting(config["model"], "train_precision"):  # the models checkpoints hash it for
            from .lazy_adam import CatalogTrainer

            CatalogTrainer.resolve_train_precision(config["train_precision"], config["device"])
        elif "train_precision" in (config.external_config_dict or {}):  # not a wrapped partner's own yaml default
            raise SettingError(f"train_precision is read by the trainer of PaperSASRec, PaperGRU4Rec, PaperBERT4Rec "
                               f"and their subclasses; {config['model']}'s would ignore it (RecBole's enable_amp is "
                               "the switch of other trainers)")
    if str(config["learner"] or "").lower() == "lazy_adam" and not _trains_with_catalog_trainer(config):
        raise SettingError(f"learner: lazy_adam updates the touched item rows of PaperSASRec, PaperGRU4Rec, "
                           f"PaperBERT4Rec and their subclasses; {config['model']}'s trainer would silently use "
                           "Adam instead: use learner: adam, or the Paper model")
    renamed = {key: RENAMED_SETTINGS[key] for key in config.external_config_dict if key in RENAMED_SETTINGS}
    if renamed:
        raise SettingError("settings renamed to carry their model's prefix: " + "; ".join(
            f"{old} -> {new}" for old, new in renamed.items()))
    check_numbers(config)
    check_known_keys(config)
    from .model.sequential import refuse_options_recbole_ignores
    from .registry import get_model

    refuse_options_recbole_ignores(config, get_model(config["model"]))
    from .prepare import check_settings

    check_settings(config)  # the model's own options, before the data is read or anything is paid for
    from .embeddings.providers.local import check_local_embedding_model

    check_local_embedding_model(config)
    epochs = config["epochs"]
    if not fits_in_one_pass(config) and (epochs is None or int(epochs) < 1):
        raise SettingError(f"epochs={epochs}: {config['model']} learns by training, give --epochs=1 or more")
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
                raise SettingError(f"{inter}: {bad} interactions have no valid {time_field}; the SESSION split orders "
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
                "early_stop", "prune_after", "output_dir", "debug", "m", "d", "check"}


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
        raise SettingError(f"unknown setting {', '.join(hints)}: no default, preset or config file declares it; fix the "
                         "name, or declare it in your own yaml (--config_files) if a model of yours reads it")


def check_numbers(config) -> None:
    """Sizes and rates a run would otherwise fail on with a traceback far from the setting, named here."""
    for key in POSITIVE_SIZES:
        value = config[key]
        if value is None or (key == "embedding_dim" and value in ("auto",)):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(f"{key}={value!r}: a whole number, 1 or more")
    for key in NON_NEGATIVE_NUMBERS:
        value = config[key]
        if value is None or isinstance(value, dict):  # clip_grad_norm may be RecBole's {max_norm: ...}
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise SettingError(f"{key}={value!r}: a number, 0 or more")
