"""Models that keep the LLM's item semantics in the trained item vector, not only in its starting point.

LLM2SASRec starts its item table from the LLM embeddings and then trains every coordinate: what the text said can
be trained away. Two published designs keep it; ours are written on PaperSASRec and PaperGRU4Rec (so every option
of those, all-position training and sampled softmax included, applies) and read the prepared embedding files of
the prepare stage (``prepare_resources``), never a provider:

- ``AlphaFuseSASRec`` / ``AlphaFuseGRU4Rec`` (after AlphaFuse, Hu et al., SIGIR 2025, github Hugo-Chinn/AlphaFuse):
  the item vector is the LLM embedding's leading principal components, whitened (each has unit variance), frozen;
  a trainable ID vector is added to its last ``alphafuse_id_dim`` coordinates, the lowest-variance directions the
  table keeps (AlphaFuse's "null space" of the kept basis; its default fuses by sum, ``cover=False``). The same
  table is the input and the output layer. The semantic part of every item, cold ones included, never moves; their
  ID parts do train (the catalog softmax reaches every item), so a cold item's vector is not exactly its text's.
- ``LLMESRSASRec`` / ``LLMESRGRU4Rec`` (after LLM-ESR, Liu et al., NeurIPS 2024, github liuqidong07/LLM-ESR): two
  views of a sequence through one shared encoder: the ID view (a trainable table started from the PCA of the LLM
  embeddings, as LLM2SASRec) and the LLM view (the frozen full LLM embeddings through a two-layer linear adapter,
  ``llmesr_adapter_hidden`` wide). The sequence state and the item vector are the two views concatenated, so a
  score is the sum of the two views' dot products. Left out, as options of the paper we do not build: its
  cross-attention between the views and its retrieval-augmented self-distillation (ten more encoder passes per
  session, with user embeddings from a paid LLM).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..data.windows import TARGETS
from ..embeddings.store import prepare_item_embeddings
from ..errors import SettingError
from ..registry import register_model
from ..settings import ModelSettings
from . import output_head, position_losses
from .llm2seq import LLMInitMixin, LLMInitSettings
from .sequential import CausalSettings, PaperGRU4Rec, PaperSASRec, PaperSASRecSettings


@dataclass(frozen=True)
class AlphaFuseSettings(ModelSettings):
    """AlphaFuse's table (defaults: ``properties/model/AlphaFuse*.yaml``)."""

    embedding_reduction: str
    alphafuse_id_dim: int | None  # ~: half the item size
    alphafuse_id_init: Literal["zeros", "normal"]
    alphafuse_semantic_std: float


@dataclass(frozen=True)
class AlphaFuseSASRecSettings(PaperSASRecSettings, AlphaFuseSettings):
    pass


@dataclass(frozen=True)
class AlphaFuseGRU4RecSettings(CausalSettings, AlphaFuseSettings):
    pass


@dataclass(frozen=True)
class LLMESRSettings(LLMInitSettings):
    """LLM-ESR's LLM view (defaults: ``properties/model/LLMESR*.yaml``)."""

    llmesr_adapter_hidden: int | None  # ~: half the LLM's size


@dataclass(frozen=True)
class LLMESRSASRecSettings(PaperSASRecSettings, LLMESRSettings):
    pass


@dataclass(frozen=True)
class LLMESRGRU4RecSettings(CausalSettings, LLMESRSettings):
    pass


class SemanticIDTable(torch.nn.Module):
    """AlphaFuse's item table, read like ``nn.Embedding`` (``weight``, ``embedding_dim``, ``forward(ids)``): a
    frozen semantic table [items, d] with a trainable ID part [items, k] added to its last k columns. Row 0
    (padding) stays zero."""

    def __init__(self, semantic: torch.Tensor, id_dim: int, id_init: Literal["zeros", "normal"] = "zeros"):
        super().__init__()
        rows, size = semantic.shape
        if not 0 < id_dim <= size:
            raise SettingError(f"alphafuse_id_dim must be between 1 and the item size {size}; got {id_dim}")
        self.register_buffer("semantic", semantic.clone())
        self.id_weight = torch.nn.Parameter(torch.zeros(rows, id_dim))
        if id_init == "normal":
            torch.nn.init.normal_(self.id_weight)
        self.register_buffer("rows_with_id", (torch.arange(rows) > 0).float().unsqueeze(1), persistent=False)
        self.embedding_dim, self.num_embeddings, self.id_dim = size, rows, id_dim

    @property
    def weight(self) -> torch.Tensor:
        kept = self.semantic.shape[1] - self.id_dim
        fused = self.semantic[:, kept:] + self.id_weight * self.rows_with_id
        return torch.cat([self.semantic[:, :kept], fused], dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.weight)


def whitened_principal_components(config, dataset, rows: int, size: int, std: float) -> torch.Tensor:
    """The prepared PCA table (``embedding_reduction: pca`` to ``size``) with each component scaled to standard
    deviation ``std`` over the catalog: PCA coordinates are centred and uncorrelated, so this whitens them, as
    AlphaFuse's ``standardization``. Row 0 (padding) is zero."""
    table = dataset.item_embeddings(config, size)[:rows]
    items = table[1:]
    table[1:] = (items - items.mean(0)) / items.std(0).clamp_min(1e-12) * std
    table[0] = 0.0
    return table


