"""RecBole bugs that recbole_llm.compat fixes, each checked on the behaviour a user sees."""
import torch

from conftest import build


def test_pop_counts_every_training_interaction(tiny):
    """RecBole's Pop counts an item once per batch, however often it occurs there; its ranking
    then depends on the batch size and the shuffle. Popularity is the number of interactions."""
    _, _, (train, _, _), pop = build("Pop", tiny, train_batch_size=256)
    for batch in train:
        pop.calculate_loss(batch)
    items = train._dataset.inter_feat[train._dataset.iid_field]
    expected = torch.bincount(items, minlength=pop.n_items)
    assert expected.max() > 1  # the tiny data has items repeated within a batch
    assert torch.equal(pop.item_cnt.squeeze(1), expected)
