"""LLM2SASRec, LLM2BERT4Rec, LLM2GRU4Rec: PaperSASRec, PaperBERT4Rec and PaperGRU4Rec
(``sequential.py``: RecBole's models with the paper's options) whose item-embedding table
starts from (reduced) LLM embeddings.

Each subclasses its Paper model and changes only the start: after RecBole's
own weight init, the item rows are overwritten with the LLM embeddings of the
catalog (padding stays zero; BERT4Rec's mask row keeps RecBole's init). SASRec's
output layer is tied to the same table, so it starts semantic too.

Scale (``embedding_scale``): ``std`` (default) rescales the table so its
standard deviation equals what RecBole's init gave that table (0.02 for the
transformers, Xavier for GRU4Rec). Raw MiniLM/PCA coordinates are ~5-50x
larger than that, which would saturate LayerNorm inputs and the softmax at the
start; rescaling keeps the geometry (cosines, neighbours) and the scale the
model's optimiser settings were tuned for. ``none`` copies the raw values,
``unit`` L2-normalises rows and then applies ``std``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..embeddings.store import prepare_item_embeddings
from ..registry import register_model
from ..settings import ModelSettings
from .sequential import (CausalSettings, PaperBERT4Rec, PaperBERT4RecSettings, PaperGRU4Rec, PaperSASRec,
                         PaperSASRecSettings)


@dataclass(frozen=True)
class LLMInitSettings(ModelSettings):
    """How the LLM table starts the item table (defaults: ``properties/model/LLM2*.yaml``)."""

    embedding_scale: Literal["std", "none", "unit"]
    embedding_freeze: bool
    embedding_permute: bool
    seed: int


@dataclass(frozen=True)
class LLM2SASRecSettings(PaperSASRecSettings, LLMInitSettings):
    pass


@dataclass(frozen=True)
class LLM2BERT4RecSettings(PaperBERT4RecSettings, LLMInitSettings):
    pass


@dataclass(frozen=True)
class LLM2GRU4RecSettings(CausalSettings, LLMInitSettings):
    pass


def llm_item_table(config, dataset, settings: LLMInitSettings, rows: int, dim: int,
                   reference_std: float) -> torch.Tensor:
    """The LLM table for item ids 0..rows-1, scaled and optionally permuted."""
    table = dataset.item_embeddings(config, dim)[:rows]
    if settings.embedding_scale == "unit":
        table[1:] = torch.nn.functional.normalize(table[1:], dim=1)
    if settings.embedding_scale in ("std", "unit"):
        table[1:] *= reference_std / table[1:].std().clamp_min(1e-12)
    if settings.embedding_permute:
        generator = torch.Generator().manual_seed(settings.seed)
        table[1:] = table[1:][torch.randperm(rows - 1, generator=generator)]
    return table


class LLMInitMixin:
    """Overwrites ``self.item_embedding`` rows 0..n_items-1 after RecBole's init."""

    table_size_key = "hidden_size"  # the setting that sizes the item table (GRU4Rec: embedding_size)

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config, int(config[cls.table_size_key]))

    def _load_llm_item_table(self, config, dataset, dim: int) -> None:
        weight = self.item_embedding.weight
        n_items = self.n_items
        with torch.no_grad():
            reference_std = float(weight[1:n_items].std())
            weight[:n_items] = llm_item_table(config, dataset, self.settings, n_items, dim, reference_std)
            weight[0] = 0.0
        self.embedding_frozen = self.settings.embedding_freeze
        if self.embedding_frozen:
            if weight.shape[0] == n_items:
                weight.requires_grad_(False)
            else:  # BERT4Rec: the [MASK] row must keep learning
                mask = torch.zeros_like(weight[:, :1])
                mask[n_items:] = 1.0
                weight.register_hook(lambda grad: grad * mask.to(grad.device))


@register_model
class LLM2SASRec(LLMInitMixin, PaperSASRec):
    settings_class = LLM2SASRecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._load_llm_item_table(config, dataset, self.hidden_size)


@register_model
class LLM2BERT4Rec(LLMInitMixin, PaperBERT4Rec):
    settings_class = LLM2BERT4RecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._load_llm_item_table(config, dataset, self.hidden_size)


@register_model
class LLM2GRU4Rec(LLMInitMixin, PaperGRU4Rec):
    settings_class = LLM2GRU4RecSettings
    table_size_key = "embedding_size"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._load_llm_item_table(config, dataset, self.embedding_size)
