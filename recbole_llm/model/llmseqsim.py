"""LLMSeqSim: recommend the catalog items nearest to the pooled session embedding."""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..embeddings.pooling import check_strategy, pool
from ..embeddings.store import item_embedding_table, prepare_item_embeddings
from ..errors import SettingError
from ..registry import register_model
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort

SIMILARITIES = ("cosine", "dot", "euclidean")


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

    @classmethod
    def check_settings(cls, config) -> None:
        check_strategy("llmseqsim_pooling", config["llmseqsim_pooling"])
        if config["llmseqsim_similarity"] not in SIMILARITIES:
            raise SettingError(f"llmseqsim_similarity must be one of {', '.join(SIMILARITIES)}; "
                             f"got {config['llmseqsim_similarity']!r}")

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.pooling = config["llmseqsim_pooling"]
        self.similarity = config["llmseqsim_similarity"]
        self.exclude_session_items = bool(config["exclude_session_items"])
        self.register_buffer("item_table", item_embedding_table(config, dataset))
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # RecBole's optimiser needs one parameter

    def calculate_loss(self, interaction):
        return self.dummy.sum()

    def session_embedding(self, interaction) -> torch.Tensor:
        return pool(self.item_table, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.pooling)

    def full_sort_predict(self, interaction):
        scores = similarity_scores(self.session_embedding(interaction), self.item_table, self.similarity)
        scores[:, 0] = -torch.inf
        if self.exclude_session_items:
            seq = interaction[self.ITEM_SEQ]
            scores.scatter_(1, seq, -torch.inf)
            scores[:, 0] = -torch.inf
        return scores


