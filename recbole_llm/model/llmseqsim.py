"""LLMSeqSim: recommend the catalog items nearest to the pooled session embedding.

Exact by default on catalogs below ``llmseqsim_ann_min_items`` (one matrix product per batch); above it (or with
``llmseqsim_index: hnsw | ivf``) through an approximate faiss index that the prepare stage builds once and saves
beside the embedding file (``recbole_llm/embeddings/index.py``), the constructor only reading it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..embeddings.index import AnnSettings, ItemIndex, build_and_save, chosen_kind, index_file
from ..embeddings.pooling import check_strategy, pool
from ..embeddings.store import EmbeddingSpec, embedding_file, item_embedding_table, prepare_item_embeddings
from ..errors import SettingError
from ..registry import register_model
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort

SIMILARITIES = ("cosine", "dot", "euclidean")


@dataclass(frozen=True)
class LLMSeqSimSettings(AnnSettings):
    """LLMSeqSim's settings (defaults: ``properties/model/LLMSeqSim.yaml``)."""

    llmseqsim_pooling: str  # a strategy of recbole_llm/embeddings/pooling.py (checked by check_strategy)
    llmseqsim_similarity: Literal["cosine", "dot", "euclidean"]
    exclude_session_items: bool
    llmseqsim_index: Literal["auto", "exact", "hnsw", "ivf"]
    llmseqsim_ann_min_items: int
    llmseqsim_ann_candidates: int
    seed: int

    def index_kind(self, n_items: int) -> str:
        return chosen_kind("llmseqsim_index", self.llmseqsim_index, self.llmseqsim_ann_min_items, n_items)


def similarity_scores(sessions: torch.Tensor, items: torch.Tensor, similarity: str) -> torch.Tensor:
    """(B, n_items) scores, higher is closer; one matrix product per batch."""
    if similarity == "cosine":
        return torch.nn.functional.normalize(sessions, dim=1) @ torch.nn.functional.normalize(items, dim=1).T
    if similarity == "dot":
        return sessions @ items.T
    if similarity == "euclidean":
        return -torch.cdist(sessions, items)
    raise SettingError(f"Unknown similarity '{similarity}': choose one of {', '.join(SIMILARITIES)}")


@register_model
class LLMSeqSim(ScoresFromFullSort, SequentialRecommender):
    input_type = InputType.POINTWISE
    trainer_class = FitOnceTrainer
    needs_training = False
    settings_class = LLMSeqSimSettings

    @classmethod
    def check_settings(cls, config) -> None:
        check_strategy("llmseqsim_pooling", cls.settings_class.read(config).llmseqsim_pooling)

    @staticmethod
    def index_path(config, settings: LLMSeqSimSettings, kind: str, n_items: int):
        """Where the prepare stage saves the index and the constructor reads it: beside the embedding file it was
        built from, named by that file and the index's settings."""
        embeddings = embedding_file(config, EmbeddingSpec.from_config(config))[0]
        return index_file(embeddings, settings.llmseqsim_similarity, kind, {**settings.index_params(),
                                                                              "items": n_items})

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config)
        settings = cls.settings_class.read(config)
        kind = settings.index_kind(dataset.item_num)
        if kind != "exact":
            target = cls.index_path(config, settings, kind, dataset.item_num)
            if not target.is_file():
                build_and_save(item_embedding_table(config, dataset), target, settings.llmseqsim_similarity, kind,
                               settings.index_params(), seed=settings.seed)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.settings = settings = self.settings_class.read(config)
        self.pooling = settings.llmseqsim_pooling
        self.similarity = settings.llmseqsim_similarity
        self.exclude_session_items = settings.exclude_session_items
        self.register_buffer("item_table", dataset.item_embeddings(config))
        kind = settings.index_kind(self.n_items)
        self.candidates = settings.llmseqsim_ann_candidates
        self.index = None
        if kind != "exact":
            self.index = ItemIndex.load(self.index_path(config, settings, kind, self.n_items), self.item_table,
                                        self.similarity, kind, settings.ann_ef_search, settings.ann_nprobe)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # RecBole's optimiser needs one parameter

    def calculate_loss(self, interaction):
        return self.dummy.sum()

    def session_embedding(self, interaction) -> torch.Tensor:
        return pool(self.item_table, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.pooling)

    def full_sort_predict(self, interaction):
        if self.index is not None:
            return self._approximate_scores(interaction)
        scores = similarity_scores(self.session_embedding(interaction), self.item_table, self.similarity)
        scores[:, 0] = -torch.inf
        if self.exclude_session_items:
            seq = interaction[self.ITEM_SEQ]
            scores.scatter_(1, seq, -torch.inf)
            scores[:, 0] = -torch.inf
        return scores

    def _candidates(self, interaction, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The approximate index's top ``k`` + prompt-length items per session, the prompt's items refused."""
        seq = interaction[self.ITEM_SEQ]
        scores, ids = self.index.search(self.session_embedding(interaction), k + seq.shape[1])
        scores, ids = scores.to(seq.device), ids.to(seq.device)  # faiss answers on the CPU
        if self.exclude_session_items:
            scores = scores.masked_fill((ids.unsqueeze(2) == seq.unsqueeze(1)).any(2), -torch.inf)
        return scores.masked_fill(ids == 0, -torch.inf), ids

    def _approximate_scores(self, interaction) -> torch.Tensor:
        """[sessions, items]: the candidates' similarities, every other item -inf (ranked last)."""
        scores, ids = self._candidates(interaction, self.candidates)
        out = torch.full((len(ids), self.n_items), -torch.inf, device=ids.device)
        return out.scatter_(1, ids, scores)

    def topk(self, interaction, k: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, item ids) of the top ``k`` per session, without a [sessions, items] matrix when approximate."""
        if self.index is None:
            return self.full_sort_predict(interaction).topk(k, dim=1)
        scores, ids = self._candidates(interaction, k)
        top = scores.topk(k, dim=1)
        return top.values, ids.gather(1, top.indices)
