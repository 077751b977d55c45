"""Sampled softmax for the catalog losses of PaperSASRec, PaperGRU4Rec, PaperBERT4Rec and their LLM2 versions.

The full softmax scores every training target against the whole catalog: on Beauty the [positions x 12,101]
logits are most of a step's FLOPs, and a catalog of a million items cannot afford them at all. With
``softmax_negatives: N`` each batch draws N items once and shares them between all its positions (one
[positions x N] product instead of [positions x catalog]); a negative that is a position's own target is masked.

- ``softmax_sampler: uniform`` or ``popularity`` (proportional to training counts). The logits are corrected by
  -log Q(item) (Bengio & Senecal; Yi et al. 2019), so the sampled softmax estimates the full one whatever Q is.
- ``softmax_loss: ce`` (sampled cross-entropy) or ``gbce`` (gSASRec, Petrov & Macdonald 2023): binary
  cross-entropy with the positive's probability raised to beta, which undoes the overconfidence that negative
  sampling teaches; ``gbce_t`` in [0, 1] (0: plain BCE, 1: calibrated as with every item a negative).

Evaluation always ranks the full catalog. ``softmax_negatives: ~`` (the default) keeps the exact full softmax,
computed as ``full_softmax`` says: ``plain`` (the [positions x catalog] logits, then torch's cross-entropy) or
``fused`` (the same loss in cache-sized chunks, its gradients made in the same pass: ``fused_softmax.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import SettingError
from ..settings import ModelSettings

SAMPLERS = ("uniform", "popularity")
LOSSES = ("ce", "gbce")


@dataclass(frozen=True)
class SampledSoftmaxSettings(ModelSettings):
    """The catalog loss's settings, shared by every Paper model (defaults: ``properties/model/Paper*.yaml``)."""

    softmax_negatives: int | None
    softmax_sampler: Literal["uniform", "popularity"]
    softmax_loss: Literal["ce", "gbce"]
    gbce_t: float
    full_softmax: Literal["plain", "fused"]


class CatalogSampler(torch.nn.Module):
    """The negatives of one model: its settings and, for ``popularity``, the sampling distribution (a buffer, so
    a checkpoint carries it)."""

    def __init__(self, n_items: int, negatives: int, sampler: str = "uniform", loss: str = "ce",
                 gbce_t: float = 0.75, counts: torch.Tensor | None = None):
        super().__init__()
        if sampler not in SAMPLERS:
            raise SettingError(f"softmax_sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if loss not in LOSSES:
            raise SettingError(f"softmax_loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        if not 0 < negatives < n_items - 1:
            raise SettingError(f"softmax_negatives must be between 1 and the catalog size - 2 ({n_items - 2}); got "
                             f"{negatives} (~ for the full softmax)")
        if not 0.0 <= gbce_t <= 1.0:
            raise SettingError(f"gbce_t must be in [0, 1]; got {gbce_t}")
        self.n_items, self.negatives, self.sampler, self.loss, self.gbce_t = n_items, negatives, sampler, loss, gbce_t
        probability = torch.ones(n_items, dtype=torch.float64)
        if sampler == "popularity":
            if counts is None:
                raise SettingError("softmax_sampler: popularity needs the training item counts")
            probability = counts.to(torch.float64).clamp_min(0) + 1.0  # add-one: every item can be drawn
        probability[0] = 0.0  # padding
        self.register_buffer("probability", (probability / probability.sum()).float())

    @classmethod
    def from_settings(cls, settings: SampledSoftmaxSettings, dataset, n_items: int) -> "CatalogSampler | None":
        """The model's sampler, or None for the exact full softmax (``softmax_negatives: ~``)."""
        if settings.softmax_negatives is None:
            return None
        counts = None
        if settings.softmax_sampler == "popularity":
            counter = getattr(dataset, "train_item_counter", None) or dataset.item_counter
            counts = torch.zeros(n_items)
            for item, count in counter.items():
                if 0 < int(item) < n_items:
                    counts[int(item)] = count
        return cls(n_items, settings.softmax_negatives, settings.softmax_sampler, settings.softmax_loss,
                   settings.gbce_t, counts)

    def draw(self, device) -> torch.Tensor:
        if self.sampler == "uniform":
            return torch.randint(1, self.n_items, (self.negatives,), device=device)
        return torch.multinomial(self.probability, self.negatives, replacement=True).to(device)

    def forward(self, states: torch.Tensor, targets: torch.Tensor, table: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of ``states`` [M, H] at ``targets`` [M] against a shared sample of the item ``table``."""
        negatives = self.draw(states.device)
        positive = (states * table[targets]).sum(-1)
        negative = states @ table[negatives].T  # [M, N]
        if bias is not None:
            positive, negative = positive + bias[targets], negative + bias[negatives]
        hit = negatives.unsqueeze(0) == targets.unsqueeze(1)  # a negative that is the position's own target
        if self.loss == "gbce":
            alpha = self.negatives / (self.n_items - 2)  # the share of the catalog's non-targets sampled
            beta = alpha * (self.gbce_t * (1 - 1 / alpha) + 1 / alpha)
            negative_term = torch.nn.functional.softplus(negative).masked_fill(hit, 0.0).sum(-1)
            return (beta * torch.nn.functional.softplus(-positive) + negative_term).mean()
        log_q = torch.log(self.probability.clamp_min(1e-30) * self.negatives)
        positive = positive - log_q[targets]
        negative = (negative - log_q[negatives]).masked_fill(hit, -math.inf)
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        return torch.nn.functional.cross_entropy(logits, torch.zeros_like(targets))


def catalog_loss(model, states: torch.Tensor, targets: torch.Tensor, table: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """The model's training loss over the catalog: its sampled softmax when it has one, else the exact full CE
    (fused or plain, as its ``full_softmax`` says)."""
    sampler = getattr(model, "catalog_sampler", None)
    if sampler is not None and model.training:
        return sampler(states, targets, table, bias)
    if model.training and model.settings.full_softmax == "fused":  # every model with a catalog loss reads it
        from .fused_softmax import fused_cross_entropy

        return fused_cross_entropy(states, table, targets, bias)
    logits = states @ table.T
    return torch.nn.functional.cross_entropy(logits if bias is None else logits + bias, targets)
