import numpy as np
import pytest
from conftest import build

from recbole_llm.data.protocol import assign_sessions, session_order


def test_session_order_by_last_interaction():
    uids = np.array([1, 1, 2, 2, 3])
    times = np.array([1, 9, 2, 3, 5])
    assert session_order(uids, times).tolist() == [2, 3, 1]


def test_assign_sessions_ratios_and_folds():
    ordered = np.arange(100)
    train, valid, test = assign_sessions(ordered, [0.7, 0.1, 0.2])
    assert (len(train), len(valid), len(test)) == (70, 10, 20)
    assert train.max() < valid.min() and valid.max() < test.min()
    for fold in (1, 2, 3):
        f_train, f_valid, f_test = assign_sessions(ordered, [0.7, 0.1, 0.2], fold=fold)
        assert f_train.max() < f_valid.min(), "a fold must validate on later sessions than it trains on"
        assert f_valid.max() < 80, "folds never touch the test sessions"
        assert np.array_equal(f_valid, f_test)
        assert len(f_train) == 20 * fold
    with pytest.raises(ValueError, match="temporal_fold"):
        assign_sessions(ordered, [0.7, 0.1, 0.2], fold=4)


def _sessions(data):
    ds = data.dataset
    uid = ds.inter_feat[ds.uid_field].numpy()
    return uid, ds.inter_feat[ds.iid_field].numpy(), ds.inter_feat["item_id_list"].numpy(), ds.inter_feat[
        "item_length"
    ].numpy()


def test_session_split_hides_test_sessions_and_targets_last(tiny):
    config, dataset, (train, valid, test), _ = build("SASRec", tiny)
    t_uid, t_iid, t_list, _ = _sessions(train)
    train_items = set(t_iid) | set(t_list[t_list > 0].ravel())
    raw = {}
    for u, i, t in tiny["catalog"]["rows"]:
        raw.setdefault(u, []).append((t, i))
    tokens_u = dataset.field2id_token["user_id"]
    tokens_i = dataset.field2id_token["item_id"]
    for split in (valid, test):
        uid, iid, lists, lengths = _sessions(split)
        assert len(uid) > 0
        assert len(set(uid)) == len(uid), "one evaluated row per session"
        assert not set(uid) & set(t_uid), "an evaluated session leaked into training"
        for u, target, seq, n in zip(uid, iid, lists, lengths):
            history = [i for _, i in sorted(raw[tokens_u[u]])]
            assert tokens_i[target] == history[-1], "the target is the session's last item"
            prompt = [tokens_i[x] for x in seq[:n]]
            expected = [i for i in history[:-1] if dataset.token2id("item_id", i) in train_items]
            assert prompt == expected[-config["MAX_ITEM_LIST_LENGTH"]:], "prompt = earlier items seen in training"
    # test sessions end later than every training session
    t_users, test_users = set(t_uid), set(_sessions(test)[0])
    last = {u: max(t for t, _ in v) for u, v in raw.items()}
    assert max(last[tokens_u[u]] for u in t_users) <= min(last[tokens_u[u]] for u in test_users)


def test_leave_one_out_still_available(tiny):
    split = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}
    _, dataset, (train, valid, test), _ = build("SASRec", tiny, eval_args=split)
    assert len(test.dataset.inter_feat) == dataset.user_num - 1


def test_fold_split_validates_on_a_later_bin(tiny):
    _, _, (train, valid, test), _ = build("SASRec", tiny, temporal_fold=2)
    t_uid = _sessions(train)[0]
    v_uid = _sessions(valid)[0]
    assert len(v_uid) > 0 and set(v_uid) == set(_sessions(test)[0])
    assert not set(v_uid) & set(t_uid)
    train_time = train.dataset.inter_feat["timestamp"].numpy().max()
    valid_last = valid.dataset.inter_feat["timestamp"].numpy()
    assert valid_last.min() >= train_time, "the validation bin is later than everything trained on"
    lists, lengths, targets = (valid.dataset.inter_feat[f].numpy() for f in ("item_id_list", "item_length", "item_id"))
    for seq, n, target in zip(lists, lengths, targets):
        assert len(set(seq[:n])) == n, "every interaction appears once in a fold's sessions"


def test_general_model_evaluates_each_sessions_last_item_whatever_the_file_order(tiny):
    """RecBole's ml-100k lists interactions in no particular order; a general model (Pop) must still be
    scored on one row per session, its last item, like the sequential models."""
    inter = tiny["path"] / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines(keepends=True)
    np.random.default_rng(0).shuffle(rows)
    inter.write_text(header + "".join(rows))
    _, _, (_, _, seq_test), _ = build("SASRec", tiny)
    _, dataset, (_, _, test), _ = build("Pop", tiny)
    feat = test.dataset.inter_feat
    uid, iid = feat[dataset.uid_field].numpy(), feat[dataset.iid_field].numpy()
    assert len(set(uid)) == len(uid) == len(seq_test.dataset.inter_feat), "one evaluated row per session"
    raw = {}
    for u, i, t in tiny["catalog"]["rows"]:
        raw.setdefault(u, []).append((t, i))
    tokens_u, tokens_i = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    for u, target in zip(uid, iid):
        assert tokens_i[target] == max(raw[tokens_u[u]])[1], "the target is the session's last item"
