"""The paper's temporal session protocol as a RecBole split mode.

``eval_args: {split: {SESSION: [train, valid, test]}, order: TO}`` orders
sessions (users) by the time of their last interaction; the newest ``test``
share are test sessions, hidden from training. Validation is either

- ``valid > 0``: the sessions just before the test sessions (a time split), or
- ``valid == 0``: ``session_valid_holdout`` (the paper: 500) random training
  sessions, at most 10% of them, removed from training and used for early
  stopping (the original ``neural_model.py``). Models fitted in one pass (kNN,
  LLMSeqSim, Pop) select nothing on validation; they keep those sessions in
  training, as the original trains them on all training sessions.

In every evaluated session all items but the last form the prompt and the last
is the target. Items never seen in training are handled by
``session_unseen_targets``:

- ``retarget`` (the paper's ``mece_split.py``): unseen items are removed from the
  whole session, so when the target was unseen the last remaining item becomes
  the target; a session left with fewer than 2 items is dropped.
- ``drop``: unseen prompt items are removed; sessions whose target is unseen are dropped.
- ``keep``: unseen prompt items are removed; unseen targets stay (they count as misses).

Timestamps may tie (Beauty has day resolution). ``session_tie_order`` makes the
order inside one timestamp explicit: ``file`` keeps the file's row order,
``shuffle`` a random order drawn from ``data_seed``. ``data_seed`` (also the
seed of the validation holdout) is shared by all models, so runs stay paired.

``exclude_session_items: True`` masks every prompt item at evaluation, for
every model (the paper's ``PRED_SEEN=False``); ``metric_popularity: all``
makes Novelty and Serendipity count popularity over all interactions of the
data set, as the paper does (``train``: training interactions, RecBole's own).

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

import functools
import math
from collections import Counter

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import SettingError
from ..settings import config_value
from .windows import keep_window_rows, session_positions

SPLIT_KEY = "SESSION"
N_FOLD_BINS = 4
UNSEEN_TARGET_MODES = ("retarget", "drop", "keep")
TIE_ORDERS = ("file", "shuffle")
HOLDOUT_MAX_SHARE = 0.1  # the original holds out min(10%, 500) training sessions


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
        raise SettingError(f"SESSION split needs three ratios [train, valid, test], got {ratios.tolist()}")
    ratios = ratios / ratios.sum()
    n = len(ordered_uids)
    n_test = math.ceil(n * ratios[2] - 1e-9)  # the original rounds the test share up (temporal_split.py)
    n_valid = int(round(n * ratios[1]))
    n_train = n - n_valid - n_test
    if fold is None:
        return [
            ordered_uids[:n_train],
            ordered_uids[n_train : n_train + n_valid],
            ordered_uids[n_train + n_valid :],
        ]
    if not 1 <= fold <= N_FOLD_BINS - 1:
        raise SettingError(f"temporal_fold must be 1..{N_FOLD_BINS - 1}, got {fold}")
    history = ordered_uids[: n - n_test]
    bins = np.array_split(history, N_FOLD_BINS)
    train = np.concatenate(bins[:fold])
    return [train, bins[fold], bins[fold]]


def holdout_sessions(train_uids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``min(size, ceil(10% of training))`` training sessions drawn uniformly with ``seed``, sorted."""
    n = min(int(size), math.ceil(HOLDOUT_MAX_SHARE * len(train_uids)))
    if n < 1:
        return np.zeros(0, dtype=train_uids.dtype)
    return np.sort(np.random.default_rng(seed).choice(train_uids, n, replace=False))


def tie_keys(n_rows: int, order: str, seed: int) -> np.ndarray:
    """Rank of each row among rows with the same (session, time): file order or a seeded shuffle."""
    if order not in TIE_ORDERS:
        raise SettingError(f"session_tie_order must be one of {TIE_ORDERS}, got {order!r}")
    if order == "file":
        return np.arange(n_rows)
    return np.random.default_rng(seed).permutation(n_rows)


