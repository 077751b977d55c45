"""``learner: lazy_adam``: Adam where every item row is touched, the untouched rows left alone, through RecBole's
Trainer for the Paper models and refused where a trainer would silently use Adam."""
import copy
import math

import pytest
import torch
from conftest import build

from recbole_llm.lazy_adam import CatalogTrainer, LazyAdam


class _Toy(torch.nn.Module):
    def __init__(self, n_items=6):
        super().__init__()
        self.n_items = n_items
        self.table = torch.nn.Embedding(n_items, 3)
        self.bias = torch.nn.Parameter(torch.zeros(n_items))
        self.dense = torch.nn.Linear(3, 3)

    def loss(self, items):
        return (self.dense(self.table(items)).pow(2).sum(-1) + self.bias[items]).sum()


def _steps(model, optimizer, batches):
    for items in batches:
        optimizer.zero_grad()
        model.loss(torch.as_tensor(items)).backward()
        optimizer.step()


def test_where_every_row_is_touched_it_is_adam():
    torch.manual_seed(0)
    ours = _Toy()
    theirs = copy.deepcopy(ours)
    lazy = LazyAdam(ours.parameters(), [ours.table.weight, ours.bias], lr=0.05, weight_decay=0.01)
    adam = torch.optim.Adam(theirs.parameters(), lr=0.05, weight_decay=0.01)
    batches = [list(range(6))] * 5
    _steps(ours, lazy, batches)
    _steps(theirs, adam, batches)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_untouched_rows_keep_weights_and_moments_and_grads_stay_zero():
    torch.manual_seed(0)
    model = _Toy()
    before = model.table.weight.detach().clone()
    lazy = LazyAdam(model.parameters(), [model.table.weight, model.bias], lr=0.05)
    _steps(model, lazy, [[1, 2], [2, 3]])
    weight = model.table.weight.detach()
    assert torch.equal(weight[[0, 4, 5]], before[[0, 4, 5]]) and not torch.equal(weight[[1, 2, 3]], before[[1, 2, 3]])
    state = lazy.state[model.table.weight]
    assert torch.equal(state["exp_avg"][[0, 4, 5]], torch.zeros(3, 3)) and state["exp_avg"][1].abs().sum() > 0
    assert torch.equal(model.table.weight.grad, torch.zeros_like(weight)), "step zeroes the rows it read"
    # a backward without a step: the next zero_grad clears the whole gradient
    lazy.zero_grad()
    model.loss(torch.tensor([4])).backward()
    lazy.zero_grad()
    model.loss(torch.tensor([5])).backward()
    assert model.table.weight.grad[4].abs().sum() == 0 and model.table.weight.grad[5].abs().sum() > 0


