"""The paper's temporal session protocol as a RecBole split mode.

``eval_args: {split: {SESSION: [0.72, 0.08, 0.2]}, order: TO}`` orders sessions
(users) by the time of their last interaction and assigns the oldest share to
training, the next to validation and the newest to test. Validation and test
sessions are hidden from training entirely; in each of them all items but the
last form the prompt and the last is the target. Items never seen in training
are removed from prompts; sessions whose prompt is then empty are dropped, and
so are sessions whose target was never seen in training
(``session_unseen_targets: drop``, the default: no model can rank an item it
never saw) unless ``session_unseen_targets: keep`` counts them as misses.

``temporal_fold: k`` (1..3) replaces validation/test by the paper's forward
chaining folds for tuning: the training sessions are cut into 4 bins by end time,
fold k trains on bins 1..k and validates on bin k+1; the test sessions are not
touched (the "test" split of a fold is its validation split).

``max_test_sessions: N`` evaluates a seeded sample of N validation and N test
sessions (for models whose predictions are expensive, such as LLM generation).

RecBole's trainer and evaluator do the rest; ``LS`` (leave-one-out) and the other
RecBole modes are untouched.
"""
from __future__ import annotations

import numpy as np
import torch

SPLIT_KEY = "SESSION"
N_FOLD_BINS = 4


