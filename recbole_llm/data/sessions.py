"""What a training split says about its sessions: their item sequences and how popular each item is."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SettingError


def training_sessions(dataset) -> tuple[list[np.ndarray], np.ndarray]:
    """Full item sequences of the sessions in a (training) SequentialDataset, and
    each session's last timestamp. Rebuilt from RecBole's augmented rows: the
    row with length 1 holds the first item, every row's target the next one."""
    inter = dataset.inter_feat
    uid = inter[dataset.uid_field].numpy()
    target = inter[dataset.iid_field].numpy()
    first = inter[dataset.item_id_list_field].numpy()[:, 0]
    length = inter[dataset.item_list_length_field].numpy()
    time = inter[dataset.time_field].numpy() if dataset.time_field in inter else np.arange(len(uid), dtype=float)
    order = np.lexsort((length, uid))
    uid, target, first, length, time = uid[order], target[order], first[order], length[order], time[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    sessions, ends = [], []
    for start, stop in zip(starts, np.r_[starts[1:], len(uid)]):
        head = [first[start]] if length[start] == 1 else []
        sessions.append(np.array(head + target[start:stop].tolist(), dtype=np.int64))
        ends.append(time[stop - 1])
    return sessions, np.asarray(ends, dtype=np.float64)


def item_popularity(dataset, n_items: int, source: str = "train") -> torch.Tensor:
    """Share of sessions holding each item id, padding 0. ``source``: ``train`` (the
    training sessions) or ``all`` (every session of the data set, test sessions
    included, as the paper's code computes it: that lets the test sessions decide
    which items are "popular", so it is an analysis option, not a protocol)."""
    if source == "all":
        sessions = getattr(dataset, "all_sessions", None)
        if sessions is None:
            raise SettingError("hybrid_popularity_source: all needs the SESSION split (it keeps every session's items)")
    elif source == "train":
        sessions, _ = training_sessions(dataset)
    else:
        raise SettingError(f"hybrid_popularity_source must be train or all; got {source!r}")
    pop = torch.zeros(n_items, dtype=torch.float64)
    if sessions:
        held = np.concatenate([np.unique(s) for s in sessions])
        pop += torch.as_tensor(np.bincount(held, minlength=n_items)[:n_items], dtype=torch.float64) / len(sessions)
    pop[0] = 0
    return pop.float()
