"""How a Paper model's dropout draws its mask (``dropout_sampler``).

``torch.nn.Dropout`` on the CPU draws its mask with ``bernoulli_``, which off Intel CPUs (torch takes MKL's
vectorised sampler only where the vendor is Intel) draws one element at a time (about a tenth of LLM2BERT4Rec's
bf16 step in a profile taken by hand on this AMD EPYC). Keeping an element where a uniform draw ``torch.rand`` is at
least ``p`` is the same Bernoulli(1 - p) mask from torch's own seeded generator, drawn in bulk: LLM2BERT4Rec's bf16
step 0.365 -> 0.338 s (``benchmarks/results/profile/train_speed_final_stop54.json``, "bf16 fused" against "bf16
fused, uniform dropout").

- ``torch`` (the Paper models' default and the paper preset's): RecBole's ``nn.Dropout``.
- ``uniform``: every ``nn.Dropout`` of the model draws its mask from ``torch.rand``. Same distribution, another
  random stream: a seeded run differs from a ``torch`` one as another seed would, so the key is part of a run's
  identity and a family adopts it only after its validation folds (benchmarks/DECISIONS.md).

``dropout_noise`` is the one home of "the multiplier a dropout module applies": ``cloze_states`` reads it to draw
what the full block would draw.
"""
from __future__ import annotations

import torch


class UniformDropout(torch.nn.Dropout):
    """``nn.Dropout(p)`` whose mask keeps an element where ``torch.rand`` >= p (``dropout_sampler: uniform``)."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return values
        return values * dropout_noise(self, values.shape, values.dtype, values.device)


def dropout_noise(dropout: torch.nn.Dropout, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """The multiplier ``dropout`` (in training, 0 < p) applies to a tensor of ``shape``: 0 or 1 / (1 - p), drawn
    as its forward draws it (for ``nn.Dropout``, ATen's CPU dropout: ``bernoulli_(1 - p)`` then ``div_(1 - p)``)."""
    p = dropout.p
    if p == 1:
        return torch.zeros(shape, dtype=dtype, device=device)
    if isinstance(dropout, UniformDropout):
        return torch.rand(shape, device=device).ge_(p).to(dtype).mul_(1 / (1 - p))
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p).div_(1 - p)


def use_sampler(model: torch.nn.Module, settings) -> None:
    """``dropout_sampler: uniform``: every ``nn.Dropout`` of ``model`` becomes a ``UniformDropout`` of the same p
    (no parameters: state dicts are unchanged)."""
    if settings.dropout_sampler != "uniform":
        return
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(module, name, UniformDropout(child.p))