def by_session_then_time(rows: np.ndarray, uids: np.ndarray, times: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """``rows`` ordered by (session, time, tie key): each session's rows in sequence, its target last."""
    return rows[np.lexsort((ties[rows], times[rows], uids[rows]))]


def evaluated_rows(rows: np.ndarray, uids: np.ndarray, iids: np.ndarray, seen: np.ndarray,
                   mode: str) -> tuple[np.ndarray, dict]:
    """The rows of evaluated sessions (``rows`` ordered by session then time) after
    removing items never seen in training as ``mode`` says; each kept session
    has a prompt of at least one item. Returns the rows and their counts."""
    if mode not in UNSEEN_TARGET_MODES:
        raise SettingError(f"session_unseen_targets must be one of {UNSEEN_TARGET_MODES}, got {mode!r}")
    row_uids = uids[rows]
    is_target = np.r_[row_uids[1:] != row_uids[:-1], True] if len(rows) else np.zeros(0, bool)
    row_seen = seen[iids[rows]]
    unseen_target_uids = set(row_uids[is_target & ~row_seen].tolist())
    if mode == "retarget":
        keep = row_seen
    else:
        keep = is_target | row_seen
        if mode == "drop":
            keep &= ~np.isin(row_uids, list(unseen_target_uids))
    kept, kept_uids = rows[keep], row_uids[keep]
    counts = Counter(kept_uids.tolist())
    enough = np.array([counts[u] >= 2 for u in kept_uids.tolist()], dtype=bool)
    kept, kept_uids = kept[enough], kept_uids[enough]
    sessions = set(kept_uids.tolist())
    report = {
        "sessions": len(sessions),
        "dropped": len(set(row_uids.tolist())) - len(sessions),
        "unseen_items_removed": int((~row_seen).sum() - (~seen[iids[kept]]).sum()),
        "retargeted": len(unseen_target_uids & sessions) if mode == "retarget" else 0,
    }
    return kept, report


def _split_indices(dataset) -> tuple[list[np.ndarray], dict, np.ndarray]:
    """Interaction indices of the training sessions and of the evaluated
    validation/test sessions (unseen items handled), a report of the counts, and
    the tie key of every row."""
    from ..registry import fits_in_one_pass

    config = dataset.config
    uid_field, iid_field, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
    if time_field is None or time_field not in dataset.inter_feat:
        raise SettingError("The SESSION split needs a timestamp column; add it to load_col.")
    uids = dataset.inter_feat[uid_field].numpy()
    iids = dataset.inter_feat[iid_field].numpy()
    times = dataset.inter_feat[time_field].numpy()
    data_seed = int(config_value(config, "data_seed", 0))
    tie_order = config_value(config, "session_tie_order", "file")
    ties = tie_keys(len(uids), tie_order, data_seed)
    ratios = config["eval_args"]["split"][SPLIT_KEY]
    fold = config_value(config, "temporal_fold") or None
    train, valid, test = assign_sessions(session_order(uids, times), ratios, fold)
    report = {"preset": config_value(config, "preset", "custom"), "tie_order": tie_order, "data_seed": data_seed}
    train_for_test = train  # the original removes unseen test items before holding out its validation sessions
    if fold is None and len(valid) == 0:
        holdout = int(config_value(config, "session_valid_holdout", 0))
        if holdout < 1:
            raise SettingError(
                "The SESSION split has no validation sessions: give the valid share a value > 0 "
                "(e.g. SESSION: [0.72, 0.08, 0.2]) or set session_valid_holdout (e.g. 500)."
            )
        valid = holdout_sessions(train, holdout, data_seed)
        report["valid_source"] = f"{len(valid)} random training sessions (session_valid_holdout={holdout})"
        if not fits_in_one_pass(config):
            train = np.setdiff1d(train, valid)
        else:
            report["valid_source"] += ", also in training (a model fitted in one pass selects nothing on them)"
    else:
        report["valid_source"] = "the sessions after training in time" if fold is None else f"temporal fold {fold}"
    mode = config_value(config, "session_unseen_targets", "drop")
    order = by_session_then_time(np.arange(len(uids)), uids, times, ties)
    train_mask = np.isin(uids, train)
    result = [np.flatnonzero(train_mask)]
    report["train_sessions"] = len(train)
    for name, group, reference in (("valid", valid, train), ("test", test, train_for_test)):
        seen = np.zeros(dataset.item_num, dtype=bool)
        seen[iids[np.isin(uids, reference)]] = True
        rows, counts = evaluated_rows(order[np.isin(uids[order], group)], uids, iids, seen, mode)
        result.append(rows)
        report.update({f"{name}_{key}": value for key, value in counts.items()})
    report["unseen_targets"] = mode
    _refuse_empty(result, report, len(np.unique(uids)))
    return result, report, ties


def _refuse_empty(result: list[np.ndarray], report: dict, n_sessions: int) -> None:
    """A split with no sessions would end in torch's 'num_samples=0': say which one and why."""
    if not len(result[0]):
        raise SettingError(f"the SESSION split left no training sessions ({n_sessions} sessions in all): "
                         "give the train share a larger value or use a larger data set")
    for name, rows in (("validation", result[1]), ("test", result[2])):
        key = "valid" if name == "validation" else "test"
        if not len(rows):
            raise SettingError(
                f"the SESSION split left no {name} sessions: {report.get(key + '_dropped', 0)} were dropped "
                f"(each needs at least 2 items seen in training; session_unseen_targets={report['unseen_targets']}) "
                f"of {n_sessions} sessions in all; use a larger data set or a larger {name} share"
            )


def _warn_if_scored_by_user_id(dataset) -> None:
    """A model that scores a user id (BPR, LightGCN, ...) meets only unseen users among the SESSION split's
    evaluated sessions: it ranks them with untrained user embeddings, which looks like a result but is not."""
    from recbole.utils import ModelType

    from ..registry import fits_in_one_pass

    config = dataset.config
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL and not fits_in_one_pass(config):
        dataset.logger.warning(
            f"{config['model']} scores a session by its user id, but every validation and test session of the "
            "SESSION split is a user it never trained on, so it ranks them with untrained user embeddings. "
            "Use a sequential model (it reads the session's items), or --recbole_defaults for a leave-one-out split."
        )


def describe_split(report: dict) -> str:
    """One log line with the counts a reader needs to compare protocols."""
    return (
        f"preset: {report['preset']}. SESSION split: {report['train_sessions']:,} training sessions; validation: {report['valid_sessions']:,} "
        f"({report['valid_source']}); test: {report['test_sessions']:,} evaluated sessions, "
        f"{report['test_retargeted']:,} re-targeted, {report['test_dropped']:,} dropped, "
        f"{report['test_unseen_items_removed']:,} unseen interactions removed (session_unseen_targets="
        f"{report['unseen_targets']}); same-day order: {report['tie_order']} (data_seed={report['data_seed']})"
    )


def _last_row_per_user(uids: np.ndarray) -> np.ndarray:
    """Indices of each user's last row, for rows already sorted by (user, time)."""
    return np.flatnonzero(np.r_[uids[1:] != uids[:-1], True]) if len(uids) else np.zeros(0, int)


def _sessions_of(uids: np.ndarray, iids: np.ndarray) -> list[np.ndarray]:
    """Every session's items (any order), from all interactions loaded."""
    order = np.argsort(uids, kind="stable")
    cuts = np.flatnonzero(np.diff(uids[order])) + 1
    return np.split(iids[order], cuts)


def prompt_item_matrix(rows: np.ndarray, uids: np.ndarray, iids: np.ndarray, n_users: int,
                       n_items: int) -> sp.csr_matrix:
    """(n_users, n_items) indicator of each evaluated session's prompt items (all its rows but the last)."""
    row_uids = uids[rows]
    prompt = np.r_[row_uids[1:] == row_uids[:-1], False] if len(rows) else np.zeros(0, bool)
    users, items = row_uids[prompt], iids[rows][prompt]
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    return matrix


def session_split(dataset) -> list:
    """Build [train, valid, test] datasets for a Dataset or SequentialDataset."""
    from recbole.data.dataset import Dataset, SequentialDataset

    if dataset.benchmark_filename_list is not None:
        raise SettingError("The SESSION split cannot be combined with benchmark_filename.")
    Dataset._change_feat_format(dataset)  # format only; augmentation comes after the split
    all_uids = dataset.inter_feat[dataset.uid_field].numpy()
    all_iids = dataset.inter_feat[dataset.iid_field].numpy()
    all_times = dataset.inter_feat[dataset.time_field].numpy()
    item_counter_all = Counter(all_iids.tolist())
    (train_idx, valid_idx, test_idx), report, ties = _split_indices(dataset)
    dataset.logger.info(describe_split(report))
    _warn_if_scored_by_user_id(dataset)
    dataset.session_split_report = report
    prompts = [prompt_item_matrix(rows, all_uids, all_iids, dataset.user_num, dataset.item_num)
               for rows in (valid_idx, test_idx)]
    kept = np.unique(np.concatenate([train_idx, valid_idx, test_idx]))  # a fold's valid and test are one bin
    # a general model's dataset keeps the file's row order, and each session's target must be its last row;
    # RecBole's own sort (data_augmentation) is stable, so the tie order set here is the order it keeps
    kept = by_session_then_time(kept, all_uids, all_times, ties)
    dataset.inter_feat = dataset.inter_feat[torch.as_tensor(kept)]
    member = np.zeros((3, dataset.user_num), dtype=bool)  # train / valid / test membership of each session
    for part, rows in enumerate((train_idx, valid_idx, test_idx)):
        member[part, np.unique(all_uids[rows])] = True
    window = window_rows_width(dataset)  # None unless a sequential dataset becomes window rows
    if isinstance(dataset, SequentialDataset):
        # RecBole's augmentation (sorts by (user, time), stable: one row per prefix -> next item); under
        # all_positions only the rows with_train_mode and the evaluation keep
        if window:
            uids_before = dataset.inter_feat[dataset.uid_field].numpy()
            targets = member[0, uids_before] & (session_positions(uids_before) > 0)  # training prefix rows
            prefix_item_counter = Counter(dataset.inter_feat[dataset.iid_field].numpy()[targets])
            prefix_rows_count = int(targets.sum())
            dataset.data_augmentation(keep=keep_window_rows(member[0], member[1] | member[2], window))
        else:
            dataset.data_augmentation()
    uids = dataset.inter_feat[dataset.uid_field].numpy()
    train_rows = np.flatnonzero(member[0, uids])
    evaluated = [np.flatnonzero(member[p, uids]) for p in (1, 2)]
    evaluated = [rows[_last_row_per_user(uids[rows])] for rows in evaluated]
    if config_value(dataset.config, "temporal_fold"):  # a fold validates and "tests" on the same later bin
        evaluated[0] = evaluated[1]
        prompts[0] = prompts[1]
    cap = config_value(dataset.config, "max_test_sessions")
    if cap:  # expensive models (LLM generation): a seeded sample of the evaluated sessions
        rng = np.random.default_rng(dataset.config["seed"])
        evaluated = [np.sort(rng.choice(rows, min(int(cap), len(rows)), replace=False)) for rows in evaluated]
    dataset._drop_unused_col()
    splits = [dataset.copy(dataset.inter_feat[torch.as_tensor(rows)]) for rows in [train_rows, *evaluated]]
    splits[0].item_counter_all = item_counter_all
    if window:
        splits[0].prefix_item_counter, splits[0].prefix_rows_count = prefix_item_counter, prefix_rows_count
        splits[0].window_rows_only = True  # to_all_positions: these are the windows already
    splits[0].all_sessions = _sessions_of(all_uids, all_iids)  # analysis only (hybrid_popularity_source: all)
    for split, matrix in zip(splits[1:], prompts):
        split.session_prompt_items = matrix
    return splits


def mask_prompt_items(scores: torch.Tensor, users: torch.Tensor, prompts: sp.csr_matrix) -> torch.Tensor:
    """Set the score of every prompt item of each row's session to -inf (in place)."""
    block = prompts[users.cpu().numpy()].tocoo()
    if block.nnz:
        rows = torch.as_tensor(block.row, dtype=torch.long, device=scores.device)
        cols = torch.as_tensor(block.col, dtype=torch.long, device=scores.device)
        scores[rows, cols] = -torch.inf
    return scores


def evaluate_with_prompt_mask(original):
    """RecBole masks a user's training history at evaluation; under the SESSION
    split an evaluated session has none, and the paper masks the prompt's items
    instead (``PRED_SEEN=False``). With ``exclude_session_items`` every model,
    RecBole's included, gets that mask; other splits are untouched. ``evaluate``
    finds the evaluated split's prompts, ``_full_sort_batch_eval`` applies them."""

    @functools.wraps(original)
    def evaluate(self, eval_data, *args, **kwargs):
        prompts = getattr(getattr(eval_data, "_dataset", None), "session_prompt_items", None)
        self._session_prompts = prompts if config_value(self.config, "exclude_session_items", False) else None
        try:
            return original(self, eval_data, *args, **kwargs)
        finally:
            self._session_prompts = None

    return evaluate


def batch_eval_with_prompt_mask(original):
    """See ``evaluate_with_prompt_mask``."""

    @functools.wraps(original)
    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = original(self, batched_data)
        prompts = getattr(self, "_session_prompts", None)
        if prompts is not None:
            mask_prompt_items(scores, interaction[self.config["USER_ID_FIELD"]], prompts)
        return interaction, scores, positive_u, positive_i

    return _full_sort_batch_eval


def collect_metric_popularity(original):
    """``metric_popularity: all``: Novelty/Serendipity (and RecBole's popularity
    metrics) read item counts over all interactions of the data set, as the
    paper's evaluation does; ``train`` keeps RecBole's training counts."""

    @functools.wraps(original)
    def data_collect(self, train_data):
        original(self, train_data)
        dataset = getattr(train_data, "_dataset", None)
        if self.register.need("data.count_items"):
            if config_value(self.config, "metric_popularity", "train") == "all" and hasattr(dataset, "item_counter_all"):
                self.data_struct.set("data.count_items", dataset.item_counter_all)
            elif hasattr(dataset, "train_item_counter"):  # all-position rows: the counts of every training target
                self.data_struct.set("data.count_items", dataset.train_item_counter)

    return data_collect


def window_rows_width(dataset) -> int | None:
    """The window width when the training split becomes window rows (``train_mode: all_positions`` for a model
    that reads them) and no popularity sampler reads the built dataset's rows, else None."""
    from recbole.data.dataset import SequentialDataset

    from ..registry import get_model

    if (config_value(dataset.config, "train_mode", "prefixes") != "all_positions"
            or not isinstance(dataset, SequentialDataset)
            or not getattr(get_model(dataset.config["model"]), "reads_window_rows", False)):
        return None
    # RecBole's popularity samplers count the items of the whole built dataset's rows: keep every prefix row for them
    if any((dataset.config[f"{phase}_neg_sample_args"] or {}).get("distribution") == "popularity"
           for phase in ("train", "valid", "test")):
        return None
    return int(dataset.config["MAX_ITEM_LIST_LENGTH"])


def with_train_mode(dataset, datasets: list) -> list:
    """``train_mode: all_positions``: the training split as one row per session window
    (see recbole_llm/data/windows.py); ``prefixes`` (default): RecBole's rows."""
    from recbole.data.dataset import SequentialDataset

    from ..registry import get_model
    from .windows import TRAIN_MODES, cloze_copies, to_all_positions

    mode = config_value(dataset.config, "train_mode", "prefixes")
    if mode not in TRAIN_MODES:
        raise SettingError(f"train_mode must be one of {', '.join(TRAIN_MODES)}; got {mode!r}")
    if mode == "all_positions" and not getattr(get_model(dataset.config["model"]), "reads_window_rows", False):
        raise SettingError(
            f"train_mode: all_positions serves PaperSASRec, PaperGRU4Rec, PaperBERT4Rec and their LLM2 versions; "
            f"{dataset.config['model']} reads RecBole's prefix rows (a kNN model or another loss would silently see "
            "only the window ends): set train_mode: prefixes, or use the Paper model (PaperSASRec for SASRec)"
        )
    cloze = config_value(dataset.config, "transform") == "mask_itemseq"
    copies = cloze_copies(dataset.config)
    if copies and not (mode == "all_positions" and cloze):
        raise SettingError("bert_mask_last_copies / bert_random_mask_copies copy the window rows of "
                         "train_mode: all_positions for a cloze model (BERT4Rec, LLM2BERT4Rec): set train_mode: "
                         "all_positions, or remove them")
    if mode == "all_positions" and isinstance(dataset, SequentialDataset):
        before = getattr(datasets[0], "prefix_rows_count", len(datasets[0].inter_feat))
        datasets[0] = to_all_positions(datasets[0], cloze=cloze, copies=copies)
        copied = f", {copies[0]} mask-last + {copies[1]} random-mask copies of each" if copies else ""
        dataset.logger.info(f"train_mode all_positions: {before:,} prefix rows -> {len(datasets[0].inter_feat):,} "
                            f"window rows ({'cloze' if cloze else 'causal'}{copied})")
    return datasets