def session_order(uids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Session (user) ids sorted by the time of their last interaction, ties by id."""
    order = np.lexsort((times, uids))
    uids_sorted = uids[order]
    is_last = np.r_[uids_sorted[1:] != uids_sorted[:-1], True]
    last_uid, last_time = uids_sorted[is_last], times[order][is_last]
    return last_uid[np.lexsort((last_uid, last_time))]


def assign_sessions(ordered_uids: np.ndarray, ratios, fold: int | None = None) -> list[np.ndarray]:
    """Split time-ordered sessions into [train, valid, test] session id arrays."""
    ratios = np.asarray(ratios, dtype=float)
    if ratios.shape != (3,) or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"SESSION split needs three ratios [train, valid, test], got {ratios.tolist()}")
    ratios = ratios / ratios.sum()
    n = len(ordered_uids)
    n_test = int(round(n * ratios[2]))
    n_valid = int(round(n * ratios[1]))
    n_train = n - n_valid - n_test
    if fold is None:
        return [
            ordered_uids[:n_train],
            ordered_uids[n_train : n_train + n_valid],
            ordered_uids[n_train + n_valid :],
        ]
    if not 1 <= fold <= N_FOLD_BINS - 1:
        raise ValueError(f"temporal_fold must be 1..{N_FOLD_BINS - 1}, got {fold}")
    history = ordered_uids[: n - n_test]
    bins = np.array_split(history, N_FOLD_BINS)
    train = np.concatenate(bins[:fold])
    return [train, bins[fold], bins[fold]]


def _by_user_then_time(rows: np.ndarray, uids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``rows`` ordered by (user, time), ties in row order: each session's rows in sequence, its target last."""
    return rows[np.lexsort((rows, times[rows], uids[rows]))]


def _split_indices(dataset) -> tuple[list[np.ndarray], dict]:
    """Interaction indices of train sessions, and of the kept valid/test sessions
    with unseen prompt items removed. Returns indices and a small report."""
    config = dataset.config
    uid_field, iid_field, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
    if time_field is None or time_field not in dataset.inter_feat:
        raise ValueError("The SESSION split needs a timestamp column; add it to load_col.")
    uids = dataset.inter_feat[uid_field].numpy()
    iids = dataset.inter_feat[iid_field].numpy()
    times = dataset.inter_feat[time_field].numpy()
    ratios = config["eval_args"]["split"][SPLIT_KEY]
    fold = config["temporal_fold"] or None
    groups = assign_sessions(session_order(uids, times), ratios, fold)
    train_mask = np.isin(uids, groups[0])
    seen = np.zeros(dataset.item_num, dtype=bool)
    seen[iids[train_mask]] = True

    order = _by_user_then_time(np.arange(len(uids)), uids, times)
    result, report = [np.flatnonzero(train_mask)], {"train_sessions": len(groups[0])}
    for name, group in zip(("valid", "test"), groups[1:]):
        rows = order[np.isin(uids[order], group)]
        row_uids = uids[rows]
        is_target = np.r_[row_uids[1:] != row_uids[:-1], True] if len(rows) else np.zeros(0, bool)
        target_uid = row_uids[is_target]
        target_seen = dict(zip(target_uid, seen[iids[rows[is_target]]]))
        keep = is_target | seen[iids[rows]]
        if config["session_unseen_targets"] != "keep":
            keep &= np.array([target_seen[u] for u in row_uids], dtype=bool)
        rows, row_uids = rows[keep], row_uids[keep]
        counts = dict(zip(*np.unique(row_uids, return_counts=True)))
        rows = rows[np.array([counts[u] >= 2 for u in row_uids], dtype=bool)]
        result.append(rows)
        report[f"{name}_sessions"] = len(np.unique(uids[rows]))
        report[f"{name}_dropped"] = len(group) - report[f"{name}_sessions"]
    return result, report


def _last_row_per_user(uids: np.ndarray) -> np.ndarray:
    """Indices of each user's last row, for rows already sorted by (user, time)."""
    return np.flatnonzero(np.r_[uids[1:] != uids[:-1], True]) if len(uids) else np.zeros(0, int)


def session_split(dataset) -> list:
    """Build [train, valid, test] datasets for a Dataset or SequentialDataset."""
    from recbole.data.dataset import Dataset, SequentialDataset

    if dataset.benchmark_filename_list is not None:
        raise ValueError("The SESSION split cannot be combined with benchmark_filename.")
    Dataset._change_feat_format(dataset)  # format only; augmentation comes after the split
    (train_idx, valid_idx, test_idx), report = _split_indices(dataset)
    all_uids = dataset.inter_feat[dataset.uid_field].numpy()
    dataset.logger.info(f"SESSION split: {report}")
    dataset.session_split_report = report
    kept = np.unique(np.concatenate([train_idx, valid_idx, test_idx]))  # a fold's valid and test are one bin
    # a general model's dataset keeps the file's row order, and each session's target must be its last row
    kept = _by_user_then_time(kept, all_uids, dataset.inter_feat[dataset.time_field].numpy())
    dataset.inter_feat = dataset.inter_feat[torch.as_tensor(kept)]
    part_of_user = np.zeros(dataset.user_num, dtype=np.int64)
    for part, rows in ((1, valid_idx), (2, test_idx)):
        part_of_user[np.unique(all_uids[rows])] = part
    if isinstance(dataset, SequentialDataset):
        dataset.data_augmentation()  # sorts by (user, time): one row per prefix -> next item
    uids = dataset.inter_feat[dataset.uid_field].numpy()
    part = part_of_user[uids]
    train_rows = np.flatnonzero(part == 0)
    evaluated = [np.flatnonzero(part == p) for p in (1, 2)]
    evaluated = [rows[_last_row_per_user(uids[rows])] for rows in evaluated]
    if dataset.config["temporal_fold"]:  # a fold validates and "tests" on the same later bin
        evaluated[0] = evaluated[1]
    cap = dataset.config["max_test_sessions"]
    if cap:  # expensive models (LLM generation): a seeded sample of the evaluated sessions
        rng = np.random.default_rng(dataset.config["seed"])
        evaluated = [np.sort(rng.choice(rows, min(int(cap), len(rows)), replace=False)) for rows in evaluated]
    dataset._drop_unused_col()
    return [dataset.copy(dataset.inter_feat[torch.as_tensor(rows)]) for rows in [train_rows, *evaluated]]


def install() -> None:
    """Teach ``Dataset.build`` the SESSION split mode (both dataset classes)."""
    from recbole.data.dataset import Dataset, SequentialDataset

    if getattr(Dataset.build, "_recbole_llm", False):
        return
    for cls in (Dataset, SequentialDataset):
        original = cls.build

        def build(self, _original=original):
            split = self.config["eval_args"]["split"]
            if isinstance(split, dict) and SPLIT_KEY in split:
                if self.config["eval_args"]["order"] != "TO":
                    raise ValueError("The SESSION split needs eval_args.order: TO.")
                return session_split(self)
            return _original(self)

        build._recbole_llm = True
        cls.build = build
