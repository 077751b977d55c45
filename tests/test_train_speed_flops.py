"""The speed benchmark's FLOP count spans a step's forward and backward (``benchmarks.train_speed.step_flops``).

Its shares of the matmul peak are #43's done-when; until stop 55 a second counter context cleared the forward's
count, and every share was 2/3 of the true one."""
import pytest
import torch

from benchmarks.train_speed import step_flops


class _OneProduct(torch.nn.Module):
    """A model whose step is one [m x k] @ [k x n] product: 2mnk forward, 2mnk for each of the two gradients."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n, k))

    def calculate_loss(self, states):
        return torch.nn.functional.linear(states, self.weight).float().square().mean()


@pytest.mark.parametrize("bf16", [False, True])
def test_step_flops_counts_forward_and_backward(bf16):
    m, k, n = 6, 5, 7
    states = torch.randn(m, k, requires_grad=True)
    assert step_flops(_OneProduct(k, n), states, bf16) == 3 * 2 * m * n * k


def test_step_flops_without_input_gradient():
    m, k, n = 6, 5, 7  # the input takes no gradient: the forward product and the weight's gradient
    assert step_flops(_OneProduct(k, n), torch.randn(m, k), False) == 2 * 2 * m * n * k


class _FusedCatalog(torch.nn.Module):
    """A step whose only matrix work is the fused catalog loss: [m x k] states against an [n x k] table."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(n, k))

    def calculate_loss(self, batch):
        from recbole_llm.model.fused_softmax import fused_cross_entropy

        states, targets = batch
        return fused_cross_entropy(states, self.table, targets)


def test_fused_loss_tally_counts_the_loss_products_and_time():
    from benchmarks.train_speed import fused_loss_tally
    from recbole_llm.model.fused_softmax import FusedCatalogCrossEntropy

    m, k, n = 6, 5, 7
    original = FusedCatalogCrossEntropy.forward
    states, targets = torch.randn(m, k, requires_grad=True), torch.randint(0, n, (m,))
    model = _FusedCatalog(k, n)
    with fused_loss_tally() as tally:
        model.calculate_loss((states, targets)).backward()
    assert tally["calls"] == 1 and tally["seconds"] > 0
    assert tally["flops"] == 3 * 2 * m * n * k  # the forward makes both gradients' products
    model.table.requires_grad_(False)  # a frozen table: its gradient's product is neither made nor counted
    with fused_loss_tally() as tally:
        model.calculate_loss((states, targets)).backward()
    assert tally["flops"] == 2 * 2 * m * n * k
    assert FusedCatalogCrossEntropy.forward is original  # restored
    expected = torch.nn.functional.cross_entropy(states.detach() @ model.table.detach().T, targets)
    assert torch.allclose(model.calculate_loss((states, targets)), expected)


def test_share_ceiling_is_the_loss_share_when_the_loss_is_all_the_work():
    from benchmarks.train_speed import share_ceiling

    row = {"gflop_per_step": 1.0, "loss_gflop_per_step": 1.0, "loss_gflop_per_s": 50.0}
    assert share_ceiling(row, 100.0) == 0.5
    row = {"gflop_per_step": 2.0, "loss_gflop_per_step": 1.0, "loss_gflop_per_s": 100.0}  # both halves at the peak
    assert share_ceiling(row, 100.0) == 1.0
