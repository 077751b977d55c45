"""Session-kNN (Ludewig & Jannach 2018) and SKNN-Emb, as the paper's code computes them.

Training sessions are rows of a binary session x item matrix M. A batch of
prompts becomes a sparse matrix Q; Q @ M.T gives, for every prompt, the
candidate neighbours (training sessions sharing at least one item with it).
Of those, ``sknn_sample_size`` are kept (the most recent, or a random sample),
the ``sknn_k`` most similar become neighbours, and an item's score is the sum of
the similarities of the neighbours holding it (``main/sknn/sknn.py`` of the
original). Items that no neighbour holds have no evidence; they are ranked
after every evidenced item, by training popularity (``sknn_backfill:
popularity``), instead of filling the list as arbitrary zero-score ties.

- SKNN: set overlap, cosine or dot similarity.
- VSKNN: prompt items weighted by position decay (any pooling strategy).
- SSKNN: a neighbour's similarity is scaled by x/|s|, x the position (1 = oldest)
  of the latest prompt item it shares (``sknn_sequential_weighting: linear``, the
  original); ``div``: 1 / distance of that item from the prompt's end (session-rec).
- SFSKNN: only items that follow the prompt's last item somewhere in the training
  data (a global "followed-by" map) are scored.
- SKNNEmb: candidates as above, similarity between LLM session embeddings, with
  separate pooling for training sessions and the prompt.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from dataclasses import dataclass
from typing import Literal

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..data.sessions import training_sessions
from ..embeddings.index import AnnSettings, ItemIndex, chosen_kind, recall_at_k
from ..embeddings.pooling import check_strategy, pool, position_weights
from ..embeddings.store import prepare_item_embeddings
from ..registry import register_model
from ..settings import ModelSettings
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort



@dataclass(frozen=True)
class SessionKNNSettings(ModelSettings):
    """The neighbourhood's settings (defaults: ``properties/model/<Model>.yaml`` of each kNN model)."""

    sknn_k: int
    sknn_sample_size: int | None  # ~ or 0: every candidate
    sknn_sampling: Literal["recent", "random"]
    sknn_similarity: Literal["cosine", "dot"]
    sknn_idf_weighting: bool
    sknn_backfill: Literal["popularity", "none"]
    exclude_session_items: bool
    seed: int


@dataclass(frozen=True)
class VSKNNSettings(SessionKNNSettings):
    sknn_decay: str  # a position-weight strategy of recbole_llm/embeddings/pooling.py


@dataclass(frozen=True)
class SSKNNSettings(SessionKNNSettings):
    sknn_sequential_weighting: Literal["linear", "div"]


@dataclass(frozen=True)
class SFSKNNSettings(SessionKNNSettings):
    sfsknn_followers: Literal["global", "neighbour"]


@dataclass(frozen=True)
class SKNNEmbSettings(SessionKNNSettings, AnnSettings):
    sknn_prompt_pooling: str  # pooling strategies of recbole_llm/embeddings/pooling.py
    sknn_train_pooling: str
    sknn_emb_candidates: Literal["shared_item", "all"]
    sknn_emb_index: Literal["auto", "exact", "hnsw", "ivf"]
    sknn_emb_ann_min_sessions: int

    def index_kind(self, n_sessions: int) -> str:
        """``sknn_emb_candidates: all`` searches every training session: exactly, or through a faiss index
        (``sknn_emb_index``: auto = HNSW above ``sknn_emb_ann_min_sessions`` sessions)."""
        return chosen_kind("sknn_emb_index", self.sknn_emb_index, self.sknn_emb_ann_min_sessions, n_sessions)


