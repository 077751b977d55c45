"""LLM2* models under RecBole's multi-process (DDP) training, on CPU through gloo."""
import socket

import pytest
import torch.multiprocessing as mp

from ddp_gloo import run_recboles_on_gloo
from recbole_llm.quick_start import config_files, prepare_dataset


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
    assert set(result["test_result"]) >= {"ndcg@20", "hit@20"}
    assert 0 <= result["test_result"]["ndcg@20"] <= 1
