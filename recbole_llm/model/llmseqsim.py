"""LLMSeqSim: recommend the catalog items nearest to the pooled session embedding.

Exact by default on catalogs below ``llmseqsim_ann_min_items`` (one matrix product per batch); above it (or with
``llmseqsim_index: hnsw | ivf``) through an approximate faiss index that the prepare stage builds once and saves
beside the embedding file (``recbole_llm/embeddings/index.py``), the constructor only reading it."""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..embeddings.index import ItemIndex, build_and_save, chosen_kind, index_file, index_params
from ..embeddings.pooling import check_strategy, pool
from ..embeddings.store import EmbeddingSpec, embedding_file, item_embedding_table, prepare_item_embeddings
from ..errors import SettingError
from ..registry import register_model
from ..settings import config_value
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
    def index_kind(cls, config, n_items: int) -> str:
        return chosen_kind(config, "llmseqsim_index", "llmseqsim_ann_min_items", n_items, default="exact")

    index_params = staticmethod(index_params)

    @classmethod
    def index_path(cls, config, kind: str, n_items: int):
        """Where the prepare stage saves the index and the constructor reads it: beside the embedding file it was
        built from, named by that file and the index's settings."""
        embeddings = embedding_file(config, EmbeddingSpec.from_config(config))[0]
        return index_file(embeddings, config["llmseqsim_similarity"], kind, {**cls.index_params(config),
                                                                               "items": n_items})

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config)
        kind = cls.index_kind(config, dataset.item_num)
        if kind != "exact":
            target = cls.index_path(config, kind, dataset.item_num)
            if not target.is_file():
                build_and_save(item_embedding_table(config, dataset), target, config["llmseqsim_similarity"], kind,
                               cls.index_params(config), seed=int(config_value(config, "seed", 0)))

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.pooling = config["llmseqsim_pooling"]
        self.similarity = config["llmseqsim_similarity"]
        self.exclude_session_items = bool(config["exclude_session_items"])
        self.register_buffer("item_table", dataset.item_embeddings(config))
        kind = self.index_kind(config, self.n_items)
        self.candidates = int(config_value(config, "llmseqsim_ann_candidates", 200))
        self.index = None
        if kind != "exact":
            params = self.index_params(config)
            self.index = ItemIndex.load(self.index_path(config, kind, self.n_items), self.item_table, self.similarity,
                                        kind, params["ef_search"], params["nprobe"])
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
