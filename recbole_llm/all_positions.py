"""All-position training (``train_mode: all_positions``) for RecBole's sequential models.

RecBole turns every prefix of a training session into its own padded row and
supervises its last position only, so a session of n items is encoded n-1
times. The original SASRec, Transformers4Rec, SASRec+ and the paper's code feed
each sequence once and supervise every position under the causal mask: the same
(prefix, next item) pairs, far fewer forward passes.

The data side keeps RecBole's rows and selects from them: the row whose target
is a session's last item, then every ``MAX_ITEM_LIST_LENGTH``-th row before it,
so that each target is predicted exactly once; a session longer than the window
is cut into windows (the later window's first positions then see a shorter
prefix than in ``prefixes`` mode). Each selected row gains
``target_item_id_list``, the next item at every position (0 on padding).

- Causal models (SASRec, GRU4Rec and their LLM2 subclasses): RecBole's own
  ``forward`` ends in ``gather_indexes(output, length - 1)``; the loss reads the
  output at every position by running that forward without the gather, then CE
  over the catalog (or BPR with one uniformly sampled negative) at every target.
- Cloze models (BERT4Rec, LLM2BERT4Rec; ``transform: mask_itemseq``): the row's
  item list becomes the window itself (target included), one row per window, and
  RecBole's own masking transform and loss do the rest. With
  ``bert_mask_last_copies`` / ``bert_random_mask_copies`` set, each window instead
  appears that many times per epoch, as the paper's code trains (1 copy with only
  the last item masked, 10 with every item masked with probability
  ``mask_ratio``), and the loss draws those masks itself (RecBole's transform
  masks the last item for a whole batch with probability ``ft_ratio`` instead).

Evaluation, checkpoints, the trainer, HyperTuning and DDP are RecBole's. Rows
without ``target_item_id_list`` (``prefixes``, RecBole's default) take RecBole's
own loss, so nothing changes for a user who does not ask for this mode.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

from .model.sampled_softmax import catalog_loss

TARGETS = "target_item_id_list"
WINDOW_ROWS = "all_positions_window"  # marks cloze rows built here: their CE skips the empty mask slots
MASK_LAST = "cloze_mask_last"  # on copied cloze rows: 1 = mask the last item only, 0 = mask at random
TRAIN_MODES = ("prefixes", "all_positions")


def window_end_rows(uids: np.ndarray, lengths_before: np.ndarray, window: int) -> np.ndarray:
    """Indices of the rows to keep among RecBole's augmented rows, given each row's
    session id and the number of its session's items before its target (its target
    index): the last target of each session, then every ``window``-th before it."""
    order = np.lexsort((lengths_before, uids))
    uids_sorted, index = uids[order], lengths_before[order]
    last = np.r_[uids_sorted[1:] != uids_sorted[:-1], True]
    stops = np.flatnonzero(last)
    ends = np.repeat(index[stops], np.diff(np.r_[-1, stops]))  # each session's last target index, per row
    keep = (ends - index) % window == 0
    return np.sort(order[keep])


def cloze_copies(config) -> tuple[int, int] | None:
    """(mask-last copies, random-mask copies) of each window per epoch, or None for RecBole's masking."""
    last, random = config["bert_mask_last_copies"], config["bert_random_mask_copies"]
    if last is None and random is None:
        return None
    last, random = int(last or 0), int(random or 0)
    if last < 0 or random < 0 or last + random == 0:
        raise ValueError("bert_mask_last_copies and bert_random_mask_copies count copies of each training window per "
                         f"epoch: non-negative, at least one copy in all (got {last} and {random})")
    return last, random


