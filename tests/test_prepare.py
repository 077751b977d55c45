"""The prepare stage: files made before the model, constructors that only read, training work in trainers."""
import json

import pytest
import torch
from conftest import build, make_config

import recbole_llm
from recbole_llm import pipeline
from recbole_llm.embeddings import store


def _no_embedding_work(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a constructor computed embeddings")

    monkeypatch.setattr(store, "build_item_embeddings", never)
    monkeypatch.setattr(store, "make_provider", never)


@pytest.mark.parametrize("model", ["LLMSeqSim", "SKNNEmb", "LLM2SASRec", "LLM2GRU4Rec", "LLMSeqSimPopHybrid"])
def test_after_the_prepare_stage_constructors_only_read(tiny, monkeypatch, model):
    run = pipeline.load_data(model, "tiny", None, tiny["config"])  # RecBole's data_preparation prepared
    _no_embedding_work(monkeypatch)
    built = recbole_llm.get_model(model)(run.config, run.train_data._dataset)
    assert sum(p.numel() for p in built.parameters()) > 0


def test_a_model_built_without_the_prepare_stage_says_how_to_prepare(tiny):
    from recbole.data import create_dataset
    from recbole.data.dataset import SequentialDataset

    config = make_config("LLMSeqSim", tiny)
    dataset = create_dataset(config)
    assert isinstance(dataset, SequentialDataset)
    train = dataset.build()[0]  # RecBole's split without its data_preparation: nothing was prepared
    with pytest.raises(store.EmbeddingsNotPrepared, match=r"prepare stage.*python -m recbole_llm embed"):
        recbole_llm.get_model("LLMSeqSim")(config, train)


def test_the_hybrid_prepares_its_partner_with_the_partner_settings(tiny, monkeypatch):
    run = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, {
        **tiny["config"], "hybrid_sequential_model": "SKNNEmb",
        "hybrid_sequential_config": {"embedding_reduction": "pca", "embedding_dim": 4}})
    made = {json.loads(p.read_text())["dim"] for p in (tiny["path"] / "tiny").glob("*.itememb*.json")}
    assert 4 in made, "the partner's own recipe (PCA 4) was prepared"
    _no_embedding_work(monkeypatch)
    recbole_llm.get_model("LLMSeqSimSeqHybrid")(run.config, run.train_data._dataset)


def test_a_capped_or_unreduced_file_is_reused_and_a_changed_recipe_rebuilt(tiny, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="recbole_llm.embeddings.store")
    cache = {"embedding_cache_path": tiny["config"]["embedding_cache_path"]}
    for recipe in ({"embedding_reduction": "pca", "embedding_dim": 512}, {"embedding_reduction": "none"}):
        config = make_config("LLMSeqSim", tiny, **recipe, **cache)
        path = store.prepare_item_embeddings(config)
        stamp = path.stat().st_mtime_ns
        assert store.prepare_item_embeddings(config) == path and path.stat().st_mtime_ns == stamp, recipe
    made = json.loads(path.with_name(path.name + ".json").read_text())
    assert made["dim"] is None and made["size"] == 384
    capped = make_config("LLMSeqSim", tiny, embedding_reduction="pca", embedding_dim=512, **cache)
    assert json.loads(store.prepare_item_embeddings(capped).with_name(
        f"tiny.{store.EmbeddingSpec.from_config(capped).suffix}.json").read_text())["size"] == 20  # at most min(20 items, 384)
    normalised = make_config("LLMSeqSim", tiny, embedding_reduction="pca", embedding_dim=512,
                             embedding_normalize=True, **cache)
    assert store.prepare_item_embeddings(normalised).name.endswith("_l2")
    caplog.clear()
    changed = make_config("LLMSeqSim", tiny, embedding_reduction="none", embedding_empty_text="n/a", **cache)
    store.prepare_item_embeddings(changed)
    assert "was made differently" in caplog.text


