"""LLM2* models under RecBole's multi-process (DDP) training, on CPU through gloo."""
import socket

import pytest
import torch.multiprocessing as mp

from ddp_gloo import run_recboles_on_gloo
from recbole_llm.checks import prepare_dataset
from recbole_llm.presets import config_files


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("model", ["LLM2SASRec", "LLM2GRU4Rec", "LLM2BERT4Rec"])
def test_llm2_models_train_and_evaluate_with_two_processes(tiny, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # both processes create ./log at once: the race RecBole's ensure_dir had
    files = config_files()
    config = {**tiny["config"], "epochs": 2, "world_size": 2, "nproc": 2, "offset": 0, "ip": "127.0.0.1",
              "port": _free_port()}
    prepare_dataset(model, "tiny", files, config)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(run_recboles_on_gloo, args=(model, "tiny", files, {"config_dict": config, "queue": queue}), nprocs=2,
             join=True)
    result = queue.get()
    # what the two processes measured is what one process measures with the checkpoint they saved
    (checkpoint,) = (tmp_path / "saved").glob(f"{model}-*.pth")
    assert result["test_result"]["ndcg@20"] == pytest.approx(
        _evaluate_alone(model, files, tiny["config"], checkpoint)["ndcg@20"], abs=1e-4)


def _evaluate_alone(model, files, config, checkpoint):
    """The checkpoint's weights in the same model on the same split, built and evaluated in this one process."""
    from recbole_llm import pipeline
    from recbole_llm.patches import load_checkpoint

    run = pipeline.build(model, "tiny", files, config, preset=False)
    run.model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    run.trainer.eval_collector.data_collect(run.train_data)
    return run.trainer.evaluate(run.test_data, load_best_model=False)
