"""All-position training (``train_mode: all_positions``), the data side: the window rows of the training split.

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

- Causal models (PaperSASRec, PaperGRU4Rec and their LLM2 subclasses): each row
  keeps its window and gains every position's target; the losses are in
  ``recbole_llm/model/position_losses.py``.
- Cloze models (PaperBERT4Rec, LLM2BERT4Rec; ``transform: mask_itemseq``): the row's
  item list becomes the window itself (target included), one row per window, and
  RecBole's own masking transform feeds the loss on masked slots. With
  ``bert_mask_last_copies`` / ``bert_random_mask_copies`` set, each window instead
  appears that many times per epoch, as the paper's code trains (1 copy with only
  the last item masked, 10 with every item masked with probability
  ``mask_ratio``), and the loss draws those masks itself (RecBole's transform
  masks the last item for a whole batch with probability ``ft_ratio`` instead).

Evaluation, checkpoints, the trainer, HyperTuning and DDP are RecBole's. Only a
model class that declares ``reads_window_rows`` may be given these rows (a kNN
model or another loss would silently see only the window ends).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SettingError

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


def session_positions(uids: np.ndarray) -> np.ndarray:
    """Each row's position in its session (0 for its first row), for rows grouped by session."""
    first = np.r_[True, uids[1:] != uids[:-1]]
    rows = np.arange(len(uids))
    return rows - np.maximum.accumulate(np.where(first, rows, 0))


def prefix_rows(dataset, keep=None) -> None:
    """RecBole's ``SequentialDataset.data_augmentation`` in place: the same rows in the same order, field by field,
    vectorised (its per-row Python loop took minutes at 10M interactions), keeping only the target rows that
    ``keep(uids, positions, last_positions)`` selects when given (a row's position: its session's items before its
    target). The training split of ``train_mode: all_positions`` keeps its window end rows only, and an evaluated
    session its last row: a large catalog never holds the prefixes that would be dropped (two lists of
    ``MAX_ITEM_LIST_LENGTH`` per interaction otherwise)."""
    from recbole.data.interaction import Interaction
    from recbole.utils import FeatureType

    dataset._aug_presets()
    dataset._check_field("uid_field", "time_field")
    window = dataset.config["MAX_ITEM_LIST_LENGTH"]
    dataset.sort(by=[dataset.uid_field, dataset.time_field], ascending=True)
    uids = dataset.inter_feat[dataset.uid_field].numpy()
    position = session_positions(uids)
    rows = np.flatnonzero(position > 0)  # every row but a session's first is a target
    if keep is not None:
        last = np.r_[uids[1:] != uids[:-1], True]
        last_position = np.repeat(position[last], np.diff(np.r_[-1, np.flatnonzero(last)]))
        rows = rows[np.asarray(keep(uids[rows], position[rows], last_position[rows]), dtype=bool)]
    lengths = np.minimum(position[rows], window)
    offsets = np.arange(window)
    filled = torch.as_tensor(offsets[None, :] < lengths[:, None])
    index = torch.as_tensor(np.where(filled.numpy(), (rows - lengths)[:, None] + offsets[None, :], 0))
    columns = {dataset.item_list_length_field: torch.as_tensor(lengths.astype(np.int64))}
    for field in dataset.inter_feat:
        if field == dataset.uid_field:
            continue
        list_field = getattr(dataset, f"{field}_list_field")
        list_len = dataset.field2seqlen[list_field]
        shape = (len(rows), list_len) if isinstance(list_len, int) else (len(rows),) + tuple(list_len)
        if (dataset.field2type[field] in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ)
                and field in dataset.config["numerical_features"]):
            shape += (2,)
        value = dataset.inter_feat[field]
        column = value[index]
        if tuple(column.shape) != shape:  # a field RecBole pads to another width: its own row-by-row copy
            column = torch.zeros(shape, dtype=value.dtype)
            for r, (start, length) in enumerate(zip((rows - lengths).tolist(), lengths.tolist())):
                column[r][:length] = value[start : start + length]
        else:
            column[~filled] = 0
        columns[list_field] = column
    new = dataset.inter_feat[torch.as_tensor(rows)]
    new.update(Interaction(columns))
    dataset.inter_feat = new


def keep_window_rows(train: np.ndarray, evaluated: np.ndarray, window: int):
    """``prefix_rows``'s ``keep`` for ``train_mode: all_positions``: a training session's window end rows (the rows
    ``to_all_positions`` keeps), an evaluated session's last row. ``train`` and ``evaluated``: a flag per session."""
    def keep(uids, positions, last_positions):
        return ((train[uids] & ((last_positions - positions) % window == 0))
                | (evaluated[uids] & (positions == last_positions)))
    return keep


def cloze_copies(config) -> tuple[int, int] | None:
    """(mask-last copies, random-mask copies) of each window per epoch, or None for RecBole's masking."""
    last, random = config["bert_mask_last_copies"], config["bert_random_mask_copies"]
    if last is None and random is None:
        return None
    last, random = int(last or 0), int(random or 0)
    if last < 0 or random < 0 or last + random == 0:
        raise SettingError("bert_mask_last_copies and bert_random_mask_copies count copies of each training window per "
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
    if getattr(dataset, "window_rows_only", False):  # prefix_rows kept only these (keep_window_rows)
        rows = np.arange(len(uids))
    else:
        # the target index of a row is its session position; RecBole's rows of one session have strictly growing
        # lengths until the window is full, then equal lengths: count rows per session instead
        order = np.lexsort((np.arange(len(uids)), uids))
        target_index = np.empty(len(order), dtype=np.int64)
        target_index[order] = session_positions(uids[order]) + 1
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
    # popularity stays that of every training target, not of the window ends
    out.train_item_counter = getattr(dataset, "prefix_item_counter", None) or dataset.item_counter
    return out
