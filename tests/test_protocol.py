import numpy as np
import torch
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


# --- the paper preset: re-targeting, the early-stopping holdout, same-day order, prompt masking ---------------

from recbole_llm.data.protocol import (  # noqa: E402
    describe_split, evaluated_rows, holdout_sessions, mask_prompt_items, prompt_item_matrix, tie_keys,
)


def _rows_by_session(rows, uids, iids):
    out = {}
    for r in rows:
        out.setdefault(int(uids[r]), []).append(int(iids[r]))
    return out


def test_retarget_removes_unseen_items_everywhere_and_counts_what_changed():
    # items 1-4 seen in training, 9 never; sessions (ordered): u0 = 1 2 9 -> 1 2 (re-targeted to 2),
    # u1 = 9 1 3 -> 1 3 (prompt loses 9), u2 = 1 9 -> 1 (dropped: no prompt left), u3 = 2 4 (unchanged)
    uids = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    iids = np.array([1, 2, 9, 9, 1, 3, 1, 9, 2, 4])
    seen = np.zeros(10, dtype=bool)
    seen[[1, 2, 3, 4]] = True
    rows, report = evaluated_rows(np.arange(10), uids, iids, seen, "retarget")
    assert _rows_by_session(rows, uids, iids) == {0: [1, 2], 1: [1, 3], 3: [2, 4]}
    assert report == {"sessions": 3, "dropped": 1, "unseen_items_removed": 3, "retargeted": 1}
    rows, report = evaluated_rows(np.arange(10), uids, iids, seen, "drop")
    assert _rows_by_session(rows, uids, iids) == {1: [1, 3], 3: [2, 4]}
    assert report["dropped"] == 2 and report["retargeted"] == 0
    rows, report = evaluated_rows(np.arange(10), uids, iids, seen, "keep")
    assert _rows_by_session(rows, uids, iids) == {0: [1, 2, 9], 1: [1, 3], 2: [1, 9], 3: [2, 4]}
    with pytest.raises(ValueError, match="session_unseen_targets"):
        evaluated_rows(np.arange(10), uids, iids, seen, "ignore")


def test_holdout_is_a_seeded_uniform_sample_of_at_most_ten_percent():
    train = np.arange(100, 300)
    held = holdout_sessions(train, 500, seed=3)
    assert len(held) == 20, "min(500, ceil(10% of 200))"
    assert set(held) <= set(train) and np.array_equal(held, np.sort(held))
    assert np.array_equal(held, holdout_sessions(train, 500, seed=3))
    assert not np.array_equal(held, holdout_sessions(train, 500, seed=4))
    assert len(holdout_sessions(np.arange(10_000), 500, seed=0)) == 500
    assert held.max() > 250 and held.min() < 150, "drawn from the whole training period, not its end"


def test_tie_keys_file_order_or_a_seeded_shuffle():
    assert tie_keys(5, "file", 0).tolist() == [0, 1, 2, 3, 4]
    shuffled = tie_keys(50, "shuffle", 7)
    assert sorted(shuffled.tolist()) == list(range(50)) and shuffled.tolist() != list(range(50))
    assert np.array_equal(shuffled, tie_keys(50, "shuffle", 7))
    with pytest.raises(ValueError, match="session_tie_order"):
        tie_keys(5, "random", 0)


def test_prompt_masking_hides_each_sessions_prompt_items():
    uids = np.array([0, 0, 0, 1, 1])
    iids = np.array([3, 1, 2, 4, 1])
    matrix = prompt_item_matrix(np.arange(5), uids, iids, n_users=2, n_items=5)
    assert matrix.toarray().tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], "prompts: {3, 1} and {4}; targets 2, 1"
    scores = torch.zeros(2, 5)
    mask_prompt_items(scores, torch.tensor([1, 0]), matrix)
    assert torch.isinf(scores).tolist() == [[False, False, False, False, True], [False, True, False, True, False]]


def _tied_dataset(tiny):
    """Every session's last two items share a timestamp: which one is the target is the tie order's choice."""
    inter = tiny["path"] / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines(keepends=True)
    by_user = {}
    for row in rows:
        by_user.setdefault(row.split("\t")[0], []).append(row)
    out = []
    for user_rows in by_user.values():
        last_time = user_rows[-1].split("\t")[2]
        out += user_rows[:-2] + [r.rsplit("\t", 1)[0] + "\t" + last_time for r in user_rows[-2:]]
    inter.write_text(header + "".join(out))
    return {u: [r.split("\t")[1] for r in user_rows[-2:]] for u, user_rows in by_user.items()}


def _targets(dataset, test):
    feat = test.dataset.inter_feat
    users = [dataset.id2token("user_id", u) for u in feat["user_id"].numpy()]
    return dict(zip(users, [dataset.id2token("item_id", i) for i in feat["item_id"].numpy()]))


def test_same_day_order_is_explicit_and_shared_by_all_models(tiny):
    last_two = _tied_dataset(tiny)
    keep = {"session_unseen_targets": "keep"}
    _, dataset, (_, _, test), _ = build("SASRec", tiny, **keep)
    targets = _targets(dataset, test)
    assert all(targets[u] == last_two[u][1] for u in targets), "file order: the file's last row is the target"
    runs = [build(m, tiny, session_tie_order="shuffle", data_seed=5, seed=s, **keep)
            for m, s in (("SASRec", 1), ("Pop", 2))]
    shuffled = [_targets(d, t) for _, d, (_, _, t), _ in runs]
    assert shuffled[0] == shuffled[1], "the data seed, not the model's seed, decides: pairs stay paired"
    assert any(shuffled[0][u] != targets[u] for u in targets), "a shuffle moves some targets"
    _, d7, (_, _, t7), _ = build("SASRec", tiny, session_tie_order="shuffle", data_seed=6, **keep)
    assert _targets(d7, t7) != shuffled[0]


