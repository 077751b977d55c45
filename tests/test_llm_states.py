"""The frozen-LLM state store: computed once, resumable, filled by two processes side by side, precision chosen by
what the CPU supports."""
import multiprocessing

import numpy as np
import pytest
import torch
from conftest import build

from recbole_llm.llm import precision as states
from recbole_llm.llm.precision import resolve_precision
from recbole_llm.llm.states import LLMStateStore, parse_shard

PROMPTS = [f"prompt number {i} " + "word " * (i % 7) for i in range(40)]


def fake_state(prompt: str) -> np.ndarray:
    return np.full(4, float(len(prompt)), dtype=np.float32)


def compute(chunk):
    return torch.from_numpy(np.stack([fake_state(p) for p in chunk]))


def lengths(chunk):
    return [len(p) for p in chunk]


def test_fill_computes_each_missing_prompt_once_and_a_rerun_nothing(tmp_path):
    store = LLMStateStore("llm-a|fp32", tmp_path / "s.sqlite")
    seen = []
    assert store.fill(PROMPTS + PROMPTS[:5], lambda c: seen.extend(c) or compute(c), lengths, batch_size=8) == 40
    assert sorted(seen) == sorted(PROMPTS)
    assert store.fill(PROMPTS, lambda c: pytest.fail("recomputed"), lengths, batch_size=8) == 0
    assert torch.equal(store.tensor(PROMPTS[:3]), compute(PROMPTS[:3]))
    other = LLMStateStore("llm-a|bf16", tmp_path / "s.sqlite")
    assert other.missing(PROMPTS) == PROMPTS, "another precision (or LLM) never answers for this one"


def test_a_killed_fill_resumes_without_recomputing_what_was_stored(tmp_path):
    store = LLMStateStore("llm-a|fp32", tmp_path / "s.sqlite")
    calls = []

    def dies_on_third_batch(chunk):
        calls.append(list(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compute(chunk)

    with pytest.raises(KeyboardInterrupt):
        store.fill(PROMPTS, dies_on_third_batch, lengths, batch_size=8)
    done = {p for chunk in calls[:2] for p in chunk}
    again = []
    store.fill(PROMPTS, lambda c: again.extend(c) or compute(c), lengths, batch_size=8)
    assert set(again) == set(PROMPTS) - done and len(again) == len(PROMPTS) - 16


def test_non_finite_states_are_never_stored(tmp_path):
    store = LLMStateStore("llm-a|fp32", tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError, match="non-finite"):
        store.fill(PROMPTS[:4], lambda c: torch.full((len(c), 4), float("nan")), lengths, batch_size=8)
    assert store.missing(PROMPTS[:4]) == PROMPTS[:4]


def _fill_shard(path, shard, log):
    store = LLMStateStore("llm-a|fp32", path)
    done = store.fill(PROMPTS, compute, lengths, batch_size=4, shard=parse_shard(shard))
    with open(log, "a") as f:
        f.write(f"{shard} {done}\n")


def test_two_processes_fill_disjoint_shards_of_one_store(tmp_path):
    path, log = tmp_path / "s.sqlite", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fill_shard, args=(path, s, log)) for s in ("1/2", "2/2")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    counts = dict(line.split() for line in log.read_text().splitlines())
    assert int(counts["1/2"]) + int(counts["2/2"]) == len(PROMPTS), "every prompt computed by exactly one process"
    assert int(counts["1/2"]) > 0 and int(counts["2/2"]) > 0
    store = LLMStateStore("llm-a|fp32", path)
    assert store.missing(PROMPTS) == []
    assert torch.equal(store.tensor(PROMPTS), compute(PROMPTS))


def test_shard_and_precision_settings_are_checked(monkeypatch):
    assert parse_shard("2/3") == (1, 3) and parse_shard([1, 2]) == (0, 2)
    for bad in ("0/2", "3/2", "half"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    monkeypatch.setattr(states, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="AVX-512 BF16"):
        resolve_precision("bf16")
    with pytest.raises(ValueError, match="llm_state_precision"):
        resolve_precision("fp8")
    monkeypatch.setattr(states, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16" and resolve_precision("int8") == "int8"


@pytest.mark.skipif(not states.cpu_has_native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_and_int8_states_agree_with_fp32(tiny_llm):
    from recbole_llm.model.llmsrec import load_frozen_llm

    prompts = ["A user interacted with, in this order: 1. Matte Red Lipstick; 2. Argan Oil Shampoo. The user is"]
    runs = {}
    for precision in ("fp32", "bf16", "int8"):
        tokenizer, llm, _ = load_frozen_llm(str(tiny_llm), precision)
        encoded = tokenizer(prompts * 3, return_tensors="pt", padding=True)
        with torch.no_grad(), states.precision_context(precision):
            runs[precision] = llm.model(**encoded).last_hidden_state[:, -1].float()
    for precision in ("bf16", "int8"):
        cosine = torch.nn.functional.cosine_similarity(runs[precision], runs["fp32"]).min()
        assert cosine > 0.95, (precision, cosine)
    assert not torch.equal(runs["bf16"], runs["fp32"]), "bf16 really ran in bf16"


def test_training_rows_are_one_per_session_its_newest(tiny, tmp_path, tiny_llm):
    from recbole_llm.model.llmsrec import training_sample

    config, _, (train, _, _), _ = build("LLMSRec", tiny, llm_model=str(tiny_llm), llm_state_precision="fp32",
                                        checkpoint_dir=str(tmp_path / "saved"), llmsrec_teacher_epochs=1)
    inter = train._dataset.inter_feat
    sample = training_sample(config, train)._dataset.inter_feat
    users = inter["user_id"].tolist()
    assert sorted(sample["user_id"].tolist()) == sorted(set(users))
    for user, length, target in zip(sample["user_id"].tolist(), sample["item_length"].tolist(),
                                     sample["item_id"].tolist()):
        rows = [i for i, u in enumerate(users) if u == user]
        assert length == max(inter["item_length"][rows].tolist()) and target == inter["item_id"][rows[-1]].item()
    config["llmsrec_train_rows"] = "all"
    assert len(training_sample(config, train)._dataset.inter_feat) == len(inter)


def test_the_fill_holds_every_prompt_a_run_and_its_order_test_read(tiny, tmp_path, tiny_llm, monkeypatch):
    """``run_prompts`` (what ``llm-states`` fills) covers the prompts the model reads in training, validation,
    testing and the shuffled-prompt order test, so a run after the fill computes no state."""
    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path / "cache"))
    from recbole_llm.analysis import shuffled_prompts
    from recbole_llm.model.llmsrec import LLMSRec, run_prompts, training_sample

    config, _, (train, valid, test), model = build(
        "LLMSRec", tiny, llm_model=str(tiny_llm), llm_state_precision="fp32", checkpoint_dir=str(tmp_path / "saved"),
        llmsrec_teacher_epochs=1)
    parts = run_prompts(config, train, valid, test)
    read = []
    original = LLMSRec.cached_user_states
    monkeypatch.setattr(LLMSRec, "cached_user_states", lambda self, p: read.extend(p) or original(self, p))
    model.eval()
    model.prepare_user_states(training_sample(config, train))
    for loader in (valid, test):
        for batch in loader:
            model.full_sort_predict(batch[0])
    with shuffled_prompts(model, seed=0):
        for batch in test:
            model.full_sort_predict(batch[0])
    wanted = set(parts["train"]) | set(parts["valid"]) | set(parts["test"]) | set(parts["test_shuffled"])
    assert set(read) == wanted
    assert set(parts["test_shuffled"]) != set(parts["test"]), "the order test reads other prompts"
