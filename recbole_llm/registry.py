"""Makes models that live outside ``recbole.model`` first-class RecBole models.

RecBole looks models up by name with ``recbole.utils.get_model``, which only
searches ``recbole.model.*``, and it reads default yaml only from its own
``properties/model/<Name>.yaml``. We wrap both lookups once so that a registered
model is found by name everywhere RecBole takes one: ``Config``,
``run_recbole``, ``load_data_and_model`` and hyper-tuning objectives.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path

import yaml

from .errors import SettingError

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
if not PROPERTIES_DIR.is_dir():  # installed as a wheel: shipped inside the package
    PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"

_MODELS: dict[str, type] = {}
RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
_recbole_get_model = None
_recbole_get_trainer = None


def register_model(cls: type) -> type:
    """Class decorator: make ``cls`` findable by its name in RecBole."""
    _MODELS[cls.__name__] = cls
    return cls


def registered_models() -> list[str]:
    return sorted(_MODELS)


def get_model(model_name):
    """RecBole's ``get_model`` that also knows the models of recbole-llm."""
    if isinstance(model_name, type):
        return model_name
    if model_name in _MODELS:
        return _MODELS[model_name]
    for submodule in RECBOLE_MODEL_PACKAGES:
        path = f"recbole.model.{submodule}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(path) is not None
        except ModuleNotFoundError:  # exlib_recommender needs xgboost/lightgbm
            continue
        if found and hasattr(importlib.import_module(path), model_name):
            return getattr(importlib.import_module(path), model_name)
    raise SettingError(
        f"Unknown model '{model_name}'. recbole-llm models: {', '.join(registered_models())}; "
        "RecBole models: see https://recbole.io/model_list.html (names are case-sensitive)."
    )


def declares_setting(model_name, key: str) -> bool:
    """Whether the model's own settings (its ``settings_class``) declare ``key``: e.g. ``train_precision``, which
    only the Paper models and their subclasses read (through their CatalogTrainer). A model of RecBole's, or a name
    nothing resolves, declares none."""
    import dataclasses

    try:
        settings_class = getattr(get_model(model_name), "settings_class", None)
    except (SettingError, ImportError):  # unknown, or a RecBole model whose extra library is missing
        return False
    return dataclasses.is_dataclass(settings_class) and any(
        field.name == key for field in dataclasses.fields(settings_class))


def get_trainer(model_type, model_name):
    """RecBole's ``get_trainer``; a registered model may name its own trainer
    (memory-based models use RecBole's one-epoch ``TraditionalTrainer``)."""
    cls = _MODELS.get(model_name)
    trainer = getattr(cls, "trainer_class", None) if cls is not None else None
    if trainer is not None:
        return trainer
    return _recbole_get_trainer(model_type, model_name)


# RecBole models that are fitted in one pass over the training data (no early stopping to feed)
RECBOLE_ONE_PASS_MODELS = frozenset({"Pop", "ItemKNN"})


def fits_in_one_pass(config) -> bool:
    """Whether ``config['model']`` learns nothing by gradient descent (kNN, LLMSeqSim,
    Pop, a hybrid over a trained checkpoint): such a model needs no early-stopping
    holdout and, like the paper's, is fitted on every training session."""
    name = config["model"]
    if name in RECBOLE_ONE_PASS_MODELS:
        return True
    cls = _MODELS.get(name)
    if cls is None:
        return False
    decide = getattr(cls, "fits_in_one_pass", None)
    return bool(decide(config)) if callable(decide) else not getattr(cls, "needs_training", True)


def model_yaml_files(model_class: type) -> list[Path]:
    """Default yaml for ``model_class``, most general first: RecBole's file for
    each RecBole base class, then ours for each of our classes."""
    import recbole

    recbole_props = Path(recbole.__file__).parent / "properties" / "model"
    files = []
    for klass in reversed(model_class.__mro__):
        for folder in (recbole_props, PROPERTIES_DIR / "model"):
            candidate = folder / f"{klass.__name__}.yaml"
            if candidate.is_file() and candidate not in files:
                files.append(candidate)
    return files


def config_with_our_defaults(original):
    """``Config._load_internal_config_dict``: after RecBole's own defaults, our model yaml (and a companion
    model's, for models that wrap another) and our dataset yaml."""

    @functools.wraps(original)
    def _load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        if model_class.__name__ in _MODELS:
            for file in model_yaml_files(model_class):
                self._update_internal_config_dict(str(file))
            companion_key = getattr(model_class, "companion_model_key", None)
            if companion_key:  # a model that wraps another needs that model's defaults too
                companion = self.external_config_dict.get(companion_key) or self.internal_config_dict[companion_key]
                own = dict(self.internal_config_dict)
                for file in model_yaml_files(get_model(companion)):
                    self._update_internal_config_dict(str(file))
                self.internal_config_dict.update(own)
        dataset_file = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            loaded = self._update_internal_config_dict(str(dataset_file)) or {}
            self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    return _load_internal_config_dict


UNIFORM_NEGATIVE = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0}


def negative_sampling_per_model(original):
    """``Config._set_default_parameters``. One protocol for every model: the preset turns negative sampling
    off (CE over the catalog), which a pairwise model (BPR, a loss_type: BPR model) cannot train without;
    RecBole's defaults turn it on, which a sequential CE model refuses. Each model gets what its loss needs;
    only settings RecBole would refuse or crash on are changed, and the log says so."""
    import logging

    from recbole.utils import InputType, ModelType

    @functools.wraps(original)
    def _set_default_parameters(self):
        config = self.final_config_dict
        sampling = config.get("train_neg_sample_args")
        if (not hasattr(self.model_class, "input_type") and config.get("loss_type") == "CE"
                and getattr(self.model_class, "type", None) == ModelType.SEQUENTIAL and sampling is not None):
            logging.getLogger(__name__).info("loss_type CE scores the whole catalog: train_neg_sample_args off")
            config["train_neg_sample_args"] = None
        original(self)
        if config.get("MODEL_INPUT_TYPE") == InputType.PAIRWISE and config.get("train_neg_sample_args") is None:
            logging.getLogger(__name__).info("a pairwise loss needs negatives: train_neg_sample_args uniform, 1")
            config["train_neg_sample_args"] = dict(UNIFORM_NEGATIVE)

    return _set_default_parameters


def route_get_model(original):
    """RecBole's ``get_model`` (in every module that imported it) finds our registered models too."""
    global _recbole_get_model
    _recbole_get_model = _recbole_get_model or original
    return get_model


def route_get_trainer(original):
    """RecBole's ``get_trainer`` (in every module that imported it) returns a model's own trainer class."""
    global _recbole_get_trainer
    _recbole_get_trainer = _recbole_get_trainer or original
    return get_trainer


def load_yaml(path: os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}
