"""LLMSRec: a frozen LLM, learned MLPs and user token, distillation from SASRec, cached item states."""
import pytest
import torch
from conftest import build

from recbole_llm.model.llmsrec import uniformity


def _config(tmp_path, tiny_llm, **extra):
    return dict(llm_model=str(tiny_llm), checkpoint_dir=str(tmp_path / "saved"), llmsrec_teacher_epochs=1,
                llmsrec_dim=16, train_batch_size=16, **{"llm_state_precision": "fp32", **extra})


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    """A state store of this test's own (the session's store is shared by the tests, as by users' runs)."""
    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "llm_states.sqlite"


def test_only_small_modules_learn_and_distillation_falls(tiny, tmp_path, tiny_llm):
    _, _, (train, _, test), model = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm, llmsrec_user_token="learned"))
    llm_before = {n: p.clone() for n, p in model.llm.named_parameters()}
    teacher_before = {n: p.clone() for n, p in model.teacher.named_parameters()}
    mlp_before = model.user_mlp[0].weight.clone()
    token_before = model.user_token.clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    batch = next(iter(train))
    distill = []
    model.train()
    for _ in range(15):
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distill.append(model.last_losses["distill"])
    assert distill[-1] < 0.5 * distill[0], distill
    for name, param in model.llm.named_parameters():
        assert torch.equal(param, llm_before[name]), f"the LLM changed: {name}"
    for name, param in model.teacher.named_parameters():
        assert torch.equal(param, teacher_before[name]), f"the teacher changed: {name}"
    assert not torch.equal(model.user_mlp[0].weight, mlp_before)
    assert not torch.equal(model.user_token, token_before)
    assert not [k for k in model.state_dict() if k.startswith("llm.")], "the frozen LLM is reloaded, not saved"
    scores = model.full_sort_predict(next(iter(test))[0])
    assert scores.shape[1] == model.n_items and scores[:, 0].eq(-torch.inf).all()


def test_cached_prefix_gives_the_single_pass_user_state(tiny, tmp_path, tiny_llm):
    """The user state is computed from a KV cache of the titles plus one differentiated position;
    it must equal one plain forward pass over the whole prompt with the learned token in place."""
    _, _, (train, _, _), model = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm, llmsrec_user_token="learned"))
    batch = next(iter(train))
    with torch.no_grad():
        model.user_token.add_(0.5)  # a token that differs from the resized vocabulary row
        fast = model.llm_user_states(batch)
        prompts = model.user_prompts(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        encoded = model.tokenizer(prompts, return_tensors="pt", padding=True)
        embeds = model.llm.get_input_embeddings()(encoded["input_ids"])
        embeds[:, -1] = model.user_token
        plain = model.llm.model(inputs_embeds=embeds, attention_mask=encoded["attention_mask"]).last_hidden_state[:, -1]
    assert torch.allclose(fast, plain, atol=1e-4), (fast - plain).abs().max()


def test_item_states_are_cached(tiny, tmp_path, tiny_llm, monkeypatch, own_store):
    _, _, _, model = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm))
    assert model.item_states.shape == (model.n_items, model.llm.config.hidden_size)
    assert model.item_states[0].abs().sum() == 0
    assert len(model.store.cache) == model.n_items - 1, "one state per catalog item, in the shared store"
    calls = []
    original = type(model.llm.model).forward
    monkeypatch.setattr(type(model.llm.model), "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    _, _, _, again = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm))
    assert torch.equal(again.item_states, model.item_states)
    assert calls == [], "a rerun reads the cached item states instead of running the LLM"


def test_uniformity_prefers_spread_points():
    spread = torch.eye(4)
    collapsed = torch.ones(4, 4)
    assert uniformity(spread) < uniformity(collapsed)


def test_evaluation_in_length_sorted_chunks_scores_like_one_batch(tiny, tmp_path, tiny_llm):
    _, _, (train, _, _), model = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm, llmsrec_state_batch_size=3))
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        one_batch = model.user_representation(batch) @ model.item_representations().T
        chunked = model.full_sort_predict(batch)
    assert len(batch) > 3
    assert torch.allclose(chunked[:, 1:], one_batch[:, 1:], atol=1e-4), (chunked - one_batch)[:, 1:].abs().max()