class SessionKNNBase(ScoresFromFullSort, SequentialRecommender):
    """Shared neighbourhood machinery; subclasses choose the similarity, the
    neighbour weights and which items may be scored."""

    input_type = InputType.POINTWISE
    trainer_class = FitOnceTrainer
    needs_training = False
    decay = "mean"  # SKNN weighs every prompt item the same
    settings_class = SessionKNNSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.settings = settings = self.settings_class.read(config)
        self.k = settings.sknn_k
        self.sample_size = settings.sknn_sample_size or 0
        self.sampling = settings.sknn_sampling
        self.similarity = settings.sknn_similarity
        self.idf_weighting = settings.sknn_idf_weighting
        self.backfill = settings.sknn_backfill
        self.exclude_session_items = settings.exclude_session_items
        self.rng = np.random.default_rng(settings.seed)
        self.sessions, self.session_end = training_sessions(dataset)
        self._index_sessions()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def _index_sessions(self) -> None:
        """The session x item matrix and what is derived from it (called again by tests that swap sessions)."""
        rows = np.repeat(np.arange(len(self.sessions)), [len(s) for s in self.sessions])
        cols = np.concatenate(self.sessions) if self.sessions else np.zeros(0, np.int64)
        matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(self.sessions), self.n_items))
        matrix.data[:] = 1.0  # duplicates count once
        self.M = matrix
        self.MT = matrix.T.tocsr()
        self.session_size = np.asarray(matrix.sum(1)).ravel()
        df = np.asarray(matrix.sum(0)).ravel()
        self.idf = (1 + np.log(len(self.sessions) / np.maximum(df, 1))).astype(np.float32)  # as the original
        # the backfill order: training interactions per item, scaled into [0, 1)
        counts = np.bincount(cols, minlength=self.n_items).astype(np.float32)
        self.backfill_scores = torch.as_tensor(counts / (counts.max() + 1.0) if len(cols) else counts)

    def calculate_loss(self, interaction):
        return self.dummy.sum()

    def prompt_weights(self, seq: np.ndarray, lengths: np.ndarray) -> sp.csr_matrix:
        """(B, n_items) weight of each prompt item; a repeated item keeps its largest weight."""
        weights = position_weights(torch.as_tensor(lengths), seq.shape[1], self.decay).numpy().ravel()
        rows = np.repeat(np.arange(len(seq)), seq.shape[1])
        items = seq.ravel()
        valid = (items > 0) & (weights > 0)
        rows, items, weights = rows[valid], items[valid], weights[valid]
        keys = rows * self.n_items + items
        order = np.lexsort((weights, keys))
        last = np.r_[keys[order][1:] != keys[order][:-1], True]
        rows, items, weights = rows[order][last], items[order][last], weights[order][last]
        return sp.csr_matrix((weights, (rows, items)), shape=(len(seq), self.n_items))

    def sample(self, cand: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """At most ``sample_size`` candidate sessions: the most recent, or a random sample."""
        if not self.sample_size or len(cand) <= self.sample_size:
            return cand, values
        if self.sampling == "recent":
            keep = np.argpartition(-self.session_end[cand], self.sample_size - 1)[: self.sample_size]
        else:
            keep = self.rng.choice(len(cand), self.sample_size, replace=False)
        return cand[keep], values[keep]

    def similarities(self, b: int, interaction, cand: np.ndarray, overlap: np.ndarray, q_norm: float) -> np.ndarray:
        """Similarity of prompt ``b`` to candidate sessions ``cand``; ``overlap`` is the
        weighted count of shared items (the dot product of the binary session vectors)."""
        if self.similarity == "cosine":
            return overlap / np.maximum(q_norm * np.sqrt(self.session_size[cand]), 1e-12)
        return overlap

    def neighbours(self, interaction) -> sp.csr_matrix:
        """(B, n_sessions) similarity of each prompt to its k nearest training sessions."""
        seq = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        q = self.prompt_weights(seq, lengths)
        overlap = (q @ self.MT).tocsr()
        q_norm = np.sqrt(np.asarray(q.multiply(q).sum(1)).ravel())
        rows, cols, vals = [], [], []
        for b in range(overlap.shape[0]):
            start, stop = overlap.indptr[b], overlap.indptr[b + 1]
            cand, shared = self.sample(overlap.indices[start:stop], overlap.data[start:stop])
            sim = self.similarities(b, interaction, cand, shared, q_norm[b])
            if len(cand) > self.k:
                top = np.argpartition(-sim, self.k - 1)[: self.k]
                cand, sim = cand[top], sim[top]
            sim = self.reweight(b, seq[b, : lengths[b]], cand, sim)
            rows.append(np.full(len(cand), b))
            cols.append(cand)
            vals.append(sim)
        rows, cols, vals = (np.concatenate(x) if x else np.zeros(0) for x in (rows, cols, vals))
        return sp.csr_matrix((vals, (rows, cols.astype(np.int64))), shape=(overlap.shape[0], len(self.sessions)))

    def reweight(self, b, prompt, cand, sim):
        return sim

    def scorable(self, interaction) -> sp.csr_matrix | None:
        """(B, n_items) mask of the items a prompt may score, or None for all of them."""
        return None

    def item_scores(self, interaction, weights: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (sum of the similarities of the neighbours holding each item) and the evidence mask."""
        scores = (weights @ self.M).toarray()
        held = weights.copy()
        held.data = np.ones_like(held.data)
        evidence = (held @ self.M).toarray() > 0
        allowed = self.scorable(interaction)
        if allowed is not None:
            evidence &= allowed.toarray() > 0
        if self.idf_weighting:
            scores = scores * self.idf[None, :]
        return torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(evidence)

    def full_sort_predict(self, interaction):
        device = interaction[self.ITEM_SEQ].device
        scores, evidence = self.item_scores(interaction, self.neighbours(interaction))
        if self.backfill == "popularity":
            # evidenced items keep their scores; every other item goes below them, ordered by popularity
            lowest = torch.where(evidence, scores, torch.full_like(scores, torch.inf)).amin(1, keepdim=True)
            below = torch.where(torch.isfinite(lowest), lowest.clamp_max(0.0), torch.zeros_like(lowest)) - 1.0
            scores = torch.where(evidence, scores, below + self.backfill_scores.expand_as(scores))
        else:
            scores = torch.where(evidence, scores, torch.full_like(scores, -torch.inf))
        scores = scores.to(device)
        if self.exclude_session_items:
            scores.scatter_(1, interaction[self.ITEM_SEQ], -torch.inf)
        scores[:, 0] = -torch.inf
        return scores


@register_model
class SKNN(SessionKNNBase):
    pass


@register_model
class VSKNN(SessionKNNBase):
    settings_class = VSKNNSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.decay = check_strategy("sknn_decay", self.settings.sknn_decay)


@register_model
class SSKNN(SessionKNNBase):
    """A neighbour's similarity is scaled by where, in the prompt, the latest item
    it shares with the prompt stands: ``linear`` (the paper's code) x/|s| with x the
    1-based position from the oldest item; ``div`` (session-rec) 1 / its distance
    from the prompt's end."""

    settings_class = SSKNNSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.weighting = self.settings.sknn_sequential_weighting

    def reweight(self, b, prompt, cand, sim):
        unique = list(dict.fromkeys(int(i) for i in prompt))  # the original deduplicates, first occurrence
        position = {item: p + 1 for p, item in enumerate(unique)}
        factors = np.zeros(len(cand))
        for j, n in enumerate(cand):
            shared = [position[i] for i in self.sessions[n].tolist() if i in position]
            if shared:
                x = max(shared)
                factors[j] = x / len(unique) if self.weighting == "linear" else 1.0 / (len(unique) - x + 1)
        return sim * factors


@register_model
class SFSKNN(SessionKNNBase):
    """Sequential filter: only items that directly follow the prompt's last item
    in some training session (a global "followed-by" map, as session-rec's
    SeqFilterContextKNN and the paper's code) are scored."""

    settings_class = SFSKNNSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.follower_scope = self.settings.sfsknn_followers
        self._index_followers()

    def _index_followers(self) -> None:
        pairs = [np.stack([s[:-1], s[1:]], 1) for s in self.sessions if len(s) > 1]
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        follows = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                                shape=(self.n_items, self.n_items))
        follows.data[:] = 1.0
        self.followers = follows

    def scorable(self, interaction):
        seq = interaction[self.ITEM_SEQ].cpu().numpy()
        last = seq[np.arange(len(seq)), interaction[self.ITEM_SEQ_LEN].cpu().numpy() - 1]
        return self.followers[last]

    def item_scores(self, interaction, weights):
        if self.follower_scope == "global":
            return super().item_scores(interaction, weights)
        # "neighbour" (our earlier variant): a neighbour scores only what follows the last item inside it
        seq = interaction[self.ITEM_SEQ].cpu().numpy()
        last = seq[np.arange(len(seq)), interaction[self.ITEM_SEQ_LEN].cpu().numpy() - 1]
        scores = np.zeros((len(seq), self.n_items), dtype=np.float32)
        for b in range(len(seq)):
            start, stop = weights.indptr[b], weights.indptr[b + 1]
            for n, w in zip(weights.indices[start:stop], weights.data[start:stop]):
                session = self.sessions[n]
                np.add.at(scores[b], session[1:][session[:-1] == last[b]], w)
        return torch.as_tensor(scores), torch.as_tensor(scores != 0)


@register_model
class SKNNEmb(SessionKNNBase):
    """Candidates share an item with the prompt (then ``sknn_sample_size`` of them,
    most recent or random); the ``sknn_k`` whose LLM session embedding is most
    similar to the prompt's (dot or cosine) are the neighbours. Training sessions
    are pooled with ``sknn_train_pooling``, the prompt (its last
    MAX_ITEM_LIST_LENGTH items, deduplicated) with ``sknn_prompt_pooling``."""

    settings_class = SKNNEmbSettings

    @classmethod
    def check_settings(cls, config) -> None:
        settings = cls.settings_class.read(config)
        check_strategy("sknn_prompt_pooling", settings.sknn_prompt_pooling)
        check_strategy("sknn_train_pooling", settings.sknn_train_pooling)

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.prompt_pooling = check_strategy("sknn_prompt_pooling", self.settings.sknn_prompt_pooling)
        self.train_pooling = check_strategy("sknn_train_pooling", self.settings.sknn_train_pooling)
        self.candidates = self.settings.sknn_emb_candidates
        self.register_buffer("item_table", dataset.item_embeddings(config))
        self.register_buffer("session_table", self.pool_sessions())
        self._prompt_embeddings = None
        self.index_kind = self.settings.index_kind(len(self.sessions))
        self.index_params = self.settings.index_params()
        self._session_index = None  # built at the first search: sessions are this data's, nothing to cache on disk

    def session_index(self) -> ItemIndex:
        """The training sessions' embeddings as a searchable index (row i + 1 = session i), its recall@20 against
        exact search logged when it is approximate."""
        if self._session_index is None:
            vectors = torch.cat([torch.zeros(1, self.session_table.shape[1]), self.session_table.float().cpu()])
            started = time.perf_counter()
            self._session_index = ItemIndex.build(vectors, self.similarity, self.index_kind, **self.index_params)
            if self.index_kind != "exact":
                sample = torch.randperm(len(self.sessions), generator=torch.Generator().manual_seed(0))[:1000] + 1
                recall = recall_at_k(self._session_index, vectors[sample], min(20, len(self.sessions)))
                logging.getLogger(__name__).info(
                    "SKNN-Emb: %s index of %d training sessions built in %.0f s; recall@20 against exact search on "
                    "%d sessions: %.3f", self.index_kind, len(self.sessions), time.perf_counter() - started,
                    len(sample), recall)
        return self._session_index

    def pool_sessions(self) -> torch.Tensor:
        """(n_sessions, d) embeddings of the whole training sessions (repeated items included, as the original)."""
        width = max((len(s) for s in self.sessions), default=1)
        padded = np.zeros((len(self.sessions), width), dtype=np.int64)
        for n, s in enumerate(self.sessions):
            padded[n, : len(s)] = s
        lengths = torch.as_tensor([len(s) for s in self.sessions])
        return pool(self.item_table, torch.as_tensor(padded), lengths, self.train_pooling)

    def neighbours(self, interaction):
        seq, lengths = deduplicate_prompts(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        prompt = pool(self.item_table, seq, lengths, self.prompt_pooling)
        if self.similarity == "cosine":
            prompt = torch.nn.functional.normalize(prompt, dim=1)
        if self.candidates == "all":  # our earlier variant: the k most similar of all training sessions
            k = min(self.k, len(self.sessions))
            if self.index_kind == "exact":
                sessions = self.session_table
                if self.similarity == "cosine":
                    sessions = torch.nn.functional.normalize(sessions, dim=1)
                values, index = (prompt @ sessions.T).topk(k, dim=1)
            else:
                values, ids = self.session_index().search(prompt.float().cpu(), k)
                index = ids - 1  # row 0 of the index is padding; -1: faiss found fewer than k
            rows = np.repeat(np.arange(len(values)), values.shape[1])
            values, index = values.cpu().numpy().ravel(), index.cpu().numpy().ravel()
            found = index >= 0
            return sp.csr_matrix((values[found], (rows[found], index[found])),
                                 shape=(len(prompt), len(self.sessions)))
        self._prompt_embeddings = prompt.cpu()
        try:
            return super().neighbours(interaction)
        finally:
            self._prompt_embeddings = None

    def similarities(self, b, interaction, cand, overlap, q_norm):
        sessions = self.session_table[torch.as_tensor(cand, dtype=torch.long)].cpu()
        if self.similarity == "cosine":
            sessions = torch.nn.functional.normalize(sessions, dim=1)
        return (sessions @ self._prompt_embeddings[b]).numpy().astype(np.float64)


def deduplicate_prompts(seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned prompts with repeated items kept at their first occurrence (the original's ``pd.unique``)."""
    out = torch.zeros_like(seq)
    new_lengths = torch.zeros_like(lengths)
    for b, (row, n) in enumerate(zip(seq.tolist(), lengths.tolist())):
        unique = list(dict.fromkeys(row[:n]))
        out[b, : len(unique)] = torch.as_tensor(unique, dtype=seq.dtype)
        new_lengths[b] = len(unique)
    return out, new_lengths
