"""The paper's projection head on the tied output layer of PaperSASRec and PaperGRU4Rec
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

Both are off by default (the class is then its RecBole parent); the head is saved
with the model. The Dense acts inside ``forward``, so every
loss and prediction path (and the all-position loss) sees it.
"""
from __future__ import annotations

import torch

from .sampled_softmax import catalog_loss

ACTIVATIONS = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu, "tanh": torch.tanh,
               "linear": lambda x: x}


def add_head(model, settings) -> None:
    """After the RecBole model's own init: the per-item bias (``output_bias``), then the Dense and its
    activation (``output_dense``; GRU4Rec's own hidden -> embedding ``dense`` is the head's Dense)."""
    from recbole.model.sequential_recommender import GRU4Rec

    if settings.output_bias:
        model.item_bias = torch.nn.Parameter(torch.zeros(model.n_items))
    activation = settings.output_dense  # one of ACTIVATIONS (checked as the settings were read) or None
    model.output_activation = None
    if activation is None:
        return
    if not isinstance(model, GRU4Rec):
        size = model.item_embedding.embedding_dim
        model.output_dense = torch.nn.Linear(size, size)
        torch.nn.init.xavier_uniform_(model.output_dense.weight)
        torch.nn.init.zeros_(model.output_dense.bias)
    model.output_activation = activation


def apply_head(model, output: torch.Tensor) -> torch.Tensor:
    """The encoder's output through the head's Dense and activation (the identity without a head)."""
    if model.output_activation is None:
        return output
    dense = getattr(model, "output_dense", None)
    return ACTIVATIONS[model.output_activation](output if dense is None else dense(output))


def bias(model) -> torch.Tensor | None:
    return getattr(model, "item_bias", None)


def catalog_table(model) -> torch.Tensor:
    """[items, d]: what a model's state is scored against: its ``catalog_table()`` where it has one (a model with
    two item views), else the tied item table."""
    own = getattr(model, "catalog_table", None)
    return own() if own is not None else model.item_embedding.weight[: model.n_items]


def last_position_loss(model, interaction) -> torch.Tensor:
    """RecBole's last-position loss (RecBole's rows, ``train_mode: prefixes``) with the per-item bias and the
    sampled softmax, which RecBole's own loss does not know."""
    output = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    pos = interaction[model.POS_ITEM_ID]
    table = catalog_table(model)
    if model.loss_type == "BPR":
        neg = interaction[model.NEG_ITEM_ID]
        return model.loss_fct((output * table[pos]).sum(-1) + bias(model)[pos],
                              (output * table[neg]).sum(-1) + bias(model)[neg])
    return catalog_loss(model, output, pos, table, bias(model))
