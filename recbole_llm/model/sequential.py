"""PaperSASRec, PaperGRU4Rec, PaperBERT4Rec: RecBole's SASRec, GRU4Rec and BERT4Rec with the options of the
paper's code and our training options, as subclasses registered like every model of ours.

RecBole's own classes stay exactly as RecBole ships them (``--model=SASRec`` is RecBole's SASRec, under our
protocol); the ``paper`` preset's rows name these classes (``properties/paper/<dataset>/PaperSASRec.yaml``), and
the LLM2 models subclass them. With every option at its default each class computes what its RecBole parent
computes. The options, each documented in its own module:

- ``output_dense`` / ``output_bias`` (SASRec, GRU4Rec; ``output_head.py``): the paper's projection head;
- ``train_mode: all_positions`` (all three; ``position_losses.py``): every position of a window row supervised;
- ``softmax_negatives`` / ``softmax_sampler`` / ``softmax_loss`` (all three; ``sampled_softmax.py``);
- ``pack_sequences`` (SASRec, BERT4Rec; ``packed_encoder.py``): the encoder on real items only;
- ``bert_layers`` / ``bert_padding`` (``bert_layers.py``) and ``bert_predict_mask`` (``cloze_predict.py``);
- ``cloze_last_block`` (BERT4Rec; ``cloze_states.py``): the cloze losses run the last encoder block at the masked
  positions only (the same numbers up to float rounding, the same random draws);
- ``learner: lazy_adam`` (all three, through their trainer; ``recbole_llm/lazy_adam.py``): Adam on the touched item
  rows only, for large catalogs with the sampled softmax;
- ``train_precision`` (all three, through their trainer): fp32 | bf16 | auto (bf16 where the hardware has it);
- ``dropout_sampler`` (all three; ``dropout.py``): torch | uniform, how dropout masks are drawn.

- ``feed_forward_gelu`` (SASRec, BERT4Rec; ``fused_gelu.py``): fused | recbole, the encoder's GELU as torch's one
  kernel (the same function up to float rounding).

Not an option: the packed encoder skips packing where every position is real (the same values).
- ``full_softmax`` (all three): plain | fused, the exact full-catalog CE without its [positions x catalog]
  tensors (``fused_softmax.py``); ``train_keep_freed_memory``: no page faults within an epoch (``allocator.py``).

Each option is a field of the model's typed settings (``PaperSASRecSettings``, ...) with its default in
``properties/model/<Model>.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from ..data.windows import MASK_LAST, TARGETS, WINDOW_ROWS
from ..errors import SettingError
from ..lazy_adam import CatalogTrainer
from ..registry import register_model
from ..settings import ModelSettings
from . import (bert_layers, cloze_predict, cloze_states, dropout, fused_gelu, output_head, packed_encoder,
               position_losses)
from .sampled_softmax import CatalogSampler, SampledSoftmaxSettings


@dataclass(frozen=True)
class TrainingSettings(ModelSettings):
    """How a Paper model trains (its ``CatalogTrainer``): ``train_precision`` fp32 | bf16 | auto (bf16 where the
    hardware runs it natively). bf16 kept LLM2SASRec's validation NDCG@20 on Beauty's three folds (DECISIONS, stop
    48); the paper preset trains in fp32."""

    train_precision: Literal["fp32", "bf16", "auto"]
    train_keep_freed_memory: bool  # freed memory reused by the next step (recbole_llm/allocator.py)
    dropout_sampler: Literal["torch", "uniform"]  # how dropout masks are drawn (dropout.py)


@dataclass(frozen=True)
class CausalSettings(SampledSoftmaxSettings, TrainingSettings):
    """PaperGRU4Rec's options (defaults: ``properties/model/PaperGRU4Rec.yaml``)."""

    output_dense: Literal["relu", "gelu", "tanh", "linear"] | None  # output_head.ACTIVATIONS
    output_bias: bool


@dataclass(frozen=True)
class PaperSASRecSettings(CausalSettings):
    """PaperSASRec's options (defaults: ``properties/model/PaperSASRec.yaml``)."""

    pack_sequences: bool
    feed_forward_gelu: Literal["fused", "recbole"]  # fused_gelu.py


@dataclass(frozen=True)
class PaperBERT4RecSettings(SampledSoftmaxSettings, TrainingSettings):
    """PaperBERT4Rec's options (defaults: ``properties/model/PaperBERT4Rec.yaml``)."""

    bert_layers: Literal["recbole", "paper"]
    bert_padding: Literal["right", "left", "left_mask"]
    bert_predict_mask: Literal["recbole", "after_prompt"]
    pack_sequences: bool
    cloze_last_block: Literal["masked", "all"]  # the cloze losses' last encoder block (cloze_states.py)
    feed_forward_gelu: Literal["fused", "recbole"]  # fused_gelu.py


