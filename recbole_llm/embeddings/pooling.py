"""Pooling item embeddings of a session into one session embedding.

Position i counts from the end of the session (i = 1 is the last item). The
weighted strategies as the paper's code computes them
(``main/utils/session_utils/decay_utils.py``):

=================  =========================================
mean               w_i = 1
last               w_1 = 1, all others 0
constant_linear    w_i = max(1e-5, 1 - (i-1) / 10)
scaling_linear     w_i = max(1e-5, 1 - (i-1) / |S|)
scaling_quadratic  w_i = max(1e-5, 1 - (i-1) / |S|)^2
scaling_cubic      w_i = max(1e-5, 1 - (i-1) / |S|)^3
log                w_i = 1 / (ln(i) + 1)
harmonic           w_i = 1 / i
squared_harmonic   w_i = 1 / i^2
=================  =========================================

``scaling_quadratic_prose``, ``scaling_cubic_prose`` and ``log_prose`` keep our
earlier reading of the paper's text (max(0, 1 - (i-1)/|S|^2), max(0, 1 - (i-1)/|S|^3),
1 / log(i + 1)) for comparison; the code that produced the paper's numbers is the
table above.

The session embedding is the weighted mean sum_i w_i e_i / sum_i w_i. Shared by
LLMSeqSim, SKNN-Emb, V-SKNN's decay and the hybrids.
"""
from __future__ import annotations

import torch

from ..errors import SettingError

STRATEGIES = (
    "mean", "last", "constant_linear", "scaling_linear", "scaling_quadratic", "scaling_cubic", "log", "harmonic",
    "squared_harmonic", "scaling_quadratic_prose", "scaling_cubic_prose", "log_prose",
)

FLOOR = 1e-5  # the original's floor for the linear decays: old items keep a tiny weight


def check_strategy(option: str, strategy: str) -> str:
    """``strategy`` if it is a known pooling strategy, else one clear error naming ``option``."""
    if strategy not in STRATEGIES:
        raise SettingError(f"{option} must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    return strategy


def position_weights(lengths: torch.Tensor, max_len: int, strategy: str) -> torch.Tensor:
    """Weights (B, max_len) for left-aligned sequences (RecBole's layout: item
    ``length - 1`` is the last); padding positions get 0."""
    if strategy not in STRATEGIES:
        raise SettingError(f"Unknown pooling strategy '{strategy}': choose one of {', '.join(STRATEGIES)}")
    lengths = lengths.reshape(-1, 1).to(torch.float64)
    positions = torch.arange(max_len, dtype=torch.float64, device=lengths.device).unsqueeze(0)
    i = lengths - positions  # 1 for the last item, <= 0 on padding
    valid = i >= 1
    i = i.clamp_min(1.0)
    if strategy == "mean":
        w = torch.ones_like(i)
    elif strategy == "last":
        w = (i == 1).to(i.dtype)
    elif strategy == "constant_linear":
        w = (1 - (i - 1) / 10).clamp_min(FLOOR)
    elif strategy in ("scaling_linear", "scaling_quadratic", "scaling_cubic"):
        power = {"scaling_linear": 1, "scaling_quadratic": 2, "scaling_cubic": 3}[strategy]
        w = (1 - (i - 1) / lengths.clamp_min(1)).clamp_min(FLOOR) ** power
    elif strategy == "log":
        w = 1 / (torch.log(i) + 1)
    elif strategy == "scaling_quadratic_prose":
        w = (1 - (i - 1) / lengths**2).clamp_min(0)
    elif strategy == "scaling_cubic_prose":
        w = (1 - (i - 1) / lengths**3).clamp_min(0)
    elif strategy == "log_prose":
        w = 1 / torch.log(i + 1)
    elif strategy == "harmonic":
        w = 1 / i
    else:
        w = 1 / i**2
    return torch.where(valid, w, torch.zeros_like(w)).to(torch.float32)


def pool(item_table: torch.Tensor, item_seq: torch.Tensor, lengths: torch.Tensor, strategy: str) -> torch.Tensor:
    """Session embeddings (B, d) of left-aligned ``item_seq`` (B, L)."""
    weights = position_weights(lengths, item_seq.shape[1], strategy).to(item_table.device)
    total = weights.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("bl,bld->bd", weights / total, item_table[item_seq])
