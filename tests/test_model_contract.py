"""The model contract (recbole_llm/model/contract.py), checked over every registered model: the constructor only
reads (no file written, no provider called, nothing trained), the output shapes, batch independence, ``predict``
consistent with full ranking, the checkpoint round-trip and determinism under a seed. A model registered without a
recipe here fails the first test: every model is checked."""
import os
from pathlib import Path

import pytest
import torch
from conftest import build, trained_checkpoint

from recbole_llm.registry import get_model, registered_models

PAPER_OPTIONS = {"train_mode": "all_positions", "softmax_negatives": 5}


def recipe(name, tiny, tmp_path, tiny_llm) -> dict:
    """Settings that build ``name`` on the tiny data (its options on where it has them)."""
    llm = {"llm_model": str(tiny_llm), "llm_state_precision": "fp32", "checkpoint_dir": str(tmp_path / "saved")}
    recipes = {
        "MostPopular": {}, "SKNN": {}, "VSKNN": {}, "SSKNN": {}, "SFSKNN": {}, "SKNNEmb": {}, "LLMSeqSim": {},
        "LLMSeqSimPopHybrid": {}, "LLMSeqSimSeqHybrid": {"hybrid_sequential_model": "SKNN"},
        "LLM2SASRec": PAPER_OPTIONS, "LLM2GRU4Rec": PAPER_OPTIONS, "LLM2BERT4Rec": {"train_mode": "all_positions"},
        "PaperSASRec": {**PAPER_OPTIONS, "output_dense": "relu", "output_bias": True, "pack_sequences": True},
        "PaperGRU4Rec": {**PAPER_OPTIONS, "output_dense": "relu", "output_bias": True},
        "PaperBERT4Rec": {"train_mode": "all_positions", "bert_layers": "paper", "bert_padding": "left_mask",
                          "bert_predict_mask": "after_prompt", "softmax_negatives": 5},
        "AlphaFuseSASRec": PAPER_OPTIONS, "AlphaFuseGRU4Rec": PAPER_OPTIONS,
        "LLMESRSASRec": {**PAPER_OPTIONS, "output_bias": True}, "LLMESRGRU4Rec": PAPER_OPTIONS,
        "LLMSRec": {**llm, "llmsrec_teacher_epochs": 1, "llmsrec_dim": 16, "train_batch_size": 16},
        "LLMSeqPrompt": {**llm, "llm_provider": "local", "prompt_finetune": False, "max_test_sessions": 2,
                         "llm_answer_cache": str(tmp_path / "answers.sqlite")},
    }
    if name == "ScoreEnsemble":
        return {"ensemble_members": [{"model": "PaperSASRec", "checkpoint": trained_checkpoint("PaperSASRec", tiny, checkpoint_dir=str(tmp_path / "members"))},
                                     {"model": "LLMSeqSim"}]}
    return recipes[name]


# a model whose trainer does a step before it can score (LLMSeqPrompt's fine-tuning, here the base model's reference)
BEFORE_SCORING = {"LLMSeqPrompt": lambda model, train: model.fine_tune(train._dataset)}


def _files(*roots) -> dict:
    """Size and mtime of every file; a SQLite cache by its content instead (its write-ahead log and shared-memory
    index are not data: closing another connection may checkpoint the log into the file, the same rows)."""
    import hashlib
    import sqlite3

    found = {}
    for root in roots:
        for path in Path(root).rglob("*"):
            if not path.is_file() or path.name.endswith(("-shm", "-wal")):
                continue
            if path.suffix == ".sqlite":
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    found[str(path)] = hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
                db.close()
            else:
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("name", registered_models())
def test_the_constructor_only_reads(name, tiny, tmp_path, tiny_llm, monkeypatch):
    settings = recipe(name, tiny, tmp_path, tiny_llm)
    config, dataset, (train, _, _), _ = build(name, tiny, **settings)  # the prepare stage ran here
    watched = [tmp_path, os.environ["RECBOLE_LLM_CACHE"]]
    before = _files(*watched)

    def refuse(*args, **kwargs):
        raise AssertionError("the constructor called a provider or trained")

    import recbole.trainer

    monkeypatch.setattr("recbole_llm.embeddings.embed.embed_texts", refuse)
    monkeypatch.setattr(recbole.trainer.Trainer, "fit", refuse)
    get_model(name)(config, train._dataset)
    assert _files(*watched) == before, "the constructor wrote files"


def _batch(test):
    batch = next(iter(test))
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("name", registered_models())
def test_scores_shapes_batches_predict_round_trip_and_seed(name, tiny, tmp_path, tiny_llm):
    settings = recipe(name, tiny, tmp_path, tiny_llm)
    _, _, (train, _, test), model = build(name, tiny, **settings)
    _, _, _, twin = build(name, tiny, **settings)
    if name in BEFORE_SCORING:
        BEFORE_SCORING[name](model, train), BEFORE_SCORING[name](twin, train)
    state, twin_state = model.state_dict(), twin.state_dict()
    assert list(state) == list(twin_state) and all(torch.equal(state[k], twin_state[k]) for k in state), \
        "the same seed builds the same model"
    model.eval()
    batch = _batch(test)
    with torch.no_grad():
        scores = model.full_sort_predict(batch).reshape(len(batch), -1)
        assert scores.shape == (len(batch), model.n_items)
        alone = model.full_sort_predict(batch[torch.tensor([1])]).reshape(1, -1)
        assert torch.allclose(alone[0], scores[1], atol=1e-5, equal_nan=True), "a session's scores do not depend "\
            "on the rest of its batch"
        if model.ITEM_ID not in batch.interaction:  # a general model's full-sort rows carry users only
            batch.interaction[model.ITEM_ID] = torch.arange(1, len(batch) + 1) % model.n_items
        predicted = model.predict(batch)
        expected = scores.gather(1, batch["item_id"].unsqueeze(1)).squeeze(1)
        assert torch.allclose(predicted.double(), expected.double(), atol=1e-4, equal_nan=True), \
            "predict agrees with full ranking"
    path = tmp_path / "roundtrip.pth"
    from recbole_llm.checkpoints import load_checkpoint

    torch.save({"state_dict": model.state_dict()}, path)
    twin.load_state_dict(load_checkpoint(path)["state_dict"])  # weights_only, as every checkpoint we read
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin.full_sort_predict(batch).reshape(len(batch), -1), scores), "checkpoint round-trip"


def test_the_code_reads_only_the_hooks_the_contract_declares():
    """Every ``getattr(<a model or model class>, "name")`` in the package is a declared hook (or one of a model's
    own modules' internals); every declared hook is read somewhere."""
    import re

    import recbole_llm
    from recbole_llm.model.contract import HOOKS

    internals = {"catalog_sampler", "item_bias", "output_dense", "item_embedding", "__name__", "type"}
    pattern = re.compile(r'getattr\(([^,]+), "([a-z_]+)"')
    read = set()
    for path in Path(recbole_llm.__file__).parent.rglob("*.py"):
        for subject, name in pattern.findall(path.read_text()):
            if re.search(r"model|cls|klass", subject, re.I) and name not in internals:
                read.add(name)
    read.add("shared_on_copy")  # read by SharesHelpersOnCopy through the class attribute
    assert read == set(HOOKS)
