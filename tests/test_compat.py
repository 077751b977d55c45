"""RecBole bugs we correct, each checked on the behaviour a user sees, without changing RecBole's own models."""
import torch
from conftest import build


def test_most_popular_counts_every_training_interaction_and_pop_stays_recboles(tiny):
    """RecBole's Pop counts an item once per batch, however often it occurs there; its ranking
    then depends on the batch size and the shuffle. MostPopular counts every interaction."""
    from recbole.model.general_recommender import Pop

    _, _, (train, _, _), popular = build("MostPopular", tiny, train_batch_size=256)
    _, _, _, pop = build("Pop", tiny, train_batch_size=256)
    assert type(pop) is Pop and Pop.calculate_loss.__module__ == "recbole.model.general_recommender.pop"
    for batch in train:
        popular.calculate_loss(batch)
        pop.calculate_loss(batch)
    items = train._dataset.inter_feat[train._dataset.iid_field]
    expected = torch.bincount(items, minlength=popular.n_items)
    assert expected.max() > 1  # the tiny data has items repeated within a batch
    assert torch.equal(popular.item_cnt.squeeze(1), expected)
    assert not torch.equal(pop.item_cnt.squeeze(1), expected), "RecBole's Pop keeps RecBole's counting"


def test_importing_the_plugin_leaves_autograd_anomaly_detection_off():
    """RecBole's SINE module switches anomaly detection on for the whole process when it is imported:
    every backward pass then checks every gradient for NaN. Importing recbole_llm undoes that."""
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['x']; import torch; import recbole.model.sequential_recommender; "
            "print(torch.is_anomaly_enabled()); import recbole_llm; print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.split()
    assert out == ["True", "False"], "RecBole turns it on, the plugin puts it back"
    assert not torch.is_anomaly_enabled()
