"""``output_bias: True``: a learned per-item bias on the tied output layer of
SASRec and GRU4Rec (and their LLM2 subclasses), as the paper's projection head
adds one to its logits. Popular items can then score higher without bending the
shared item table. Off by default, so RecBole's models are unchanged unless a
config asks for it; the bias starts at zero and is saved with the model."""
from __future__ import annotations

import functools

import torch


def bias(model) -> torch.Tensor | None:
    return getattr(model, "item_bias", None)


def init_with_bias(original):
    @functools.wraps(original)
    def __init__(self, config, dataset):
        original(self, config, dataset)
        if config["output_bias"]:
            self.item_bias = torch.nn.Parameter(torch.zeros(self.n_items))

    return __init__


def full_sort_with_bias(original):
    @functools.wraps(original)
    def full_sort_predict(self, interaction):
        scores = original(self, interaction)
        return scores if bias(self) is None else scores + bias(self)

    return full_sort_predict


def predict_with_bias(original):
    @functools.wraps(original)
    def predict(self, interaction):
        scores = original(self, interaction)
        return scores if bias(self) is None else scores + bias(self)[interaction[self.ITEM_ID]]

    return predict


def loss_with_bias(original):
    @functools.wraps(original)
    def calculate_loss(self, interaction):
        from ..all_positions import TARGETS

        if bias(self) is None or TARGETS in interaction.interaction:
            return original(self, interaction)  # the all-position loss adds the bias itself
        output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        pos = interaction[self.POS_ITEM_ID]
        table = self.item_embedding.weight[: self.n_items]
        if self.loss_type == "BPR":
            neg = interaction[self.NEG_ITEM_ID]
            return self.loss_fct((output * table[pos]).sum(-1) + bias(self)[pos],
                                 (output * table[neg]).sum(-1) + bias(self)[neg])
        return self.loss_fct(output @ table.T + bias(self), pos)

    return calculate_loss