def test_paper_models_train_with_it_through_recboles_trainer(tiny):
    from recbole_llm.registry import get_trainer

    config, _, (train, _, _), net = build("PaperSASRec", tiny, learner="lazy_adam", softmax_negatives=5,
                                          train_mode="all_positions", output_bias=True, epochs=3)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    assert isinstance(trainer, CatalogTrainer) and isinstance(trainer.optimizer, LazyAdam)
    rows = {id(p) for p in (net.item_embedding.weight, net.item_bias)}
    assert trainer.optimizer._rows == rows
    losses = [float(trainer._train_epoch(train, epoch)) for epoch in range(3)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    adam_config, _, _, adam_net = build("PaperSASRec", tiny, softmax_negatives=5)
    assert isinstance(get_trainer(adam_config["MODEL_TYPE"], "PaperSASRec")(adam_config, adam_net).optimizer,
                      torch.optim.Adam), "every other learner is RecBole's own"


def test_bert4recs_table_with_its_mask_row_is_updated_lazily(tiny):
    from recbole_llm.registry import get_trainer

    config, _, _, net = build("PaperBERT4Rec", tiny, learner="lazy_adam", softmax_negatives=5,
                              train_mode="all_positions")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    assert len(net.item_embedding.weight) == net.n_items + 1
    assert id(net.item_embedding.weight) in trainer.optimizer._rows


def test_refused_where_the_trainer_would_use_adam(tiny):
    with pytest.raises(ValueError, match="learner: lazy_adam"):
        build("SASRec", tiny, learner="lazy_adam")


@pytest.mark.parametrize("native", [True, False])
def test_train_precision_auto_trains_in_bf16_only_where_the_cpu_has_it(tiny, monkeypatch, native):
    from recbole_llm.registry import get_trainer

    monkeypatch.setattr("recbole_llm.llm.precision.cpu_has_native_bf16", lambda: native)
    config, _, (train, _, _), net = build("PaperSASRec", tiny, train_precision="auto", epochs=1)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    assert trainer.enable_amp is native
    if native:  # bf16 autocast on the CPU: a finite loss, fp32 master weights
        assert math.isfinite(float(trainer._train_epoch(train, 0)))
        assert net.item_embedding.weight.dtype == torch.float32
    config, _, _, net = build("PaperSASRec", tiny, epochs=1)  # fp32 (the default): RecBole's enable_amp as set
    assert get_trainer(config["MODEL_TYPE"], config["model"])(config, net).enable_amp is False


def test_train_precision_bf16_is_refused_up_front_without_native_bf16(tiny, monkeypatch):
    monkeypatch.setattr("recbole_llm.llm.precision.cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="train_precision: bf16 needs a CPU with AVX-512 BF16"):
        build("PaperSASRec", tiny, train_precision="bf16")


def test_bf16_training_names_its_dtype_to_recboles_autocast(tiny, monkeypatch):
    """RecBole's autocast names no dtype: fp16 on CUDA. The epoch runs with bf16 as the autocast dtype (checked here
    on the CPU with the default set to fp16, as CUDA's is), and the default is restored after."""
    import recbole.trainer

    from recbole_llm.registry import get_trainer

    monkeypatch.setattr("recbole_llm.llm.precision.cpu_has_native_bf16", lambda: True)
    seen = []
    monkeypatch.setattr(recbole.trainer.Trainer, "_train_epoch",
                        lambda self, *a, **k: seen.append(torch.get_autocast_dtype("cpu")) or 0.0)
    config, _, (train, _, _), net = build("PaperSASRec", tiny, train_precision="bf16", epochs=1)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    before = torch.get_autocast_dtype("cpu")
    torch.set_autocast_dtype("cpu", torch.float16)
    try:
        trainer._train_epoch(train, 0)
        assert seen == [torch.bfloat16] and torch.get_autocast_dtype("cpu") == torch.float16
    finally:
        torch.set_autocast_dtype("cpu", before)


def test_train_precision_is_refused_where_the_trainer_would_ignore_it(tiny):
    with pytest.raises(ValueError, match="train_precision is read by the trainer of PaperSASRec"):
        build("LLMSeqSim", tiny, train_precision="auto")


@pytest.mark.parametrize("learner", ["adam", "adamw"])
def test_adam_and_adamw_are_torch_fused_ones_with_recboles_update(tiny, learner):
    """CatalogTrainer builds RecBole's Adam / AdamW as torch's fused kernels: 20 steps on the same gradients move
    every parameter as RecBole's own optimizer does, up to float rounding."""
    from recbole.trainer import Trainer

    config, _, _, net = build("PaperSASRec", tiny, learner=learner, learning_rate=0.01, weight_decay=0.05)
    ours_net, theirs_net = copy.deepcopy(net), copy.deepcopy(net)
    ours = CatalogTrainer(config, ours_net).optimizer
    theirs = Trainer(config, theirs_net).optimizer
    assert ours.defaults["fused"] and all(group["fused"] for group in ours.param_groups)
    assert not theirs.defaults.get("fused")
    assert type(ours) is type(theirs)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        for a, b in zip(ours_net.parameters(), theirs_net.parameters()):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        ours.step()
        theirs.step()
    for (name, a), b in zip(ours_net.named_parameters(), theirs_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_wrapped_partners_own_precision_default_is_not_refused(tiny):
    """LLMSeqSimSeqHybrid reads its partner's model yaml (LLM2BERT4Rec's defaults to train_precision: auto); the
    partner's trainer reads it, so the hybrid's run is not refused for it. Given to the hybrid's run, it is."""
    from recbole.config import Config

    from recbole_llm.checks import check_run_settings

    settings = {"data_path": str(tiny["path"]), "hybrid_sequential_model": "LLM2BERT4Rec"}
    config = Config(model="LLMSeqSimSeqHybrid", dataset="tiny", config_dict=settings)
    assert config["train_precision"] == "auto"
    check_run_settings(config, tiny["path"] / "tiny")
    given = Config(model="LLMSeqSimSeqHybrid", dataset="tiny", config_dict={**settings, "train_precision": "bf16"})
    with pytest.raises(ValueError, match="train_precision is read by the trainer of PaperSASRec"):
        check_run_settings(given, tiny["path"] / "tiny")
