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


def test_many_sessions_at_once_from_python_and_the_command_line(tiny, tmp_path, capsys):
    import pandas as pd

    import recbole_llm
    from recbole_llm.__main__ import main
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), model = build("SASRec", tiny)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    sessions = {"s1": ["Herbal Shampoo for Dry Hair", "ishampoo1"], "s2": ["ilipstick0"]}
    many = recbole_llm.recommend_many(trainer.saved_model_file, sessions, k=3)
    assert list(many.columns) == ["session_id", "rank", "item_id", "title", "score"] and len(many) == 6
    for name, items in sessions.items():  # the same as one session at a time
        one = recommend(trainer.saved_model_file, items, k=3)
        assert many[many.session_id == name].item_id.tolist() == [r.item_id for r in one]
    table = tmp_path / "sessions.csv"
    pd.DataFrame({"session_id": ["s2", "s1", "s1"], "item_id": ["ilipstick0", "ishampoo1", "ishampoo0"],
                  "timestamp": [5, 2, 1]}).to_csv(table, index=False)
    out = tmp_path / "top.jsonl"
    assert main(["recommend", "--checkpoint", trainer.saved_model_file, "--sessions", str(table), "--out", str(out),
                 "-k", "3"]) == 0
    written = pd.read_json(out, lines=True, dtype={"item_id": str, "session_id": str})
    assert written.sort_values(["session_id", "rank"]).item_id.tolist() == many.sort_values(
        ["session_id", "rank"]).item_id.tolist(), "rows ordered by timestamp within each session"
    assert main(["recommend", "--checkpoint", trainer.saved_model_file, "--sessions", str(table)]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_trained_item_table_is_exported(tiny, tmp_path):
    from recbole_llm.__main__ import main
    from recbole_llm.embeddings.store import read_itememb
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), model = build("SASRec", tiny)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    out = tmp_path / "items.itememb"
    assert main(["export-items", "--checkpoint", trainer.saved_model_file, "--out", str(out)]) == 0
    ids, vectors = read_itememb(out)
    assert len(ids) == model.n_items - 1 and vectors.shape[1] == config["hidden_size"]
    import numpy as np

    assert np.allclose(vectors, model.item_embedding.weight.detach().numpy()[1:], atol=1e-5)


def test_recommend_from_the_command_line_prints_only_the_answer(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    trained = subprocess.run([sys.executable, str(root / "run_recbole_llm.py"), "--model=Pop", "--dataset=ml-100k",
                              "--state=ERROR"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-1000:]
    (checkpoint,) = (tmp_path / "saved").glob("Pop-*.pth")
    done = subprocess.run([sys.executable, "-m", "recbole_llm", "recommend", "--checkpoint", str(checkpoint),
                           "--session", "50", "181", "-k", "3"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 3
    assert done.stderr.strip() == "", done.stderr[-800:]
