"""dropout_sampler: how a Paper model's dropout draws its mask; dropout_noise mirrors each module's own draw."""
import pytest
import torch
from conftest import build

from recbole_llm.model.dropout import UniformDropout, dropout_noise


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_noise_is_what_torchs_dropout_draws(dtype):
    """ATen's CPU dropout, drawn again: the same multiplier, bit for bit, and the same generator state after."""
    values = torch.randn(300, 17).to(dtype)
    module = torch.nn.Dropout(0.45).train()
    torch.manual_seed(3)
    theirs = module(values)
    after = torch.get_rng_state()
    torch.manual_seed(3)
    ours = values * dropout_noise(module, values.shape, values.dtype, values.device)
    assert torch.equal(ours, theirs) and torch.equal(torch.get_rng_state(), after)


def test_uniform_dropout_keeps_one_minus_p_scaled():
    values = torch.ones(1000, 1000)
    module = UniformDropout(0.45).train()
    torch.manual_seed(0)
    out = module(values)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.55, abs=2e-3)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.55))
    torch.manual_seed(0)
    assert torch.equal(module(values), out), "seeded by torch's generator"
    torch.manual_seed(0)
    assert not torch.equal(torch.nn.Dropout(0.45).train()(values), out), "another stream than nn.Dropout"
    assert torch.equal(module.eval()(values), values)
    assert torch.equal(UniformDropout(0.0).train()(values), values)
    assert UniformDropout(1.0).train()(values).abs().sum() == 0


def test_uniform_dropout_gradient_is_the_mask():
    values = torch.randn(50, 8, requires_grad=True)
    torch.manual_seed(1)
    out = UniformDropout(0.3).train()(values)
    out.sum().backward()
    torch.testing.assert_close(values.grad, (out.detach() != 0).float() / 0.7)


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperGRU4Rec", "PaperBERT4Rec", "LLM2BERT4Rec"])
def test_the_setting_swaps_every_dropout_and_nothing_else(tiny, model_name):
    _, _, _, torch_net = build(model_name, tiny, hidden_dropout_prob=0.3, dropout_sampler="torch")
    config, _, _, uniform_net = build(model_name, tiny, hidden_dropout_prob=0.3, dropout_sampler="uniform")
    dropouts = [m for m in torch_net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(type(m) is torch.nn.Dropout for m in dropouts), "RecBole's"
    swapped = [m for m in uniform_net.modules() if isinstance(m, torch.nn.Dropout)]
    assert [m.p for m in swapped] == [m.p for m in dropouts]
    assert all(type(m) is UniformDropout for m in swapped)
    assert list(uniform_net.state_dict()) == list(torch_net.state_dict())


def test_defaults_torch_for_the_paper_models_uniform_for_llm2bert4rec(tiny):
    """LLM2BERT4Rec's own defaults take uniform dropout and bf16 where the hardware has it (validated on the folds);
    the Paper models keep torch's."""
    assert build("PaperBERT4Rec", tiny)[0]["dropout_sampler"] == "torch"
    config = build("LLM2BERT4Rec", tiny)[0]
    assert config["dropout_sampler"] == "uniform" and config["train_precision"] == "auto"


def test_part_of_a_run_identity(tiny):
    from recbole_llm.checkpoints import config_hash

    assert config_hash(build("PaperSASRec", tiny)[0]) != config_hash(build("PaperSASRec", tiny,
                                                                            dropout_sampler="uniform")[0])


def test_recboles_own_models_refuse_it(tiny):
    from recbole_llm.errors import SettingError

    with pytest.raises(SettingError, match="dropout_sampler"):
        build("SASRec", tiny, dropout_sampler="uniform")
