"""train_mode: all_positions supervises the same (prefix, next item) pairs as RecBole's prefix rows."""
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import build

from recbole_llm.data.windows import TARGETS, window_end_rows
from recbole_llm.model.position_losses import all_positions_loss, every_position


def _prefix_pairs(train):
    feat = train._dataset.inter_feat
    seq, lengths, target = feat["item_id_list"].numpy(), feat["item_length"].numpy(), feat["item_id"].numpy()
    return Counter((tuple(s[:n]), t) for s, n, t in zip(seq, lengths, target))


def _position_pairs(train):
    feat = train._dataset.inter_feat
    seq, lengths, targets = feat["item_id_list"].numpy(), feat["item_length"].numpy(), feat[TARGETS].numpy()
    pairs = Counter()
    for s, n, t in zip(seq, lengths, targets):
        assert (t[n:] == 0).all() and (t[:n] > 0).all(), "a target at every item, none on padding"
        pairs.update((tuple(s[: j + 1]), t[j]) for j in range(n))
    return pairs


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperGRU4Rec"])
def test_same_prefix_target_pairs_as_prefix_rows(tiny, model_name):
    _, _, (prefix_train, _, _), _ = build(model_name, tiny)
    _, _, (train, _, _), _ = build(model_name, tiny, train_mode="all_positions")
    assert len(train._dataset.inter_feat) < len(prefix_train._dataset.inter_feat) / 3
    assert _position_pairs(train) == _prefix_pairs(prefix_train)


def test_long_sessions_are_cut_into_windows_each_target_once(tiny):
    _, _, (prefix_train, _, _), _ = build("PaperSASRec", tiny, MAX_ITEM_LIST_LENGTH=3)
    _, _, (train, _, _), _ = build("PaperSASRec", tiny, MAX_ITEM_LIST_LENGTH=3, train_mode="all_positions")
    feat, prefix_feat = train._dataset.inter_feat, prefix_train._dataset.inter_feat
    supervised = Counter()
    for u, t, n in zip(feat["user_id"].numpy(), feat[TARGETS].numpy(), feat["item_length"].numpy()):
        supervised.update((u, x) for x in t[:n])
    assert supervised == Counter(zip(prefix_feat["user_id"].numpy(), prefix_feat["item_id"].numpy()))
    assert window_end_rows(np.array([7, 7, 7, 7, 7]), np.array([1, 2, 3, 4, 5]), 2).tolist() == [0, 2, 4]


def test_no_position_sees_a_later_item(tiny):
    _, dataset, (train, _, _), model = build("PaperSASRec", tiny, train_mode="all_positions")
    model.eval()
    seq = torch.tensor([[1, 2, 3, 4, 5]])
    changed = seq.clone()
    changed[0, 3] = 9
    with torch.no_grad(), every_position(model):
        a = model.forward(seq, torch.tensor([5]))
        b = model.forward(changed, torch.tensor([5]))
    assert torch.allclose(a[0, :3], b[0, :3]), "positions before the change are untouched"
    assert not torch.allclose(a[0, 3], b[0, 3])


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperGRU4Rec", "LLM2SASRec"])
def test_loss_is_the_mean_of_the_prefix_rows_losses(tiny, model_name):
    _, _, (train, _, _), model = build(model_name, tiny, train_mode="all_positions")
    model.eval()  # no dropout: the two computations must agree exactly
    batch = next(iter(train))
    with torch.no_grad():
        loss = model.calculate_loss(batch)
        assert loss == all_positions_loss(model, batch)
        seq, lengths, targets = batch["item_id_list"], batch["item_length"], batch[TARGETS]
        losses = []
        for s, n, t in zip(seq, lengths, targets):
            for j in range(int(n)):
                prefix = torch.zeros_like(s)
                prefix[: j + 1] = s[: j + 1]
                output = model.forward(prefix.unsqueeze(0), torch.tensor([j + 1]))
                logits = output @ model.item_embedding.weight[: model.n_items].T
                losses.append(torch.nn.functional.cross_entropy(logits, t[j : j + 1]))
    assert loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_cloze_rows_hold_each_window_with_its_target(tiny):
    _, _, (prefix_train, _, _), _ = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=4, mask_ratio=0.5)
    _, _, (train, _, _), _ = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=4, mask_ratio=0.5, train_mode="all_positions")
    feat, prefix_feat = train._dataset.inter_feat, prefix_train._dataset.inter_feat
    assert TARGETS not in feat.interaction
    items = Counter()
    for u, s, n in zip(feat["user_id"].numpy(), feat["item_id_list"].numpy(), feat["item_length"].numpy()):
        assert 2 <= n <= 4
        items.update((u, x) for x in s[:n])
    targets = Counter(zip(prefix_feat["user_id"].numpy(), prefix_feat["item_id"].numpy()))
    assert all(items[key] == 1 for key in targets), "every target item sits in exactly one window"
    batch = next(iter(train))
    assert "Mask_item_id_list" in batch.interaction, "RecBole's own cloze transform still applies"


