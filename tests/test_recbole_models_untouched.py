"""After ``import recbole_llm`` RecBole's SASRec, GRU4Rec, BERT4Rec and TransformerEncoder are RecBole's own
classes, and a run of them gives what it gives without the import; our options live in PaperSASRec & co."""
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import build

RECBOLE_CLASSES = ["recbole.model.sequential_recommender.sasrec:SASRec",
                   "recbole.model.sequential_recommender.gru4rec:GRU4Rec",
                   "recbole.model.sequential_recommender.bert4rec:BERT4Rec",
                   "recbole.model.layers:TransformerEncoder"]


def test_every_method_of_recboles_sequential_models_is_defined_in_recbole():
    import importlib

    import recbole_llm  # noqa: F401
    from recbole_llm import patches

    for target in RECBOLE_CLASSES:
        module, name = target.split(":")
        cls = getattr(importlib.import_module(module), name)
        for attribute, value in vars(cls).items():
            if callable(value):
                assert inspect.getsourcefile(value) == inspect.getsourcefile(cls), f"{name}.{attribute} is replaced"
    assert not [row.target for row in patches.table() if "sequential_recommender" in row.target
                or "TransformerEncoder" in row.target]


# one short RecBole run of each model, from RecBole's own run_recbole, in a fresh process with or without the
# import: RecBole's own protocol (its default split), so nothing of ours but the import itself is in play
SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    if sys.argv[1] == "with":
        import recbole_llm  # noqa: F401
    else:  # what RecBole 1.2.1 cannot import without on NumPy 2 (our first patch rows), and nothing else
        import numpy as np
        for name, value in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
                            ("float", float), ("bool8", np.bool_)):
            if not hasattr(np, name):
                setattr(np, name, value)
    from recbole.quick_start import run_recbole
    out = {}
    for model in ("SASRec", "GRU4Rec", "BERT4Rec"):
        result = run_recbole(model=model, dataset="tiny", config_dict={
            "data_path": sys.argv[2], "epochs": 1, "hidden_size": 16, "inner_size": 16, "embedding_size": 16,
            "n_layers": 1, "n_heads": 2, "train_batch_size": 64, "eval_batch_size": 64, "show_progress": False,
            "save_dataset": False, "checkpoint_dir": sys.argv[3], "train_neg_sample_args": None,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "metrics": ["NDCG", "Hit"], "topk": [5],
            "valid_metric": "NDCG@5"}, saved=False)
        out[model] = {k: float(v) for k, v in result["test_result"].items()}
    print("RESULT" + json.dumps(out))
""")


def _run(tmp_path, mode: str) -> dict:
    from conftest import write_tiny_dataset

    data = tmp_path / "data"
    if not (data / "tiny").exists():
        write_tiny_dataset(data)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), mode, str(data), str(tmp_path / "saved")], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_recboles_models_give_the_same_results_with_and_without_the_import(tmp_path):
    without, with_import = _run(tmp_path, "without"), _run(tmp_path, "with")
    assert with_import == without


@pytest.mark.parametrize("name", ["PaperSASRec", "PaperGRU4Rec", "PaperBERT4Rec"])
def test_our_classes_with_every_option_off_compute_what_recbole_computes(tiny, name):
    import torch

    off = {"feed_forward_gelu": "recbole"} if name != "PaperGRU4Rec" else {}  # torch's GELU rounds otherwise
    _, _, (train, _, _), ours = build(name, tiny, train_mode="prefixes", bert_predict_mask="recbole", **off)
    parent = type(ours).__mro__[[c.__module__.startswith("recbole.") for c in type(ours).__mro__].index(True)]
    torch.manual_seed(0)
    _, _, _, theirs = build(parent.__name__, tiny, train_mode="prefixes")
    theirs.load_state_dict(ours.state_dict())  # same parameters (and names): the same numbers
    ours.eval(), theirs.eval()
    batch = next(iter(train))
    with torch.no_grad():
        assert torch.equal(ours.full_sort_predict(batch), theirs.full_sort_predict(batch))
        torch.manual_seed(1)
        mine = ours.calculate_loss(batch)
        torch.manual_seed(1)
        assert torch.equal(mine, theirs.calculate_loss(batch))


def test_options_recboles_models_do_not_read_are_refused_with_our_class(tiny):
    with pytest.raises(ValueError, match="output_dense: options of PaperSASRec.*use --model=PaperSASRec"):
        build("SASRec", tiny, output_dense="relu")
    with pytest.raises(ValueError, match="bert_layers: options of PaperBERT4Rec"):
        build("BERT4Rec", tiny, bert_layers="paper")
