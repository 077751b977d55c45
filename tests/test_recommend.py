"""recommend(): titles or ids in, ranked ids, titles and scores out, as the model's full-sort scores rank them."""
import json

import pytest
import torch
from conftest import build

from recbole_llm import recommend
from recbole_llm.recommend import UnknownItemError, session_interaction


def test_titles_in_ranked_titles_out_match_the_full_sort(tiny):
    _, dataset, _, model = build("LLMSeqSim", tiny)
    results = recommend((model, dataset), ["Matte Red Lipstick", "glossy  pink LIPSTICK"], k=5)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    ids = [dataset.token2id("item_id", t) for t in ("ilipstick0", "ilipstick1")]
    scores = model.full_sort_predict(session_interaction(model, dataset, ids))[0]
    scores[ids] = -torch.inf
    expected = [dataset.id2token("item_id", i) for i in scores.topk(5).indices.tolist()]
    assert [r.item_id for r in results] == expected
    titles = dict((i, t) for i, t, _ in tiny["catalog"]["items"])
    assert [r.title for r in results] == [titles[i] for i in expected]
    assert results[0].title.endswith("Lipstick") or "Lipstick" in results[0].title
    assert all(a.score >= b.score for a, b in zip(results, results[1:]))
    assert not {"ilipstick0", "ilipstick1"} & {r.item_id for r in results}, "session items are not recommended"


def test_item_ids_work_and_unknown_titles_get_suggestions(tiny):
    _, dataset, _, model = build("SKNN", tiny)
    assert len(recommend((model, dataset), ["inail0", "inail1"], k=3)) == 3
    with pytest.raises(UnknownItemError) as error:
        recommend((model, dataset), ["Matte Red Lipstik", "zzzz"], k=3)
    assert error.value.unknown["Matte Red Lipstik"][0] == "Matte Red Lipstick"
    assert "did you mean" in str(error.value) and "'zzzz'" in str(error.value)


def test_checkpoint_and_command_line(tiny, capsys):
    from recbole_llm.__main__ import main
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), model = build("SASRec", tiny)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    direct = recommend(trainer.saved_model_file, ["Herbal Shampoo for Dry Hair"], k=4)
    assert main(["recommend", "--checkpoint", trainer.saved_model_file, "--session", "ishampoo0", "-k", "4",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["item_id"] for r in printed] == [r.item_id for r in direct]
    assert main(["recommend", "--checkpoint", trainer.saved_model_file, "--session", "no such thing"]) == 2
    assert "not an item id or title" in capsys.readouterr().err
    assert main(["recommend", "--model", "SASRec", "--dataset", "tiny", "--data_path", str(tiny["path"]),
                 "--session", "ishampoo0"]) == 2
    assert "learns by training" in capsys.readouterr().err


def test_command_line_fits_a_memory_based_model_on_the_spot(tiny, capsys):
    from recbole_llm.__main__ import main

    code = main(["recommend", "--model", "LLMSeqSim", "--dataset", "tiny", "--data_path", str(tiny["path"]),
                 "--session", "Nail Polish Cherry Red", "inail1", "-k", "3"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 3
    assert out[0].split()[0] == "1" and "Nail" in out[0], out
