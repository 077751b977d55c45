"""Beyond-accuracy metrics of the paper, registered next to RecBole's own.

``metrics: [NDCG, Hit, MRR, CatalogCoverage, Serendipity, Novelty, IntraListDiversity]`` in a
RecBole config finds them by name. Popularity is RecBole's training-set
``item_counter`` (``data.count_items``), the same counts RecBole's
AveragePopularity uses.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

POSITIVES = "rec.positive_pairs"


class CatalogCoverage(AbstractMetric):
    """Fraction of catalog items (padding excluded) that appear in at least one
    top-k list. RecBole's ItemCoverage counts the padding id in the catalog."""

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items", "data.num_items"]

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        items = dataobject.get("rec.items").numpy()
        num_items = dataobject.get("data.num_items") - 1
        result = {}
        for k in self.topk:
            unique = np.unique(items[:, :k])
            unique = unique[unique != 0]
            result[f"catalogcoverage@{k}"] = round(len(unique) / num_items, self.decimal_place)
        return result


def _popularity(count_items, num_items: int) -> np.ndarray:
    pop = np.zeros(num_items, dtype=np.float64)
    for item, count in count_items.items():
        pop[int(item)] = count
    return pop


class Serendipity(AbstractMetric):
    """Ge et al. (2010) as the paper computes it: per evaluated session, U is its
    set of target items that are not among the k most popular training items;
    the score is |top-k ∩ U| / min(|U|, k), and 0 when that is 0; averaged over
    all sessions (rows)."""

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items", POSITIVES, "data.count_items", "data.num_items"]

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        items = dataobject.get("rec.items").numpy().astype(np.int64)
        pairs = dataobject.get(POSITIVES).numpy().astype(np.int64)
        num_items = dataobject.get("data.num_items")
        pop = _popularity(dataobject.get("data.count_items"), num_items)
        by_popularity = np.argsort(-pop, kind="stable")
        n_rows = items.shape[0]
        result = {}
        for k in self.topk:
            popular = np.zeros(num_items, dtype=bool)
            popular[by_popularity[:k]] = True
            unexpected = pairs[~popular[pairs[:, 1]]]
            size_u = np.bincount(unexpected[:, 0], minlength=n_rows)
            rec_keys = (np.arange(n_rows)[:, None] * num_items + items[:, :k]).ravel()
            hits = np.isin(rec_keys, unexpected[:, 0] * num_items + unexpected[:, 1])
            hits = hits.reshape(n_rows, k).sum(axis=1)
            denominator = np.minimum(size_u, k)
            per_row = np.divide(hits, denominator, out=np.zeros(n_rows), where=denominator > 0)
            result[f"serendipity@{k}"] = round(float(per_row.mean()), self.decimal_place)
        return result


class Novelty(AbstractMetric):
    """Mean self-information -log2(pop(i) / sum pop) of recommended items (Zhou et
    al. 2010). An item never seen in training counts as seen once, so the value
    stays finite."""

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items", "data.count_items", "data.num_items"]

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        items = dataobject.get("rec.items").numpy()
        pop = _popularity(dataobject.get("data.count_items"), dataobject.get("data.num_items"))
        information = -np.log2(np.maximum(pop, 1.0) / pop.sum())
        return {
            f"novelty@{k}": round(float(information[items[:, :k]].mean()), self.decimal_place)
            for k in self.topk
        }


ITEM_EMBEDDINGS = "data.item_embeddings"