HOLDOUT = {"eval_args": {"split": {"SESSION": [0.8, 0.0, 0.2]}, "order": "TO", "group_by": "user", "mode": "full"},
           "session_valid_holdout": 500, "session_unseen_targets": "retarget"}


def test_paper_preset_holds_out_random_training_sessions_for_early_stopping(tiny):
    _, dataset, (train, valid, test), _ = build("SASRec", tiny, **HOLDOUT)
    report = dataset.session_split_report
    t_uid, v_uid, e_uid = (set(_sessions(x)[0]) for x in (train, valid, test))
    assert len(v_uid) == report["valid_sessions"] == 5, "min(500, ceil(10% of 48 training sessions))"
    assert not v_uid & t_uid, "a trained model never sees its early-stopping sessions"
    assert report["train_sessions"] == len(t_uid) == 43
    last = {}
    for u, _, t in tiny["catalog"]["rows"]:
        last[u] = max(last.get(u, 0), t)
    tokens = dataset.field2id_token["user_id"]
    assert max(last[tokens[u]] for u in v_uid) < min(last[tokens[u]] for u in e_uid), "held out of training time"
    line = describe_split(report)
    assert "preset: paper" in line and "5 (5 random training sessions" in line and "re-targeted" in line
    # models fitted in one pass keep every training session, as the original
    _, _, (k_train, k_valid, _), _ = build("SKNN", tiny, **HOLDOUT)
    assert set(_sessions(k_valid)[0]) == v_uid and v_uid <= set(_sessions(k_train)[0])
    _, pop_data, (p_train, _, _), _ = build("Pop", tiny, **HOLDOUT)
    assert len(set(p_train.dataset.inter_feat["user_id"].numpy())) == 48


def test_a_fine_tuned_llm_never_sees_its_validation_sessions(tiny):
    """LLMSeqPrompt chooses its settings (prompt_rank_prior) on the validation holdout: fine-tuned, it is a trained
    model and the holdout stays out of its training sessions; with the base model it is fitted in one pass."""
    from recbole.data import create_dataset

    from recbole_llm.registry import fits_in_one_pass

    from conftest import make_config

    for finetune in (True, False):
        config = make_config("LLMSeqPrompt", tiny, llm_provider="openai", llm_dry_run=True, prompt_finetune=finetune,
                             **HOLDOUT)
        assert fits_in_one_pass(config) is not finetune
        train, valid, _ = create_dataset(config).build()
        seen = set(train.inter_feat["user_id"].numpy()) & set(valid.inter_feat["user_id"].numpy())
        assert bool(seen) is not finetune


def test_no_validation_sessions_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="session_valid_holdout"):
        build("SASRec", tiny, **{**HOLDOUT, "session_valid_holdout": 0})


def _evaluated_scores(model_name, tiny, **overrides):
    """Scores the trainer ranks for every test session, after its own masking."""
    from recbole_llm.registry import get_trainer

    config, dataset, (train, _, test), model = build(model_name, tiny, **overrides)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train)
    trainer._train_epoch(train, 0)  # Pop counts in its one pass
    captured = []
    original = trainer._full_sort_batch_eval

    def capture(batch):
        out = original(batch)
        captured.append((out[0][config["USER_ID_FIELD"]].clone(), out[1].clone()))
        return out

    trainer._full_sort_batch_eval = capture
    trainer.tot_item_num = dataset.item_num
    result = trainer.evaluate(test, load_best_model=False)
    users = torch.cat([u for u, _ in captured])
    scores = torch.cat([s for _, s in captured])
    return dataset, test, users, scores, result


@pytest.mark.parametrize("model_name", ["SASRec", "Pop"])
def test_recboles_own_models_never_recommend_prompt_items(tiny, model_name):
    dataset, test, users, scores, _ = _evaluated_scores(model_name, tiny, epochs=1)
    prompts = test._dataset.session_prompt_items
    assert prompts.nnz > 0
    for user, row in zip(users.tolist(), scores):
        prompt = prompts[user].indices
        assert len(prompt) and torch.isinf(row[prompt]).all(), "every prompt item is masked"
    _, _, _, unmasked, _ = _evaluated_scores(model_name, tiny, epochs=1, exclude_session_items=False)
    assert torch.isfinite(unmasked[:, 1:]).all(), "exclude_session_items: False leaves them"


def test_metric_popularity_counts_all_interactions_or_training_only(tiny):
    from collections import Counter

    all_counts = Counter()
    config, dataset, (train, _, _), _ = build("Pop", tiny)
    for _, item, _ in tiny["catalog"]["rows"]:
        all_counts[dataset.token2id("item_id", item)] += 1
    from recbole.evaluator import Collector

    for mode, expected in (("all", all_counts), ("train", train._dataset.item_counter)):
        config["metric_popularity"] = mode
        collector = Collector(config)
        collector.data_collect(train)
        assert dict(collector.data_struct.get("data.count_items")) == dict(expected)
    assert sum(all_counts.values()) > sum(train._dataset.item_counter.values())
