from collections import Counter

import pytest
import torch
from recbole.config import Config
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct

from recbole_llm.metrics import POSITIVES


def _evaluate(metrics, rec_items, positives, counts, num_items, topk=(2,)):
    config = {"metrics": metrics, "topk": list(topk), "metric_decimal_place": 6}

    class C(dict):
        def __getitem__(self, key):
            return dict.get(self, key)

    struct = DataStruct()
    struct.set("rec.items", torch.tensor(rec_items))
    struct.set(POSITIVES, torch.tensor(positives))
    struct.set("data.count_items", Counter(counts))
    struct.set("data.num_items", num_items)
    return Evaluator(C(config)).evaluate(struct)


def test_catalog_coverage_excludes_padding():
    # 6 ids incl. padding -> 5 catalog items; lists cover {1,2,3} at @2
    result = _evaluate(["CatalogCoverage"], [[1, 2, 5], [2, 3, 4]], [[0, 1], [1, 2]], {1: 1}, 6)
    assert result["catalogcoverage@2"] == pytest.approx(3 / 5)


def test_serendipity_hand_computed():
    # popularity: item1 > item2 > others. top-2 popular = {1, 2}.
    counts = {1: 10, 2: 8, 3: 1, 4: 1, 5: 1}
    rec = [[3, 1], [1, 2], [4, 5], [5, 3]]
    # row0: targets {3}: U={3}, hit 3 -> 1/1
    # row1: targets {1}: U={}  -> 0
    # row2: targets {4, 2}: U={4} (2 is popular), hits {4} -> 1/min(1,2)=1
    # row3: targets {4, 3}: U={4,3}, hits {3} -> 1/min(2,2)=0.5
    positives = [[0, 3], [1, 1], [2, 4], [2, 2], [3, 4], [3, 3]]
    result = _evaluate(["Serendipity"], rec, positives, counts, 6)
    assert result["serendipity@2"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)


def test_novelty_self_information():
    counts = {1: 6, 2: 2}  # total 8; item 3 unseen counts as 1
    result = _evaluate(["Novelty"], [[1, 2], [1, 3]], [[0, 1], [1, 1]], counts, 4)
    import math

    expected = (-math.log2(6 / 8) - math.log2(2 / 8) - math.log2(6 / 8) - math.log2(1 / 8)) / 4
    assert result["novelty@2"] == pytest.approx(expected, abs=1e-6)


def test_metrics_found_by_name_in_config():
    config = Config(model="Pop", dataset="ml-100k", config_dict={"metrics": ["NDCG", "CatalogCoverage", "Serendipity", "Novelty"]})
    assert config["eval_type"] is not None


def test_intra_list_diversity_hand_computed():
    from recbole_llm.metrics import ITEM_EMBEDDINGS

    config = {"metrics": ["IntraListDiversity"], "topk": [2, 3], "metric_decimal_place": 6}

    class C(dict):
        def __getitem__(self, key):
            return dict.get(self, key)

    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    struct = DataStruct()
    # list 1: items 1, 2 (same direction), then 3 (orthogonal); list 2: items 1, 4 (opposite), then 3
    struct.set("rec.items", torch.tensor([[1, 2, 3], [1, 4, 3]]))
    struct.set(ITEM_EMBEDDINGS, table)
    result = Evaluator(C(config)).evaluate(struct)
    assert result["intralistdiversity@2"] == pytest.approx(((1 - 1) + (1 - -1)) / 2)
    # @3: pairwise cosines list 1: (1, 0, 0) -> mean 1/3; list 2: (-1, 0, 0) -> mean -1/3
    assert result["intralistdiversity@3"] == pytest.approx(((1 - 1 / 3) + (1 + 1 / 3)) / 2)


def test_serendipity_is_the_same_whatever_the_evaluation_batches(tiny):
    """Rows of later batches are numbered after the earlier ones' (the collector's offset): small batches must
    give what one batch gives."""
    from conftest import build

    from recbole_llm.registry import get_trainer

    results = []
    for eval_batch_size in (2, 100000):  # 2 sessions per batch vs all at once
        config, _, (train, _, test), model = build("LLMSeqSim", tiny, eval_batch_size=eval_batch_size,
                                                   metrics=["Hit", "Serendipity", "Novelty"], topk=[2, 5],
                                                   valid_metric="Hit@5")
        if eval_batch_size == 2:
            assert len(test) > 1, "several evaluation batches"
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer.eval_collector.data_collect(train)
        results.append(trainer.evaluate(test, load_best_model=False))
    assert results[0] == results[1]
    assert results[0]["serendipity@5"] > 0
