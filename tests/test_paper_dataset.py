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


def test_a_saved_dataset_of_ours_loads_back_and_one_of_recboles_class_is_not_reused(tiny, tmp_path):
    import pickle
    import subprocess
    import sys

    from recbole.data import create_dataset
    from recbole.data.dataset import SequentialDataset

    from recbole_llm.paper_dataset import PaperSequentialDataset

    config = make_config("LLMSeqSim", tiny, save_dataset=True)
    saved = create_dataset(config)
    file = tmp_path / "saved" / f"tiny-{PaperSequentialDataset.__name__}.pth"
    assert file.exists() and type(create_dataset(config)) is PaperSequentialDataset
    done = subprocess.run([sys.executable, "-c", f"import pickle, recbole_llm; d = pickle.load(open({str(file)!r}, 'rb'));"
                           " print(type(d).__name__, len(d.inter_feat))"], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["PaperSequentialDataset", str(len(saved.inter_feat))], done.stderr[-800:]
    foreign = tmp_path / "foreign.pth"  # RecBole's own class, as an older run would have saved it
    plain = SequentialDataset.__new__(SequentialDataset)
    plain.__dict__.update(saved.__dict__)
    foreign.write_bytes(pickle.dumps(plain))
    again = create_dataset(make_config("LLMSeqSim", tiny, dataset_save_path=str(foreign)))
    assert type(again) is PaperSequentialDataset, "a pickle of RecBole's class is not this run's data set"


def test_the_item_table_cache_knows_the_width_asked_for(tiny):
    import pytest

    from recbole_llm.embeddings.store import EmbeddingMismatchError

    config, _, (train, _, _), model = build("LLMSeqSim", tiny, embedding_reduction="none", embedding_normalize=False)
    width = train._dataset.item_embeddings(config).shape[1]
    with pytest.raises(EmbeddingMismatchError):
        train._dataset.item_embeddings(config, width - 1)