class IntraListDiversity(AbstractMetric):
    """1 - mean pairwise cosine similarity of the top-k items' LLM embeddings (Ziegler et al. 2005, with
    semantic item vectors), averaged over lists: 0 when a list repeats one kind of product, near 1 when its
    items have nothing in common. The embeddings follow the run's recipe (``embedding_*`` settings; the
    local default for models that set none), built or reused like every embedding file."""

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items", ITEM_EMBEDDINGS]

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        items = dataobject.get("rec.items").long()
        table = torch.nn.functional.normalize(dataobject.get(ITEM_EMBEDDINGS).float(), dim=1)
        if not len(table):  # no item texts
            return {f"intralistdiversity@{k}": float("nan") for k in self.topk}
        result = {}
        for k in self.topk:
            if k < 2:
                result[f"intralistdiversity@{k}"] = 0.0
                continue
            vectors = table[items[:, :k]]  # (lists, k, d)
            similarity = vectors @ vectors.transpose(1, 2)
            off_diagonal = (similarity.sum((1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))
            result[f"intralistdiversity@{k}"] = round(float((1 - off_diagonal).mean()), self.decimal_place)
        return result


OUR_METRICS = (CatalogCoverage, Serendipity, Novelty, IntraListDiversity)


def diversity_recipe(config) -> dict:
    """The run's embedder without reduction: the settings IntraListDiversity embeds with. Every provider setting
    comes along (endpoint, retries, timeout, project, the cost gate, the Batch API): the run's texts go to the server
    the user chose, never to a provider's default endpoint with their key."""
    settings = config.final_config_dict if hasattr(config, "final_config_dict") else config
    recipe = {key: value for key, value in settings.items()
              if key.startswith(("embedding_", "openai_", "vertex_")) and key != "embedding_file"}
    recipe.update({key: settings.get(key) for key in ("dataset", "data_path", "show_progress")})
    recipe.update(embedding_reduction="none", embedding_normalize=False, embedding_dim=None)
    return recipe


def diversity_embeddings(config, dataset) -> torch.Tensor:
    """The embedder's own item vectors (the run's provider and model, no reduction) for IntraListDiversity;
    an empty table, with a warning, when the catalog has no texts (the metric then reports NaN)."""
    import logging

    from .embeddings.store import EmbeddingMismatchError, item_embedding_table

    recipe = diversity_recipe(config)
    try:
        return item_embedding_table(recipe, dataset)
    except EmbeddingMismatchError:
        raise  # a damaged or mismatched file is refused like any .itememb, never turned into NaN
    except (FileNotFoundError, ValueError) as error:
        logging.getLogger(__name__).warning("IntraListDiversity needs item texts to embed; reporting NaN (%s)", error)
        return torch.zeros(0, 1)


def collect_positive_pairs(original):
    """Serendipity needs the identity of every target item, which RecBole's
    collector does not keep. Record (row, item) pairs when a metric asks for
    them; rows are numbered across batches (``release_positive_pairs`` resets)."""

    @functools.wraps(original)
    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        original(self, scores_tensor, interaction, positive_u, positive_i)
        if self.register.need(POSITIVES):
            offset = getattr(self, "_rows_seen", 0)
            pairs = torch.stack([positive_u.cpu() + offset, positive_i.cpu()], dim=1)
            self.data_struct.update_tensor(POSITIVES, pairs)
            self._rows_seen = offset + scores_tensor.shape[0]

    return eval_batch_collect


def release_positive_pairs(original):
    """See ``collect_positive_pairs``: the pairs leave with the evaluation's data struct."""

    @functools.wraps(original)
    def get_data_struct(self):
        returned = original(self)
        if POSITIVES in self.data_struct:
            del self.data_struct[POSITIVES]
        self._rows_seen = 0
        return returned

    return get_data_struct


def collect_item_embeddings(original):
    """IntraListDiversity reads the embedder's item vectors, registered once per training split."""

    @functools.wraps(original)
    def data_collect(self, train_data):
        original(self, train_data)
        if self.register.need(ITEM_EMBEDDINGS):
            dataset = getattr(train_data, "_dataset", None) or train_data.dataset
            self.data_struct.set(ITEM_EMBEDDINGS, diversity_embeddings(self.config, dataset))

    return data_collect


def register() -> None:
    """Add our metrics to RecBole's registry in place (other modules hold
    references to these dicts, so they must not be rebound)."""
    from recbole.evaluator import register as reg

    if "serendipity" in reg.metrics_dict:
        return
    for cls in OUR_METRICS:
        name = cls.__name__.lower()
        reg.metrics_dict[name] = cls
        reg.metric_information[name] = cls.metric_need
        reg.metric_types[name] = cls.metric_type
        if cls.smaller:
            reg.smaller_metrics.append(name)
