"""ScoreEnsemble: trained checkpoints and one-pass models fused by normalised scores, weights tuned on validation."""
from pathlib import Path

import pytest
import torch
from conftest import build, trained_checkpoint

from recbole_llm.model.ensemble import normalise, simplex_grid


def test_normalisers_keep_refused_items_refused_and_rank_as_the_member_does():
    scores = torch.tensor([[3.0, -torch.inf, 1.0, 2.0], [0.5, 0.1, -torch.inf, 0.2]])
    for how in ("zscore", "minmax", "softmax", "none"):
        out = normalise(scores, how)
        assert torch.equal(torch.isinf(out), torch.isinf(scores))
        finite = torch.isfinite(scores)
        for row in range(2):
            assert torch.equal(out[row][finite[row]].argsort(), scores[row][finite[row]].argsort())
    z = normalise(scores, "zscore")[0][[0, 2, 3]]
    assert z.mean().abs() < 1e-6 and (z.std(unbiased=False) - 1).abs() < 1e-5
    assert len(simplex_grid(3, 0.5)) == 6 and all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(3, 0.1))


def test_an_ensemble_of_a_checkpoint_and_a_one_pass_model(tiny, tmp_path):
    import recbole_llm
    from recbole_llm.registry import get_trainer

    checkpoint = trained_checkpoint("PaperSASRec", tiny, train_mode="all_positions", epochs=2)
    members = [{"model": "PaperSASRec", "checkpoint": checkpoint, "settings": {"train_mode": "all_positions"}},
               {"model": "LLMSeqSim"}]
    config, _, (train, valid, test), ensemble = build("ScoreEnsemble", tiny, ensemble_members=members)
    assert len(ensemble.members) == 2 and not any(p.requires_grad for p in ensemble.parameters())
    batch = next(iter(test))[0]
    with torch.no_grad():
        scores = ensemble.full_sort_predict(batch)
        stacked = ensemble.member_scores(batch)
    assert scores.shape == (len(batch), ensemble.n_items)
    expected = ensemble.combine(stacked, torch.tensor([0.5, 0.5]))
    assert torch.allclose(scores, expected)
    # weights by hand: all on one member ranks exactly as that member alone
    sasrec_only = ensemble.combine(stacked, torch.tensor([1.0, 0.0]))
    alone = ensemble.members[0].full_sort_predict(batch).masked_fill(~torch.isfinite(sasrec_only), -torch.inf)
    assert torch.equal(sasrec_only[:, 1:].argsort(dim=1, descending=True)[:, :5],
                       alone[:, 1:].argsort(dim=1, descending=True)[:, :5])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, ensemble)
    trainer.fit(train, valid, saved=True, show_progress=False)
    tuned = ensemble.weights.clone()
    assert abs(float(tuned.sum()) - 1) < 1e-6
    # the saved ensemble (its weights included) is what recommend uses
    again = recbole_llm.recommend(trainer.saved_model_file, ["Herbal Shampoo for Dry Hair"], k=5)
    direct = recbole_llm.recommend((ensemble, train._dataset), ["Herbal Shampoo for Dry Hair"], k=5)
    assert [r.item_id for r in again] == [r.item_id for r in direct]
    _, reloaded, *_ = recbole_llm.load_data_and_model(trainer.saved_model_file)
    assert torch.equal(reloaded.weights, tuned)
    # deterministic: the same members, the same scores
    _, _, _, twin = build("ScoreEnsemble", tiny, ensemble_members=members)
    with torch.no_grad():
        assert torch.equal(twin.full_sort_predict(batch), scores)


@pytest.mark.parametrize("members, message", [
    ([{"model": "LLMSeqSim"}], "at least two"),
    ([{"model": "PaperSASRec"}, {"model": "LLMSeqSim"}], "learns by training"),
    ([{"model": "PaperSASRec", "checkpoint": "nope.pth"}, {"model": "LLMSeqSim"}], "no checkpoint"),
])
def test_bad_members_are_refused_before_anything_is_built(tiny, members, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build("ScoreEnsemble", tiny, ensemble_members=members)


def test_a_member_is_named_by_its_run_file_and_seed(tiny, tmp_path):
    import json

    from recbole_llm.model.ensemble import resolve_checkpoint

    checkpoint = trained_checkpoint("PaperSASRec", tiny, train_mode="all_positions", epochs=1)
    (tmp_path / "SASRec__seed7.json").write_text(json.dumps({"checkpoint": checkpoint}))
    assert resolve_checkpoint(str(tmp_path / "SASRec__seed{seed}.json"), 7, 1) == checkpoint
    (tmp_path / "SASRec__seed8.json").write_text(json.dumps({"checkpoint": "saved/gone.pth"}))
    with pytest.raises(FileNotFoundError, match="run that experiment row again"):
        resolve_checkpoint(str(tmp_path / "SASRec__seed{seed}.json"), 8, 1)


def test_members_without_a_checkpoint_are_trained_first_once_and_only_when_asked(tiny, tmp_path, monkeypatch):
    import recbole.trainer

    from recbole_llm.model.ensemble import member_specs

    members = [{"model": "PaperSASRec", "settings": {"epochs": 1}}, {"model": "LLMSeqSim"}]
    with pytest.raises(ValueError, match="ensemble_train_members: True"):
        build("ScoreEnsemble", tiny, ensemble_members=members)
    config, _, (_, _, test), ensemble = build("ScoreEnsemble", tiny, ensemble_members=members,
                                              ensemble_train_members=True)
    spec = member_specs(config)[0]
    assert spec["train"] and Path(spec["checkpoint"]).is_file(), "trained before the ensemble was built"
    assert f"seed{config['seed']}" in Path(spec["checkpoint"]).name
    assert not list(Path(spec["checkpoint"]).parent.glob("*.training.pth")), "no partial file left"

    def refuse(*args, **kwargs):
        raise AssertionError("a finished member was trained again")

    monkeypatch.setattr(recbole.trainer.Trainer, "fit", refuse)
    _, _, _, again = build("ScoreEnsemble", tiny, ensemble_members=members, ensemble_train_members=True)
    batch = next(iter(test))[0]
    with torch.no_grad():
        assert torch.equal(again.full_sort_predict(batch), ensemble.full_sort_predict(batch))
    other = [{"model": "PaperSASRec", "settings": {"epochs": 1, "hidden_size": 8}}, {"model": "LLMSeqSim"}]
    with pytest.raises(AssertionError, match="trained again"):  # other settings: another member, trained anew
        build("ScoreEnsemble", tiny, ensemble_members=other, ensemble_train_members=True)


def test_members_trained_here_see_the_ensembles_split_and_are_named_by_it(tiny):
    from recbole_llm.model.ensemble import member_files_and_settings, member_specs

    members = [{"model": "PaperSASRec", "settings": {"epochs": 1}}, {"model": "LLMSeqSim"}]
    config, _, _, _ = build("ScoreEnsemble", tiny, ensemble_members=members, ensemble_train_members=True,
                            session_tie_order="shuffle")
    spec = member_specs(config)[0]
    _, settings = member_files_and_settings(config, spec)
    assert settings["session_tie_order"] == "shuffle" and settings["eval_args"] == config["eval_args"]
    config["session_tie_order"] = "file"
    assert member_specs(config)[0]["checkpoint"] != spec["checkpoint"], "another split, another member file"