def test_a_direction_shared_by_all_states_does_not_reach_the_mlps(tiny, tmp_path, tiny_llm, monkeypatch):
    """A causal LM's last hidden states share one large direction; LLMSRec standardises it away (items by the
    catalog's statistics, users by running statistics) so the MLPs see what tells items and sessions apart."""
    from recbole_llm.model.llmsrec import LLMSRec

    from recbole_llm.llm.states import LLMStateStore

    config = _config(tmp_path, tiny_llm)
    _, _, (train, _, _), plain = build("LLMSRec", tiny, **config)
    offset = 100.0 * torch.randn(plain.llm.config.hidden_size)
    stored = LLMStateStore.tensor
    monkeypatch.setattr(LLMStateStore, "tensor", lambda self, prompts: stored(self, prompts) + offset)
    _, _, _, shifted = build("LLMSRec", tiny, **config)  # what the store would hold for a shifted LLM
    monkeypatch.setattr(LLMStateStore, "tensor", stored)
    monkeypatch.setattr(shifted, "llm_user_states", lambda batch: LLMSRec.llm_user_states(shifted, batch) + offset)
    assert torch.allclose(plain.item_representations()[1:], shifted.item_representations()[1:], atol=1e-3)
    batch = next(iter(train))
    plain.train(), shifted.train()
    with torch.no_grad():
        assert torch.allclose(plain.user_representation(batch), shifted.user_representation(batch), atol=1e-3)


def test_fixed_user_token_states_are_cached_and_equal_a_fresh_forward_pass(tiny, tmp_path, tiny_llm, monkeypatch):
    from recbole_llm.model.llmsrec import LLMSRec

    config = _config(tmp_path, tiny_llm, llmsrec_user_token="fixed")
    _, _, (train, _, _), model = build("LLMSRec", tiny, **config)
    assert "user_token" not in dict(model.named_parameters()), "the token is fixed"
    model.prepare_user_states(train)
    batch = next(iter(train))
    prompts = model.user_prompts(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    with torch.no_grad():
        cached = model.llm_user_states(batch)
        fresh = model._prompt_states(prompts)
    assert torch.allclose(cached, fresh, atol=1e-4), (cached - fresh).abs().max()
    # a new model reads the states from disk and never runs the LLM for training prompts
    _, _, (train2, _, _), again = build("LLMSRec", tiny, **config)
    monkeypatch.setattr(LLMSRec, "_prompt_states", lambda self, p: (_ for _ in ()).throw(AssertionError("LLM ran")))
    again.prepare_user_states(train2)
    again.train()
    loss = again.calculate_loss(next(iter(train2)))
    loss.backward()
    assert torch.isfinite(loss) and again.user_mlp[0].weight.grad is not None


def test_a_training_prompt_cap_computes_states_for_the_seeded_sample_only(tiny, tmp_path, tiny_llm, monkeypatch,
                                                                          own_store):
    from recbole_llm.model.llmsrec import LLMSRec, LLMSRecTrainer

    config = _config(tmp_path, tiny_llm, llmsrec_user_token="fixed", llmsrec_train_prompts=5, epochs=1)
    cfg, _, (train, valid, _), model = build("LLMSRec", tiny, **config)
    trainer = LLMSRecTrainer(cfg, model)
    sample = trainer.training_sample(train)
    assert len(sample._dataset.inter_feat) == 5 < len(train._dataset.inter_feat)
    again = trainer.training_sample(train)
    assert torch.equal(sample._dataset.inter_feat[model.ITEM_SEQ], again._dataset.inter_feat[model.ITEM_SEQ]), "seeded"
    computed = []
    original = LLMSRec._prompt_states
    monkeypatch.setattr(LLMSRec, "_prompt_states", lambda self, p: computed.extend(p) or original(self, p))
    trainer.fit(train, valid, saved=False, show_progress=False)
    inter = sample._dataset.inter_feat
    expected = set(model.user_prompts(inter[model.ITEM_SEQ], inter[model.ITEM_SEQ_LEN]))
    training = [p for p in computed if p in expected]
    assert set(training) == expected and len(training) == len(expected), "each sampled prompt once"


def test_the_teacher_loads_from_a_weights_only_file_or_a_recbole_checkpoint(tiny, tmp_path, tiny_llm):
    from recbole_llm.model.llmsrec import teacher_weights

    _, _, _, model = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm))
    weights = tmp_path / "teacher.pt"
    torch.save(model.teacher.state_dict(), weights)
    recbole_style = tmp_path / "teacher.pth"
    torch.save({"state_dict": model.teacher.state_dict(), "config": {"model": "SASRec"}}, recbole_style)
    for path in (weights, recbole_style):
        loaded = teacher_weights(path)
        assert all(torch.equal(loaded[k], v) for k, v in model.teacher.state_dict().items())
    _, _, _, again = build("LLMSRec", tiny, **_config(tmp_path, tiny_llm, llmsrec_teacher_checkpoint=str(weights)))
    assert bool(again.teacher_ready)
    assert all(torch.equal(again.teacher.state_dict()[k], v) for k, v in model.teacher.state_dict().items())
    with pytest.raises(FileNotFoundError, match="llmsrec_teacher_checkpoint"):
        teacher_weights(tmp_path / "absent.pt")
