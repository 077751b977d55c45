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