def test_trains_evaluates_and_reloads_through_recboles_trainer(tiny):
    from recbole_llm.quick_start import load_data_and_model
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, test), model = build("PaperSASRec", tiny, train_mode="all_positions", epochs=2)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    assert np.isfinite(trainer.train_loss_dict[0])
    config2, model2, _, train2, _, test2 = load_data_and_model(trainer.saved_model_file)
    from recbole.trainer import Trainer

    trainer2 = Trainer(config2, model2)
    trainer2.eval_collector.data_collect(train2)
    again = trainer2.evaluate(test2, load_best_model=False, show_progress=False)
    assert again == result


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperGRU4Rec", "LLM2SASRec"])
def test_output_bias_is_off_by_default_and_adds_to_every_score(tiny, model_name):
    _, _, (train, _, _), plain = build(model_name, tiny)
    assert not hasattr(plain, "item_bias"), "RecBole's models are unchanged unless asked"
    _, _, (train, _, _), model = build(model_name, tiny, output_bias=True, train_mode="all_positions")
    assert torch.count_nonzero(model.item_bias) == 0 and "item_bias" in model.state_dict()
    model.eval()
    batch = next(iter(train))
    with torch.no_grad():
        before, loss_before = model.full_sort_predict(batch), model.calculate_loss(batch)
        model.item_bias[3] = 5.0
        after, loss_after = model.full_sort_predict(batch), model.calculate_loss(batch)
    assert torch.allclose(after[:, 3], before[:, 3] + 5.0) and torch.equal(after[:, 4], before[:, 4])
    assert loss_after != loss_before
    _, _, (prefix_train, _, _), prefix_model = build(model_name, tiny, output_bias=True)
    prefix_model.eval()
    prefix_batch = next(iter(prefix_train))[torch.tensor([0])]  # one row: its target alone
    with torch.no_grad():
        first = prefix_model.calculate_loss(prefix_batch)
        prefix_model.item_bias[prefix_batch["item_id"][0]] = 3.0
        assert prefix_model.calculate_loss(prefix_batch) < first, "a bias on a target lowers its CE"


def test_cloze_loss_on_masked_slots_equals_recboles_loss(tiny):
    from recbole.model.sequential_recommender import BERT4Rec

    from recbole_llm.data.windows import WINDOW_ROWS

    _, _, (train, _, _), model = build("LLM2BERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=10, mask_ratio=0.9,
                                       train_mode="all_positions")
    model.eval()
    batch = next(iter(train))
    assert WINDOW_ROWS in batch.interaction
    with torch.no_grad():
        ours = model.calculate_loss(batch)
        del batch.interaction[WINDOW_ROWS]
        recboles = BERT4Rec.calculate_loss(model, batch)  # RecBole's own loss, on the same model
    assert ours.item() == pytest.approx(recboles.item(), rel=1e-5)


