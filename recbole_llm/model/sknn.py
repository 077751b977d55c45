"""Session-kNN (Ludewig & Jannach 2018) and SKNN-Emb, vectorised with sparse matrices.

Training sessions are rows of a binary session x item matrix M. A batch of
prompts becomes a sparse matrix Q; Q @ M.T gives the item overlap with every
training session at once, and the item scores of the k nearest neighbours are
one sparse product W @ M.

- SKNN: set overlap, cosine or dot similarity.
- VSKNN: prompt items weighted by position decay (any pooling strategy).
- SSKNN: a neighbour counts by how recent (in the prompt) the latest item it
  shares with the prompt is.
- SFSKNN: only items that directly follow the prompt's last item in a
  neighbour are scored (sequential filter).
- SKNNEmb: neighbours by cosine of pooled LLM session embeddings, with separate
  pooling for training sessions and the prompt.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..embeddings.pooling import pool, position_weights
from ..embeddings.store import item_embedding_table
from ..registry import register_model
from .common import ScoresFromFullSort
from ..trainer import FitOnceTrainer


def training_sessions(dataset) -> tuple[list[np.ndarray], np.ndarray]:
    """Full item sequences of the sessions in a (training) SequentialDataset, and
    each session's last timestamp. Rebuilt from RecBole's augmented rows: the
    row with length 1 holds the first item, every row's target the next one."""
    inter = dataset.inter_feat
    uid = inter[dataset.uid_field].numpy()
    target = inter[dataset.iid_field].numpy()
    first = inter[dataset.item_id_list_field].numpy()[:, 0]
    length = inter[dataset.item_list_length_field].numpy()
    time = inter[dataset.time_field].numpy() if dataset.time_field in inter else np.arange(len(uid), dtype=float)
    order = np.lexsort((length, uid))
    uid, target, first, length, time = uid[order], target[order], first[order], length[order], time[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    sessions, ends = [], []
    for start, stop in zip(starts, np.r_[starts[1:], len(uid)]):
        head = [first[start]] if length[start] == 1 else []
        sessions.append(np.array(head + target[start:stop].tolist(), dtype=np.int64))
        ends.append(time[stop - 1])
    return sessions, np.asarray(ends, dtype=np.float64)


class SessionKNNBase(ScoresFromFullSort, SequentialRecommender):
    """Shared neighbourhood machinery; subclasses choose how neighbours are found."""

    input_type = InputType.POINTWISE
    trainer_class = FitOnceTrainer
    needs_training = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.k = int(config["sknn_k"])
        self.sample_size = int(config["sknn_sample_size"] or 0)
        self.sampling = config["sknn_sampling"]
        self.similarity = config["sknn_similarity"]
        self.idf_weighting = bool(config["sknn_idf_weighting"])
        self.exclude_session_items = bool(config["exclude_session_items"])
        self.rng = np.random.default_rng(config["seed"])
        self.sessions, self.session_end = training_sessions(dataset)
        rows = np.repeat(np.arange(len(self.sessions)), [len(s) for s in self.sessions])
        cols = np.concatenate(self.sessions) if self.sessions else np.zeros(0, np.int64)
        matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(self.sessions), self.n_items))
        matrix.data[:] = 1.0  # duplicates count once
        self.M = matrix
        self.MT = matrix.T.tocsr()
        self.session_size = np.asarray(matrix.sum(1)).ravel()
        df = np.asarray((matrix > 0).sum(0)).ravel()
        self.idf = np.log(len(self.sessions) / np.maximum(df, 1)).astype(np.float32)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

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
        if self.idf_weighting:
            weights = weights * self.idf[items]
        return sp.csr_matrix((weights, (rows, items)), shape=(len(seq), self.n_items))

    decay = "mean"  # SKNN weighs every prompt item the same

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
            cand, sim = overlap.indices[start:stop], overlap.data[start:stop]
            if self.sample_size and len(cand) > self.sample_size:
                if self.sampling == "recent":
                    keep = np.argpartition(-self.session_end[cand], self.sample_size - 1)[: self.sample_size]
                else:
                    keep = self.rng.choice(len(cand), self.sample_size, replace=False)
                cand, sim = cand[keep], sim[keep]
            if self.similarity == "cosine":
                sim = sim / np.maximum(q_norm[b] * np.sqrt(self.session_size[cand]), 1e-12)
            if len(cand) > self.k:
                top = np.argpartition(-sim, self.k - 1)[: self.k]
                cand, sim = cand[top], sim[top]
            sim = self.reweight(b, seq[b, : lengths[b]], cand, sim)
            rows.append(np.full(len(cand), b))
            cols.append(cand)
            vals.append(sim)
        rows, cols, vals = (np.concatenate(x) if x else np.zeros(0) for x in (rows, cols, vals))
        return sp.csr_matrix((vals, (rows, cols)), shape=(overlap.shape[0], len(self.sessions)))

    def reweight(self, b, prompt, cand, sim):
        return sim

    def item_scores(self, interaction, weights: sp.csr_matrix) -> torch.Tensor:
        return torch.as_tensor((weights @ self.M).toarray(), dtype=torch.float32)

    def full_sort_predict(self, interaction):
        weights = self.neighbours(interaction)
        scores = self.item_scores(interaction, weights).to(interaction[self.ITEM_SEQ].device)
        if self.exclude_session_items:
            scores.scatter_(1, interaction[self.ITEM_SEQ], -torch.inf)
        scores[:, 0] = -torch.inf
        return scores