class CausalCatalogModel:
    """The head, the all-position loss and the sampled softmax of a causal model (SASRec, GRU4Rec), whose
    ``forward`` returns the state that is scored against the tied item table."""

    reads_window_rows = True  # train_mode: all_positions (recbole_llm/data/windows.py)
    trainer_class = CatalogTrainer  # RecBole's Trainer, plus learner: lazy_adam (recbole_llm/lazy_adam.py)

    def _init_catalog(self, config, dataset) -> None:
        self.settings = self.settings_class.read(config)
        output_head.add_head(self, self.settings)
        self.catalog_sampler = CatalogSampler.from_settings(self.settings, dataset, self.n_items)
        dropout.use_sampler(self, self.settings)

    def forward(self, item_seq, item_seq_len):
        return output_head.apply_head(self, super().forward(item_seq, item_seq_len))

    def calculate_loss(self, interaction):
        if TARGETS in interaction.interaction:  # train_mode: all_positions rows
            return position_losses.all_positions_loss(self, interaction)
        ours = self.loss_type == "CE" and (self.catalog_sampler is not None or self.settings.full_softmax == "fused")
        if output_head.bias(self) is None and not ours:
            return super().calculate_loss(interaction)
        return output_head.last_position_loss(self, interaction)

    def full_sort_predict(self, interaction):
        scores = super().full_sort_predict(interaction)
        return scores if output_head.bias(self) is None else scores + output_head.bias(self)

    def predict(self, interaction):
        scores = super().predict(interaction)
        bias = output_head.bias(self)
        return scores if bias is None else scores + bias[interaction[self.ITEM_ID]]


@register_model
class PaperSASRec(CausalCatalogModel, SASRec):
    """RecBole's SASRec; the paper's projection head, all-position training, sampled softmax and packing on
    request."""

    settings_class = PaperSASRecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._init_catalog(config, dataset)
        packed_encoder.pack_encoder(self, self.settings)
        fused_gelu.fuse_gelu(self, self.settings)


@register_model
class PaperGRU4Rec(CausalCatalogModel, GRU4Rec):
    """RecBole's GRU4Rec; its own dense is the projection head's Dense (``output_dense`` adds the activation)."""

    settings_class = CausalSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._init_catalog(config, dataset)


@register_model
class PaperBERT4Rec(BERT4Rec):
    """RecBole's BERT4Rec; the paper's layers, padding and prediction mask, window rows with copied cloze masks,
    sampled softmax and packing on request."""

    reads_window_rows = True
    trainer_class = CatalogTrainer
    settings_class = PaperBERT4RecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.settings = self.settings_class.read(config)
        self.bert_predict_mask = self.settings.bert_predict_mask
        bert_layers.apply_layers(self, self.settings)
        self.catalog_sampler = CatalogSampler.from_settings(self.settings, dataset, self.n_items)
        packed_encoder.pack_encoder(self, self.settings)
        dropout.use_sampler(self, self.settings)
        fused_gelu.fuse_gelu(self, self.settings)

    def forward(self, item_seq):
        return bert_layers.forward_padded(self, item_seq, super().forward)

    def cloze_states(self, item_seq, rows, cols):
        """``forward(item_seq)[rows, cols]``, what the cloze losses read; the last block at those positions only
        (``cloze_last_block``) where ``forward`` is this one, which ``cloze_states.states_at`` mirrors."""
        if type(self).forward is not PaperBERT4Rec.forward:
            return self.forward(item_seq)[rows, cols]
        return cloze_states.states_at(self, item_seq, rows, cols)

    def calculate_loss(self, interaction):
        if MASK_LAST in interaction.interaction and self.loss_type == "CE":
            return position_losses.copied_cloze_loss(self, interaction)
        if WINDOW_ROWS in interaction.interaction and self.loss_type == "CE":
            return position_losses.cloze_loss(self, interaction)
        return super().calculate_loss(interaction)

    def full_sort_predict(self, interaction):
        if self.bert_predict_mask == "recbole":
            return super().full_sort_predict(interaction)
        return cloze_predict.full_sort_after_prompt(self, interaction)

    def predict(self, interaction):
        if self.bert_predict_mask == "recbole":
            return super().predict(interaction)
        return cloze_predict.predict_after_prompt(self, interaction)


SEQUENTIAL_MODELS = (PaperSASRec, PaperGRU4Rec, PaperBERT4Rec)
PAPER_VERSION = {SASRec: PaperSASRec, GRU4Rec: PaperGRU4Rec, BERT4Rec: PaperBERT4Rec}

# the options above, at the values that leave a model as RecBole ships it
OPTIONS = {"output_dense": (None,), "output_bias": (None, False), "pack_sequences": (None, False),
           "softmax_negatives": (None,), "bert_layers": (None, "recbole"), "bert_padding": (None, "right"),
           "bert_mask_last_copies": (None,), "bert_random_mask_copies": (None,), "train_precision": (None, "fp32"),
           "dropout_sampler": (None, "torch"),
           "full_softmax": (None, "plain"), "cloze_last_block": (None, "all"),
           "feed_forward_gelu": (None, "recbole")}


def refuse_options_recbole_ignores(config, model_class) -> None:
    """RecBole's own SASRec, GRU4Rec and BERT4Rec (and subclasses of theirs that are not ours) never read these
    options: asked of them, they would silently change nothing. Point to the class that reads them."""
    if not isinstance(model_class, type) or issubclass(model_class, SEQUENTIAL_MODELS):
        return
    ours = next((PAPER_VERSION[base] for base in model_class.__mro__ if base in PAPER_VERSION), None)
    if ours is not None and model_class in PAPER_VERSION and str(config["preset"] or "").startswith("paper"):
        import logging

        logging.getLogger(__name__).info(
            "%s is RecBole's own model, as RecBole ships it (under the paper preset's protocol); the paper's %s, with "
            "its published configuration where we ship one, is --model=%s", model_class.__name__,
            model_class.__name__, ours.__name__)
    asked = [key for key, neutral in OPTIONS.items() if config[key] not in neutral]
    if ours is not None and asked:
        raise SettingError(f"{', '.join(asked)}: options of {ours.__name__}, which {model_class.__name__} (RecBole's "
                         f"own model) does not read; use --model={ours.__name__}")