class AlphaFuseMixin:
    """After the Paper model's own init: its item table becomes a ``SemanticIDTable``."""

    table_size_key = "hidden_size"

    @classmethod
    def check_settings(cls, config) -> None:
        settings = cls.settings_class.read(config)
        if settings.embedding_reduction != "pca":
            raise SettingError("AlphaFuse's semantic space is the principal components of the LLM embeddings: set "
                               f"embedding_reduction: pca (got {settings.embedding_reduction!r})")
        size, id_dim = int(config[cls.table_size_key]), settings.alphafuse_id_dim
        if id_dim is not None and not 0 < id_dim <= size:
            raise SettingError(f"alphafuse_id_dim must be between 1 and {cls.table_size_key} ({size}); got {id_dim}")

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config, int(config[cls.table_size_key]))

    def _use_semantic_table(self, config, dataset) -> None:
        size = int(config[self.table_size_key])
        id_dim = self.settings.alphafuse_id_dim or size // 2
        semantic = whitened_principal_components(config, dataset, self.n_items, size,
                                                 self.settings.alphafuse_semantic_std)
        self.item_embedding = SemanticIDTable(semantic, id_dim, self.settings.alphafuse_id_init)


@register_model
class AlphaFuseSASRec(AlphaFuseMixin, PaperSASRec):
    settings_class = AlphaFuseSASRecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._use_semantic_table(config, dataset)


@register_model
class AlphaFuseGRU4Rec(AlphaFuseMixin, PaperGRU4Rec):
    settings_class = AlphaFuseGRU4RecSettings
    table_size_key = "embedding_size"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._use_semantic_table(config, dataset)


def full_llm_config(config) -> dict:
    """The settings of the LLM view's table: the same embedder and text, unreduced."""
    settings = dict(config.final_config_dict) if hasattr(config, "final_config_dict") else dict(config)
    settings.update({"embedding_reduction": "none", "embedding_dim": None})
    return settings


class DualViewMixin(LLMInitMixin):
    """LLM-ESR's two views through the model's one encoder (``_encode``), concatenated. The ID view starts as
    LLM2SASRec's table does (``LLMInitMixin``: the PCA of the LLM embeddings, ``embedding_scale``)."""

    @classmethod
    def check_settings(cls, config) -> None:
        if cls.settings_class.read(config).output_dense is not None:
            raise SettingError("LLM-ESR's state is the two views concatenated, scored against the two item tables "
                               "concatenated: output_dense (a Dense on one table's size) does not apply; set it to ~")
        if config["loss_type"] != "CE":
            raise SettingError("LLMESR models train with the catalog cross-entropy (loss_type: CE)")

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        super().prepare_resources(config, dataset)  # the ID view's start (PCA)
        prepare_item_embeddings(full_llm_config(config))  # the LLM view

    def _add_llm_view(self, config, dataset) -> None:
        size = int(config[self.table_size_key])
        self._load_llm_item_table(config, dataset, size)  # the ID view
        llm = dataset.item_embeddings(full_llm_config(config))[: self.n_items]
        llm[0] = 0.0
        self.register_buffer("llm_table", llm)
        hidden = self.settings.llmesr_adapter_hidden or llm.shape[1] // 2
        self.adapter = torch.nn.Sequential(torch.nn.Linear(llm.shape[1], hidden), torch.nn.Linear(hidden, size))
        for layer in self.adapter:
            torch.nn.init.xavier_normal_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def catalog_table(self) -> torch.Tensor:
        """[items, 2 x size]: each item's ID vector and its adapted LLM vector."""
        return torch.cat([self.item_embedding.weight[: self.n_items], self.adapter(self.llm_table)], dim=1)

    def forward(self, item_seq, item_seq_len):
        ids = self._encode(self.item_embedding(item_seq), item_seq, item_seq_len)
        llm = self._encode(self.adapter(self.llm_table[item_seq]), item_seq, item_seq_len)
        return torch.cat([ids, llm], dim=-1)  # no head: output_dense is refused, an activation would act on both

    def calculate_loss(self, interaction):
        if TARGETS in interaction.interaction:
            return position_losses.all_positions_loss(self, interaction)
        return output_head.last_position_loss(self, interaction)

    def full_sort_predict(self, interaction):
        scores = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]) @ self.catalog_table().T
        bias = output_head.bias(self)
        return scores if bias is None else scores + bias

    def predict(self, interaction):
        return self.full_sort_predict(interaction).gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)


@register_model
class LLMESRSASRec(DualViewMixin, PaperSASRec):
    settings_class = LLMESRSASRecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._add_llm_view(config, dataset)

    def _encode(self, item_emb, item_seq, item_seq_len):
        """RecBole's ``SASRec.forward`` from the item vectors on: positions, LayerNorm, dropout, the encoder."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        hidden = self.dropout(self.LayerNorm(item_emb + self.position_embedding(positions)))
        output = self.trm_encoder(hidden, self.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]
        return self.gather_indexes(output, item_seq_len - 1)


@register_model
class LLMESRGRU4Rec(DualViewMixin, PaperGRU4Rec):
    settings_class = LLMESRGRU4RecSettings
    table_size_key = "embedding_size"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._add_llm_view(config, dataset)

    def _encode(self, item_emb, item_seq, item_seq_len):
        """RecBole's ``GRU4Rec.forward`` from the item vectors on: dropout, the GRU, its dense layer."""
        output, _ = self.gru_layers(self.emb_dropout(item_emb))
        return self.gather_indexes(self.dense(output), item_seq_len - 1)