@register_model
class SKNN(SessionKNNBase):
    pass


@register_model
class VSKNN(SessionKNNBase):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.decay = config["sknn_decay"]


@register_model
class SSKNN(SessionKNNBase):
    """A neighbour's weight is scaled by how recent, in the prompt, the latest
    item it shares with the prompt is (1 / distance from the prompt's end)."""

    def reweight(self, b, prompt, cand, sim):
        distance_from_end = {item: len(prompt) - p for p, item in enumerate(prompt)}
        factors = np.ones(len(cand))
        for j, n in enumerate(cand):
            shared = [distance_from_end[i] for i in self.sessions[n] if i in distance_from_end]
            factors[j] = 1.0 / min(shared) if shared else 0.0
        return sim * factors


@register_model
class SFSKNN(SessionKNNBase):
    """Sequential filter: a neighbour only scores the items that directly follow
    the prompt's last item in it."""

    def item_scores(self, interaction, weights):
        seq = interaction[self.ITEM_SEQ].cpu().numpy()
        last = seq[np.arange(len(seq)), interaction[self.ITEM_SEQ_LEN].cpu().numpy() - 1]
        scores = np.zeros((len(seq), self.n_items), dtype=np.float32)
        for b in range(len(seq)):
            start, stop = weights.indptr[b], weights.indptr[b + 1]
            for n, w in zip(weights.indices[start:stop], weights.data[start:stop]):
                session = self.sessions[n]
                followers = session[1:][session[:-1] == last[b]]
                np.add.at(scores[b], followers, w)
        return torch.as_tensor(scores)


@register_model
class SKNNEmb(SessionKNNBase):
    """Neighbours by cosine similarity of pooled LLM session embeddings:
    score(i, S) = sum over the k nearest training sessions S' of sim(e_S', e_S) * 1(i in S')."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.prompt_pooling = config["sknn_prompt_pooling"]
        table = item_embedding_table(config, dataset)
        self.register_buffer("item_table", table)
        width = max((len(s) for s in self.sessions), default=1)
        padded = np.zeros((len(self.sessions), width), dtype=np.int64)
        for n, s in enumerate(self.sessions):
            padded[n, : len(s)] = s
        lengths = torch.as_tensor([len(s) for s in self.sessions])
        session_emb = pool(table, torch.as_tensor(padded), lengths, config["sknn_train_pooling"])
        self.register_buffer("session_table", torch.nn.functional.normalize(session_emb, dim=1))

    def neighbours(self, interaction):
        prompt = pool(self.item_table, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.prompt_pooling)
        sims = torch.nn.functional.normalize(prompt, dim=1) @ self.session_table.T
        k = min(self.k, sims.shape[1])
        values, index = sims.topk(k, dim=1)
        rows = np.repeat(np.arange(len(values)), k)
        return sp.csr_matrix(
            (values.cpu().numpy().ravel(), (rows, index.cpu().numpy().ravel())), shape=(len(values), len(self.sessions))
        )
