"""The paper's projection head on the tied output layer of SASRec and GRU4Rec
(and their LLM2 subclasses): ``Dense(size, activation)``, then the item table,
optionally plus a per-item bias (the paper's ``ProjectionHead``; BERT4Rec has
RecBole's own, which is that head already).

- ``output_dense: relu`` (or another activation): SASRec gains a Dense layer
  on its output (Keras' initialisation: Glorot-uniform kernel, zero bias);
  GRU4Rec's own hidden -> embedding ``dense`` becomes the head's Dense and the
  activation follows it. ``~`` (default): no head.
- ``output_bias: True``: a learned per-item bias, starting at zero. Popular
  items can then score higher without bending the shared item table. The
  paper's ``BiasLayer`` means to be this, but it takes its shape from
  ``input_shape[2:]`` of a 2-D [positions, items] input: one scalar, which no
  softmax or ranking sees (variants ``SASRec-nobias`` / ``GRU4Rec-nobias``).

Both are off by default, so RecBole's models are unchanged unless a config asks;
the head is saved with the model. The Dense acts inside ``forward``, so every
loss and prediction path (and the all-position loss) sees it.
"""
from __future__ import annotations

import functools

import torch

from .sampled_softmax import catalog_loss


ACTIVATIONS = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu, "tanh": torch.tanh,
               "linear": lambda x: x}


def init_with_dense(original):
    @functools.wraps(original)
    def __init__(self, config, dataset):
        original(self, config, dataset)
        activation = config["output_dense"]
        if activation is None:
            return
        if activation not in ACTIVATIONS:
            raise ValueError(f"output_dense must be one of {', '.join(ACTIVATIONS)} (or ~ for none); got {activation!r}")
        from recbole.model.sequential_recommender import GRU4Rec

        if not isinstance(self, GRU4Rec):  # GRU4Rec's own dense (hidden -> embedding) is the head's Dense
            size = self.item_embedding.embedding_dim
            self.output_dense = torch.nn.Linear(size, size)
            torch.nn.init.xavier_uniform_(self.output_dense.weight)
            torch.nn.init.zeros_(self.output_dense.bias)
        self.output_activation = activation

    return __init__


def forward_with_dense(original):
    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        activation = getattr(self, "output_activation", None)
        if activation is None:
            return output
        dense = getattr(self, "output_dense", None)
        return ACTIVATIONS[activation](output if dense is None else dense(output))

    return forward


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

        sampled = getattr(self, "catalog_sampler", None) is not None and self.loss_type == "CE"  # softmax_negatives
        if (bias(self) is None and not sampled) or TARGETS in interaction.interaction:
            return original(self, interaction)  # the all-position loss adds the bias itself
        output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        pos = interaction[self.POS_ITEM_ID]
        table = self.item_embedding.weight[: self.n_items]
        if self.loss_type == "BPR":
            neg = interaction[self.NEG_ITEM_ID]
            return self.loss_fct((output * table[pos]).sum(-1) + bias(self)[pos],
                                 (output * table[neg]).sum(-1) + bias(self)[neg])
        return catalog_loss(self, output, pos, table, bias(self))

    return calculate_loss