def test_all_positions_is_refused_for_models_that_cannot_read_it_and_keeps_training_counts(tiny):
    with pytest.raises(ValueError, match="train_mode: all_positions serves"):
        build("SKNN", tiny, train_mode="all_positions")
    _, _, (prefix_train, _, _), _ = build("PaperSASRec", tiny)
    _, _, (train, _, _), _ = build("PaperSASRec", tiny, train_mode="all_positions")
    assert train._dataset.train_item_counter == prefix_train._dataset.item_counter, "popularity of every target"
    assert sum(train._dataset.item_counter.values()) < sum(prefix_train._dataset.item_counter.values())


def test_the_step_budget_trainer_trains_that_many_batches(tiny, monkeypatch):
    from conftest import build

    from recbole_llm.trainer import StepBudgetTrainer

    config, _, (train, _, _), model = build("PaperSASRec", tiny, train_batch_size=8, llmsrec_max_train_steps=3)
    assert len(train) > 3
    calls = []
    original = type(model).calculate_loss
    monkeypatch.setattr(type(model), "calculate_loss", lambda self, i: calls.append(1) or original(self, i))
    StepBudgetTrainer(config, model)._train_epoch(train, 0)
    assert len(calls) == 3
    config["llmsrec_max_train_steps"] = None
    calls.clear()
    StepBudgetTrainer(config, model)._train_epoch(train, 1)
    assert len(calls) == len(train), "unset: every batch"


def _same_interactions(a, b) -> None:
    assert sorted(a.columns) == sorted(b.columns)
    for field in a.columns:
        assert a[field].dtype == b[field].dtype and torch.equal(a[field], b[field]), field


@pytest.mark.parametrize("window", [3, 20])
def test_vectorised_prefix_rows_are_recboles_rows(tiny, window):
    """Our data_augmentation builds RecBole's own prefix rows (every field, in its order), long sessions cut."""
    from recbole.data.dataset import Dataset, SequentialDataset

    config, dataset, _, _ = build("PaperSASRec", tiny, MAX_ITEM_LIST_LENGTH=window)
    fresh = type(dataset)(config)
    ours, recboles = fresh.copy(fresh.inter_feat), fresh.copy(fresh.inter_feat)
    for part in (ours, recboles):
        Dataset._change_feat_format(part)  # the rows as loaded (SequentialDataset's would augment them already)
    assert "item_id_list" not in ours.inter_feat.columns
    ours.data_augmentation()
    SequentialDataset.data_augmentation(recboles)
    assert (recboles.inter_feat["item_length"] == 3).any() or window > 3, "some session is longer than the window"
    _same_interactions(ours.inter_feat, recboles.inter_feat)


@pytest.mark.parametrize("model_name,extra", [("PaperSASRec", {}), ("PaperGRU4Rec", {"max_test_sessions": 5}),
                                              ("LLM2BERT4Rec", {"bert_mask_last_copies": 1,
                                                                "bert_random_mask_copies": 2})])
def test_all_positions_builds_only_the_rows_it_keeps_with_the_same_splits(tiny, monkeypatch, model_name, extra):
    """Under all_positions the split builds only window end rows and evaluated sessions' last rows, and every split
    is what building all of RecBole's prefix rows and selecting from them gave."""
    from recbole_llm.data import protocol

    settings = {"MAX_ITEM_LIST_LENGTH": 3, "train_mode": "all_positions", **extra}
    _, dataset, pruned, _ = build(model_name, tiny, **settings)
    assert pruned[0]._dataset.window_rows_only and not hasattr(pruned[1]._dataset, "window_rows_only")
    dataset.config["valid_neg_sample_args"] = {"distribution": "popularity", "sample_num": 10}
    assert protocol.window_rows_width(dataset) is None, "a popularity sampler counts every prefix row"
    monkeypatch.setattr(protocol, "window_rows_width", lambda dataset: None)  # every prefix row, then selected
    _, dataset, full, _ = build(model_name, tiny, **settings)
    assert not getattr(full[0]._dataset, "window_rows_only", False)
    for ours, reference in zip(pruned, full):
        _same_interactions(ours._dataset.inter_feat, reference._dataset.inter_feat)
    assert pruned[0]._dataset.train_item_counter == full[0]._dataset.train_item_counter
