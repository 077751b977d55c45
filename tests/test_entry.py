"""The entry point, model lookup and checkpoint reload, as a RecBole user meets them."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_config

import recbole_llm
from recbole_llm.patches import load_checkpoint
from recbole_llm.quick_start import run

ROOT = Path(__file__).resolve().parent.parent


def _script(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run_recbole_llm.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_unknown_model_is_one_clear_message(tmp_path):
    done = _script("--model=SASRek", "--dataset=ml-100k", cwd=tmp_path)
    assert done.returncode == 2
    assert "Unknown model 'SASRek'" in done.stderr and "LLM2SASRec" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine can run two NCCL processes")
def test_multi_process_without_gpus_is_one_clear_message(tmp_path):
    done = _script("--model=SASRec", "--dataset=ml-100k", "--nproc=2", cwd=tmp_path)
    assert done.returncode == 2
    assert "--nproc=2 runs RecBole's multi-GPU training" in done.stderr and "--nproc=1" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_dataset_is_one_clear_message(tmp_path):
    done = _script("--model=SASRec", "--dataset=mystore", f"--data_path={tmp_path}", cwd=tmp_path)
    assert done.returncode == 2
    assert "Dataset 'mystore' not found" in done.stderr and "mystore.inter" in done.stderr
    assert "Traceback" not in done.stderr


def test_script_runs_builtin_model_with_all_metrics(tiny, tmp_path):
    done = _script("--model=Pop", "--dataset=tiny", f"--data_path={tiny['path']}", "--state=INFO", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for metric in ("ndcg@10", "hit@20", "mrr@20", "catalogcoverage@10", "serendipity@20", "novelty@10",
                   "intralistdiversity@20"):
        assert metric in done.stdout
    test_line = [line for line in done.stdout.splitlines() if line.strip().startswith("test:")]
    assert len(test_line) == 1 and "np.float64" not in done.stdout, "the result printed once, readably"
    for noise in ("pkg_resources is deprecated", "FutureWarning", "GradScaler"):
        assert noise not in done.stderr, f"known third-party noise shown: {noise}"
    assert "preset: paper" in done.stderr and "re-targeted" in done.stderr, "the log names the preset and split"


def test_models_found_by_name_and_class(tiny):
    assert recbole_llm.get_model("LLM2SASRec").__name__ == "LLM2SASRec"
    assert recbole_llm.get_model("SASRec").__name__ == "SASRec"
    from recbole.utils import get_model

    assert get_model("LLM2GRU4Rec") is recbole_llm.get_model("LLM2GRU4Rec")
    by_name = make_config("LLM2SASRec", tiny)
    by_class = make_config(recbole_llm.get_model("LLM2SASRec"), tiny)
    assert by_name["model"] == by_class["model"] == "LLM2SASRec"
    assert by_name["embedding_reduction"] == "pca", "our model yaml is loaded"
    assert by_name["n_heads"] == 1 and by_name["attn_dropout_prob"] == 0.5, "SASRec's yaml is loaded underneath"


@pytest.mark.parametrize("model", ["SASRec", "LLM2SASRec"])
def test_checkpoint_save_and_reload(tiny, model):
    """torch>=2.6 + RecBole's pickled Config: evaluate(load_best_model) and load_data_and_model work."""
    result = run(model, "tiny", config_dict=tiny["config"], saved=True)
    assert "ndcg@20" in result["test_result"]
    checkpoint = sorted(Path(tiny["config"]["checkpoint_dir"]).glob(f"{model}-*.pth"))[-1]
    config, loaded, dataset, train, valid, test = recbole_llm.load_data_and_model(checkpoint)
    assert type(loaded).__name__ == model
    saved_state = load_checkpoint(checkpoint)["state_dict"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(value.cpu(), saved_state[key].cpu())


def test_pairwise_recbole_model_runs_under_the_protocol_and_is_warned_about(tiny, tmp_path):
    done = _script("--model=BPR", "--dataset=tiny", f"--data_path={tiny['path']}", "--epochs=1", "--state=INFO",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test:" in done.stdout
    assert "BPR scores a session by its user id" in done.stderr


def test_recbole_defaults_with_an_llm2_ce_model(embedding_cache, tmp_path):
    """RecBole's defaults sample negatives, which a CE model refuses: the CE model trains without them."""
    done = _script("--model=LLM2SASRec", "--dataset=ml-100k", "--epochs=1", "--recbole_defaults", "--hidden_size=16",
                   "--inner_size=16", "--MAX_ITEM_LIST_LENGTH=5", "--train_batch_size=4096", "--state=ERROR",
                   f"--embedding_cache_path={embedding_cache}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test:" in done.stdout


def test_module_help_lists_every_command_with_examples_and_helped_options():
    import argparse

    done = subprocess.run([sys.executable, "-m", "recbole_llm", "--help"], capture_output=True, text=True,
                          timeout=120)
    for command in ("run", "tune", "recommend", "embed", "convert", "report", "examples:"):
        assert command in done.stdout
    assert "SUPPRESS" not in done.stdout and "run-one" not in done.stdout
    import recbole_llm.__main__ as cli

    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            cli.main(["embed", "--dataset", "x"])
    finally:
        argparse.ArgumentParser.parse_args = original
    subparsers = next(a for a in captured["parser"]._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        if name in ("run-one", "run", "tune"):
            continue
        unhelped = [a.dest for a in sub._actions if a.help is None]
        assert not unhelped, f"{name}: options without help {unhelped}"
    run_help = subprocess.run([sys.executable, "-m", "recbole_llm", "run", "--help"], capture_output=True, text=True,
                              timeout=120).stdout
    assert "examples:" in run_help and "--tune" in run_help


def test_module_run_command(tiny, tmp_path):
    done = subprocess.run([sys.executable, "-m", "recbole_llm", "run", "--model=MostPopular", "--dataset=tiny",
                           f"--data_path={tiny['path']}", "--state=ERROR"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test:" in done.stdout and "ndcg@20" in done.stdout


def test_recbole_dataset_download_is_tried_then_one_clear_message(tmp_path, monkeypatch):
    """A dataset RecBole knows (ml-1m) is RecBole's to download; offline, one message says what to do."""
    import zipfile

    from recbole_llm.data import datasets

    done = _script("--model=SASRec", "--dataset=ml-1m", f"--data_path={tmp_path}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "RecBole could not download it from https://" in done.stderr and "ml-1m.zip" in done.stderr
    archive = tmp_path / "src" / "ml-mini.zip"  # RecBole's zips hold <name>.inter etc.; a local file:// stands in
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-mini.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\n")
    monkeypatch.setattr(datasets, "recbole_download_url", lambda name: archive.as_uri())
    folder = datasets.ensure_dataset("ml-mini", tmp_path / "data")
    assert (folder / "ml-mini.inter").read_text().startswith("user_id:token")


def test_embed_convert_and_report_commands_do_their_work(tiny, tmp_path, monkeypatch, capsys):
    """The commands users run besides `run`: an embedding file made (then reused), atomic files from tables, and
    a report's tables rebuilt from finished runs."""
    import json

    from recbole_llm.__main__ import main

    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path / "cache"))
    data = str(tiny["path"])
    assert main(["embed", "--dataset", "tiny", "--data_path", data, "--reduce", "pca", "--dim", "4"]) == 0
    made = tiny["path"] / "tiny" / "tiny.itememb_local_all-minilm-l6-v2_pca_4"
    assert made.exists() and "20 items x 4" in capsys.readouterr().out
    stamp = made.stat().st_mtime_ns
    assert main(["embed", "--dataset", "tiny", "--data_path", data, "--reduce", "pca", "--dim", "4"]) == 0
    assert made.stat().st_mtime_ns == stamp, "a second call reuses the file"

    (tmp_path / "inter.csv").write_text("session,product,when\ns1,p1,1\ns1,p2,2\ns2,p2,1\ns2,p3,5\n")
    (tmp_path / "items.csv").write_text("product,name\np1,Red Lipstick\np2,Shampoo\np3,Nail Polish\n")
    assert main(["convert", "--name", "shop", "--data_path", str(tmp_path / "out"), "--interactions",
                 str(tmp_path / "inter.csv"), "--items", str(tmp_path / "items.csv"), "--user_col", "session",
                 "--item_col", "product", "--time_col", "when", "--title_col", "name"]) == 0
    inter = (tmp_path / "out" / "shop" / "shop.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\ttimestamp:float" and len(inter) == 5
    assert json.loads((tmp_path / "out" / "shop" / "SOURCE.json").read_text())["builder"] == "tables"

    runs = tmp_path / "runs"
    runs.mkdir()
    metrics = {m: 0.1 for m in ("ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10", "mrr@20")}
    (runs / "Pop__seed1.json").write_text(json.dumps({"model": "Pop", "seed": 1, "test": metrics, "epochs": 1,
                                                      "sec_per_epoch": 0.1, "eval_seconds": 1.0,
                                                      "wall_seconds": 1.0, "test_sessions": 10}))
    assert main(["report", "--dataset", "tiny", "--models", "Pop", "--out", str(runs), "--tables_only"]) == 0
    assert (runs / "results.csv").exists() and "| Pop | 1 | 10 |" in (runs / "leaderboard.md").read_text()
    (runs / "leaderboard.md").unlink()
    assert main(["report", "--out", str(runs), "--tables_only"]) == 0, "a folder's tables need nothing else"
    assert "| Pop | 1 | 10 |" in (runs / "leaderboard.md").read_text()
    with pytest.raises(SystemExit, match="--out with --tables_only"):
        main(["report", "--out", str(runs)])


def test_debug_works_in_any_position_and_embed_names_its_model_embedding_model(capsys):
    from recbole_llm.__main__ import main

    for argv in (["--debug", "recommend", "--session", "1", "-k", "0"], ["recommend", "--session", "1", "-k", "0",
                                                                         "--debug"]):
        assert main(argv) == 2
        assert "-k must be 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", "--dataset", "x", "--model", "all-MiniLM-L6-v2"])
    assert "--model" in capsys.readouterr().err


def test_report_help_shows_examples_and_defaults(capsys):
    from recbole_llm.__main__ import main

    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--jobs 2" in out and "(default: 1)" in out
