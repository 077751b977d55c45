"""Our dataset classes (``recbole_llm/paper_dataset.py``): chosen where the run asks for the paper's protocol or is
one of our models, RecBole's own otherwise; the prepared item table read once per data set."""
import torch

from conftest import build, make_config


def test_our_dataset_classes_only_where_the_run_asks_for_them(tiny):
    from recbole.data import create_dataset
    from recbole.data.dataset import SequentialDataset

    from recbole_llm.paper_dataset import _classes

    general, sequential = _classes()
    assert issubclass(sequential, SequentialDataset)
    assert type(create_dataset(make_config("LLMSeqSim", tiny))) is sequential, "our model: our class"
    assert type(create_dataset(make_config("SASRec", tiny))) is sequential, "the SESSION split: our class"
    assert type(create_dataset(make_config("Pop", tiny))) is general
    recbole_split = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"}
    plain = create_dataset(make_config("SASRec", tiny, eval_args=recbole_split))
    assert type(plain) is SequentialDataset, "RecBole's model on RecBole's split: RecBole's class, untouched"
    splits = plain.build()
    assert all(type(part) is SequentialDataset for part in splits)


def test_the_splits_keep_our_class_and_the_session_split(tiny):
    _, dataset, (train, valid, test), _ = build("LLMSeqSim", tiny)
    assert type(train._dataset) is type(dataset) and type(test._dataset) is type(dataset)
    assert hasattr(dataset, "session_split_report"), "the SESSION split ran"
    assert valid._dataset.session_prompt_items is not None


def test_the_item_table_is_read_once_per_data_set_and_each_model_gets_its_own_copy(tiny, monkeypatch):
    from recbole_llm import paper_dataset
    from recbole_llm.registry import get_model

    config, _, (train, _, _), first = build("LLMSeqSim", tiny)
    reads = []
    real = paper_dataset.item_embedding_table
    monkeypatch.setattr(paper_dataset, "item_embedding_table", lambda *a, **k: reads.append(a) or real(*a, **k))
    second = get_model("LLMSeqSim")(config, train._dataset)
    third = get_model("LLMSeqSim")(config, train._dataset)
    assert reads == [], "the first model's read serves every later model on the same data"
    assert torch.equal(second.item_table, first.item_table)
    second.item_table.mul_(0.0)
    assert not torch.equal(second.item_table, third.item_table), "a model changing its table changes no other"
    texts = train._dataset.item_texts(config)
    texts[1] = "changed"
    assert train._dataset.item_texts(config)[1] != "changed"
