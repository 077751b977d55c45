"""Our datasets: RecBole's ``Dataset`` and ``SequentialDataset`` with the paper's protocol and the prepared item
tables, the way UniSRec's ``UniSRecDataset`` carries its PLM embeddings.

- ``build`` learns the temporal SESSION split and ``train_mode`` (``data/protocol.py`` computes both).
- ``item_embeddings`` and ``item_texts`` hand a model the item table the prepare stage made and the catalog's text,
  read once per data set (the splits share it), so a model's constructor reads the dataset, never a file.

``create_dataset`` picks the class: ours for recbole-llm's models and for any run that asks for the SESSION split or a
``train_mode``; RecBole's own classes otherwise, so a plain RecBole run after ``import recbole_llm`` is RecBole's.
"""
from __future__ import annotations

import json
import os

import torch

from .data.protocol import SPLIT_KEY, session_split, with_train_mode
from .data.windows import prefix_rows
from .embeddings.store import EmbeddingSpec, catalog_titles, embedding_file, item_embedding_table
from .errors import SettingError
from .registry import registered_models
from .settings import config_value


class _PaperProtocol:
    """What our two dataset classes add to RecBole's: the split and the prepared item tables."""

    def _from_scratch(self):
        super()._from_scratch()
        self._item_tables = {}  # shared by the splits (RecBole's copy is shallow): one read per data set

    def build(self):
        if uses_session_split(self.config):
            if self.config["eval_args"]["order"] != "TO":
                raise SettingError("The SESSION split needs eval_args.order: TO.")
            datasets = session_split(self)
        else:
            datasets = super().build()
        return with_train_mode(self, datasets)

    def item_embeddings(self, config, dim: int | None = None) -> torch.Tensor:
        """The (item_num, d) item table ``config`` asks for (``dim`` forces the reduced size), from the file the
        prepare stage made: read on the first call; every model built on this data gets its own copy of it (so a
        model may change its rows; the data set holds one more copy of each table it served, for its lifetime)."""
        spec = EmbeddingSpec.from_config(config, dim)
        key = ("embeddings", str(embedding_file(config, spec)[0]), dim,
               json.dumps(spec.recipe(), sort_keys=True, default=str))
        if key not in self._item_tables:
            self._item_tables[key] = item_embedding_table(config, self, dim)
        return self._item_tables[key].clone()  # a model may scale or zero its rows in place

    def item_texts(self, config) -> list[str]:
        """Item text by internal id (row 0: padding), built as the embeddings' text: read once."""
        key = ("texts", config["data_path"], json.dumps(EmbeddingSpec.from_config(config).recipe(), sort_keys=True,
                                                       default=str))
        if key not in self._item_tables:
            self._item_tables[key] = catalog_titles(config, self)
        return list(self._item_tables[key])


def _data_augmentation(self, keep=None):
    """RecBole's prefix rows, built by ``data/windows.py:prefix_rows`` (the same rows, vectorised; only those
    ``keep`` selects where the split passes it)."""
    prefix_rows(self, keep)


_CLASSES: dict[str, type] = {}


def _classes() -> tuple[type, type]:
    """(PaperDataset, PaperSequentialDataset), made on first use: importing recbole_llm must not import RecBole's
    data stack. Reached by name too (module ``__getattr__``), so a pickled dataset loads in a fresh process."""
    if not _CLASSES:
        from recbole.data.dataset import Dataset, SequentialDataset

        _CLASSES["PaperDataset"] = type("PaperDataset", (_PaperProtocol, Dataset), {
            "__doc__": "RecBole's Dataset with the paper's SESSION split, train_mode and the prepared item tables.",
            "__module__": __name__, "__qualname__": "PaperDataset"})
        _CLASSES["PaperSequentialDataset"] = type("PaperSequentialDataset", (_PaperProtocol, SequentialDataset), {
            "__doc__": "RecBole's SequentialDataset with the paper's SESSION split, train_mode and the prepared "
                       "item tables.",
            "__module__": __name__, "__qualname__": "PaperSequentialDataset",
            "data_augmentation": _data_augmentation})
    return _CLASSES["PaperDataset"], _CLASSES["PaperSequentialDataset"]


def __getattr__(name: str):
    if name in ("PaperDataset", "PaperSequentialDataset"):
        return dict(zip(("PaperDataset", "PaperSequentialDataset"), _classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def uses_session_split(config) -> bool:
    split = config["eval_args"]["split"]
    return isinstance(split, dict) and SPLIT_KEY in split


def dataset_class(config):
    """Our class for this run, or None where RecBole's own is the right one."""
    import importlib

    from recbole.utils import ModelType

    asks = uses_session_split(config) or config_value(config, "train_mode", "prefixes") != "prefixes"
    if config["model"] not in registered_models() and not asks:
        return None
    own = importlib.import_module("recbole.data.dataset")
    kind = config["MODEL_TYPE"]
    if hasattr(own, config["model"] + "Dataset") or kind == ModelType.KNOWLEDGE:
        if asks:
            raise SettingError(f"{config['model']} reads RecBole's own dataset class, which knows neither the "
                               "SESSION split nor train_mode: use eval_args.split RS/LS and train_mode: prefixes")
        return None
    general, sequential = _classes()
    return sequential if kind == ModelType.SEQUENTIAL else general


def _saved(config, cls):
    """The dataset RecBole's ``save`` wrote for this class (``dataset_save_path`` or its default file), if it exists
    and was built with the same data settings (RecBole's own test), else None."""
    import pickle

    from recbole.utils.argument_list import dataset_arguments

    file = config["dataset_save_path"] or os.path.join(config["checkpoint_dir"],
                                                       f"{config['dataset']}-{cls.__name__}.pth")
    if not os.path.exists(file):
        return None
    with open(file, "rb") as handle:
        dataset = pickle.load(handle)
    if not isinstance(dataset, cls):
        return None  # saved by RecBole's own class (or another of ours): it knows nothing of this run's protocol
    if any(config[arg] != dataset.config[arg] for arg in dataset_arguments + ["seed", "repeatable"]):
        return None
    return dataset


def create_dataset_route(original):
    """RecBole's ``create_dataset`` with our class where ``dataset_class`` picks one (the patch table's row: RecBole
    chooses dataset classes only among its own). A saved dataset is reused only if it is of that class."""
    def create_dataset(config):
        cls = dataset_class(config)
        if cls is None:
            return original(config)
        dataset = _saved(config, cls)
        if dataset is None:
            dataset = cls(config)
            if config["save_dataset"]:
                dataset.save()
        return dataset

    create_dataset.__doc__ = original.__doc__
    return create_dataset