def to_all_positions(dataset, cloze: bool = False, copies: tuple[int, int] | None = None):
    """The training dataset with one row per window and every position's target; cloze rows repeated as
    ``copies`` = (mask-last, random-mask) copies when given."""
    from recbole.utils import FeatureSource, FeatureType

    inter = dataset.inter_feat
    seq_field, len_field, iid_field = dataset.item_id_list_field, dataset.item_list_length_field, dataset.iid_field
    uids = inter[dataset.uid_field].numpy()
    seq, lengths, targets = inter[seq_field].numpy(), inter[len_field].numpy(), inter[iid_field].numpy()
    # the target index of a row is its session position; RecBole's rows of one session have strictly growing
    # lengths until the window is full, then equal lengths: count rows per session instead
    order = np.lexsort((np.arange(len(uids)), uids))
    first = np.r_[True, uids[order][1:] != uids[order][:-1]]
    position = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    target_index = np.empty(len(order), dtype=np.int64)
    target_index[order] = position + 1
    rows = window_end_rows(uids, target_index, int(seq.shape[1]))
    seq, lengths, targets = seq[rows], lengths[rows], targets[rows]
    width = seq.shape[1]
    full = np.zeros((len(rows), width + 1), dtype=seq.dtype)  # each row's items, then its target
    full[:, :width] = seq
    full[np.arange(len(rows)), lengths] = targets
    new = inter[torch.as_tensor(rows)]
    if cloze:  # the window itself, target included, at most `width` items (when n - 1 is a multiple of the
        # width, a session's first item is in no window: it is never a target in RecBole's rows either)
        start = np.maximum(lengths + 1 - width, 0)
        window = np.zeros_like(seq)
        for r, (s, n) in enumerate(zip(start, lengths)):
            window[r, : n + 1 - s] = full[r, s : n + 1]
        new.interaction[seq_field] = torch.as_tensor(window)
        new.interaction[len_field] = torch.as_tensor(lengths + 1 - start)
        new.interaction[WINDOW_ROWS] = torch.ones(len(rows), dtype=torch.long)
        dataset.set_field_property(WINDOW_ROWS, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        if copies:
            mask_last, random = copies
            new = new[torch.arange(len(rows)).repeat(mask_last + random)]
            new.interaction[MASK_LAST] = (torch.arange(len(new)) < mask_last * len(rows)).long()
            dataset.set_field_property(MASK_LAST, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
    else:
        next_items = full[:, 1 : width + 1].copy()
        next_items[np.arange(width)[None, :] >= lengths[:, None]] = 0
        new.interaction[TARGETS] = torch.as_tensor(next_items)
        dataset.set_field_property(TARGETS, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION, width)
    out = dataset.copy(new)
    out.train_mode = "all_positions"
    out.train_item_counter = dataset.item_counter  # popularity stays that of every training target, not window ends
    return out


def supports_all_positions(model_class) -> bool:
    """The models whose loss reads window rows: SASRec, GRU4Rec, BERT4Rec and their subclasses (LLM2*)."""
    from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

    return isinstance(model_class, type) and issubclass(model_class, (SASRec, GRU4Rec, BERT4Rec))


@contextlib.contextmanager
def every_position(model):
    """Within the block, the model's ``forward`` returns [B, L, H]: RecBole's SASRec
    and GRU4Rec end their forward by gathering the last position, which becomes
    the identity here."""
    model.gather_indexes = lambda output, index: output
    try:
        yield model
    finally:
        del model.gather_indexes


def all_positions_loss(model, interaction) -> torch.Tensor:
    """Mean loss over every supervised position of the batch."""
    item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    targets = interaction[TARGETS]
    with every_position(model):
        output = model.forward(item_seq, item_seq_len)  # [B, L, H]
    supervised = targets > 0
    output, targets = output[supervised], targets[supervised]
    table = model.item_embedding.weight[: model.n_items]
    bias = getattr(model, "item_bias", None)  # output_bias: True
    if model.loss_type == "BPR":
        negatives = torch.randint(1, model.n_items, targets.shape, device=targets.device)
        pos = (output * table[targets]).sum(-1)
        neg = (output * table[negatives]).sum(-1)
        if bias is not None:
            pos, neg = pos + bias[targets], neg + bias[negatives]
        return model.loss_fct(pos, neg)
    return catalog_loss(model, output, targets, table, bias)


def copied_cloze_loss(model, interaction) -> torch.Tensor:
    """CE on the masks drawn here for copied window rows: the last item alone on mask-last copies, each item
    with probability ``mask_ratio`` on the others (a row that draws no mask adds nothing, as in the paper's
    code). Masks are drawn anew every epoch from torch's seeded generator."""
    from .model.cloze_predict import catalog_loss

    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    last = interaction[MASK_LAST].bool()
    masked = (torch.rand(seq.shape, device=seq.device) < model.mask_ratio) & (seq > 0) & ~last.unsqueeze(1)
    rows = last.nonzero(as_tuple=True)[0]
    masked[rows, lengths[rows] - 1] = True
    output = model.forward(seq.masked_fill(masked, model.mask_token))  # [B, L, H]
    if not masked.any():  # a small batch of random copies that drew no mask: nothing to learn, no NaN
        return output.sum() * 0.0
    return catalog_loss(model, output[masked], seq[masked])


def cloze_loss(model, interaction) -> torch.Tensor:
    """RecBole's BERT4Rec CE, computed on the masked slots only: RecBole scores the whole catalog for every one
    of ``int(mask_ratio * N)`` slots per row, empty ones included (18 per row at mask ratio 0.9 and N = 20,
    where a Beauty window has ~7 items), then multiplies the empty ones by 0. Same loss, a fraction of the
    work; slots at position 0 are left out, as RecBole does (its mask index 0 means padding)."""
    from .model.cloze_predict import catalog_loss

    masked_index = interaction[model.MASK_INDEX]
    output = model.forward(interaction[model.MASK_ITEM_SEQ])  # [B, L, H]
    rows, slots = (masked_index > 0).nonzero(as_tuple=True)
    states = output[rows, masked_index[rows, slots]]
    return catalog_loss(model, states, interaction[model.POS_ITEMS][rows, slots])


def loss_at_every_position(original):
    """SASRec's and GRU4Rec's loss (inherited by their LLM2 subclasses) for rows that carry every
    position's target; other rows keep RecBole's loss."""

    @functools.wraps(original)
    def calculate_loss(self, interaction):
        if TARGETS in interaction.interaction:
            return all_positions_loss(self, interaction)
        return original(self, interaction)

    return calculate_loss


def cloze_loss_on_window_rows(original):
    """BERT4Rec's loss on window rows: the cross-entropy on masked slots only (``cloze_loss``)."""

    @functools.wraps(original)
    def calculate_loss(self, interaction):
        if MASK_LAST in interaction.interaction and self.loss_type == "CE":
            return copied_cloze_loss(self, interaction)
        if WINDOW_ROWS in interaction.interaction and self.loss_type == "CE":
            return cloze_loss(self, interaction)
        return original(self, interaction)

    return calculate_loss