def test_llmseqprompt_fine_tunes_in_its_trainer_not_when_built(tiny, tmp_path, tiny_llm, monkeypatch):
    from recbole_llm.llm.local import LocalPromptLLM
    from recbole_llm.model.llmseqprompt import LLMSeqPromptTrainer

    calls = []
    original = LocalPromptLLM.fine_tune
    monkeypatch.setattr(LocalPromptLLM, "fine_tune", lambda self, *a: calls.append(1) or original(self, *a))
    config, _, (train, valid, _), model = build(
        "LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), llm_max_train_steps=2,
        checkpoint_dir=str(tmp_path / "saved"), max_test_sessions=2, prompt_samples=2, llm_max_new_tokens=8)
    assert calls == [] and model.model_ref is None
    trainer = LLMSeqPromptTrainer(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    assert calls == [1] and model.model_ref.startswith("lora:")
    saved = recbole_llm.patches.load_checkpoint(trainer.saved_model_file)
    assert saved["other_parameter"]["model_ref"] == model.model_ref, "a reloaded model finds its adapter"


def test_llmsrec_trains_its_teacher_in_its_trainer_once(tiny, tmp_path, tiny_llm):
    from recbole_llm.model.llmsrec import LLMSRecTrainer

    config, _, (train, valid, _), model = build(
        "LLMSRec", tiny, llm_model=str(tiny_llm), checkpoint_dir=str(tmp_path / "saved"), llmsrec_teacher_epochs=1,
        llmsrec_dim=16, train_batch_size=16, epochs=1)
    untrained = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert not bool(model.teacher_ready)
    LLMSRecTrainer(config, model).fit(train, valid, saved=False, show_progress=False)
    assert bool(model.teacher_ready) and "teacher_ready" in model.state_dict()
    trained = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert any(not torch.equal(untrained[k], trained[k]) for k in trained)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train_teacher(train)  # a resumed run: the teacher is not trained again
    assert all(torch.equal(trained[k], v) for k, v in model.teacher.state_dict().items())


def test_the_hybrid_partner_takes_its_published_configuration_under_the_paper_preset(tiny, tmp_path, monkeypatch):
    from recbole_llm import presets
    from recbole_llm.model.hybrids import partner_config

    paper_dir = tmp_path / "paper"
    (paper_dir / "tiny").mkdir(parents=True)
    (paper_dir / "tiny" / "SKNNEmb.yaml").write_text("preset: paper, SKNNEmb\nsknn_k: 7\nsknn_sample_size: 30\n")
    monkeypatch.setattr(presets, "PAPER_CONFIG_DIR", paper_dir)
    settings = {**tiny["config"], "hybrid_sequential_model": "SKNNEmb", "hybrid_sequential_config": {"sknn_k": 5}}
    config = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, settings).config
    partner = partner_config(config)
    assert partner["model"] == "SKNNEmb" and partner["sknn_sample_size"] == 30, "the partner's published file"
    assert partner["sknn_k"] == 5, "hybrid_sequential_config wins"
    assert config["sknn_sample_size"] != 30 and not str(partner["preset"]).endswith("SKNNEmb"), "the hybrid's own"
    given = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, {**settings, "sknn_sample_size": 40}).config
    assert partner_config(given)["sknn_sample_size"] == 40, "a setting given to the run reaches the partner too"
    config["preset"] = "custom"
    assert partner_config(config)["sknn_sample_size"] != 30, "no published files outside the paper preset"

    # the hybrid's published partner settings fill in what the partner's published file leaves open
    (paper_dir / "tiny" / "LLMSeqSimSeqHybrid.yaml").write_text(
        "preset: paper, hybrid\nhybrid_sequential_model: VSKNN\n"
        "hybrid_sequential_config: {sknn_k: 99, sknn_sampling: random}\n")
    published = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, tiny["config"]).config
    assert published["hybrid_sequential_model"] == "VSKNN" and partner_config(published)["sknn_k"] == 99
    other = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None,
                               {**tiny["config"], "hybrid_sequential_model": "SKNNEmb"}).config
    assert other["hybrid_sequential_config"] == {"sknn_k": 99, "sknn_sampling": "random"}
    partner = partner_config(other)
    assert partner["sknn_k"] == 7, "SKNNEmb's published k, not the setting written for VSKNN"
    assert partner["sknn_sampling"] == "random", "what SKNNEmb's file leaves open is filled in"
    given = pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, {
        **tiny["config"], "hybrid_sequential_model": "SKNNEmb",
        "hybrid_sequential_config": {"sknn_k": 99, "sknn_sampling": "random"}}).config
    assert partner_config(given)["sknn_k"] == 99, "given to the run, even equal to the published one: it wins"


def test_the_hybrids_partner_settings_are_refused_before_anything_is_prepared(tiny, monkeypatch):
    _no_embedding_work(monkeypatch)  # nothing may be embedded (paid) before the refusal
    with pytest.raises(ValueError, match="embedding_scale must be one of std, none, unit; got 'huge'"):
        pipeline.load_data("LLMSeqSimSeqHybrid", "tiny", None, {
            **tiny["config"], "hybrid_sequential_model": "LLM2SASRec",
            "hybrid_sequential_config": {"embedding_scale": "huge"}})
