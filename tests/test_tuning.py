"""Tuning through RecBole's HyperTuning on temporal folds, with a rerunnable result."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import build

from recbole_llm.tuning import FoldObjective, tune

ROOT = Path(__file__).resolve().parent.parent


def test_tune_on_ml100k_writes_rerunnable_yaml(tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("llmseqsim_pooling choice ['mean','last']\nllmseqsim_similarity choice ['cosine','dot']\n")
    result = tune("LLMSeqSim", "ml-100k", max_evals=2, folds=[1], params_file=space, output_dir=tmp_path,
                  base_config={"show_progress": False, "state": "ERROR",
                               "eval_args": {"split": {"SESSION": [0.72, 0.08, 0.2]}, "order": "TO",
                                             "group_by": "user", "mode": "full"}},
                  warmup=1)
    assert len(result["trials"]) == 2
    best = yaml.safe_load(Path(result["config_file"]).read_text())
    assert best["llmseqsim_pooling"] in ("mean", "last") and "temporal_fold" not in best
    assert (tmp_path / "LLMSeqSim-ml-100k.csv").exists()
    done = subprocess.run([sys.executable, str(ROOT / "run_recbole_llm.py"), "--model=LLMSeqSim",
                           "--dataset=ml-100k", f"--config_files={result['config_file']}", "--state=ERROR",
                           "--show_progress=False"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ndcg@20" in done.stdout


def test_fold_objective_prunes_bottom_trials_and_never_tests(tiny, monkeypatch):
    calls = []

    def fake_train(model, dataset, files, config_dict):
        calls.append(config_dict["temporal_fold"])
        config, *_ = build("SASRec", tiny)
        return config_dict["quality"], {}, config

    monkeypatch.setattr("recbole_llm.tuning.train_and_validate", fake_train)
    objective = FoldObjective("SASRec", "tiny", folds=(1, 2, 3), min_trials_to_prune=2)
    for quality in (0.5, 0.6):
        objective({"quality": quality})
    assert calls == [1, 2, 3, 1, 2, 3]
    calls.clear()
    result = objective({"quality": 0.1})
    assert calls == [1], "a trial in the bottom 20% after fold 1 is pruned"
    assert objective.rows[-1]["pruned"] and result["best_valid_score"] == 0.1
    assert result["test_result"] == {"test": "not evaluated while tuning"}


def test_a_failing_trial_does_not_stop_the_search_and_a_rerun_resumes(tiny, tmp_path, monkeypatch):
    import pandas as pd

    def fake_train(model, dataset, files, config_dict):
        if config_dict["n_layers"] == 3:
            raise ValueError("an invalid combination")
        config, *_ = build("SASRec", tiny)
        return 0.1 * config_dict["n_layers"], {}, config

    monkeypatch.setattr("recbole_llm.tuning.train_and_validate", fake_train)
    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "0")  # hyperopt's draws: unseeded, 8 trials miss n_layers=2 ~4% of runs
    space = tmp_path / "space.hyper"
    space.write_text("n_layers choice [1,2,3]\n")
    csv = tmp_path / "SASRec-tiny.csv"
    result = tune("SASRec", "tiny", max_evals=8, folds=[1], params_file=space, output_dir=tmp_path, warmup=8,
                  early_stop=100, algo="random")
    rows = pd.read_csv(csv)
    assert len(rows) == 8, "every trial, finished or failed, is in the CSV"
    failed = rows[rows["status"].str.startswith("failed")]
    assert len(failed) and (failed["n_layers"] == 3).all() and "invalid combination" in failed["status"].iloc[0]
    assert result["best_params"] == {"n_layers": 2} and result["best_score"] == pytest.approx(0.2)
    again = tune("SASRec", "tiny", max_evals=11, folds=[1], params_file=space, output_dir=tmp_path, warmup=11,
                 early_stop=100, algo="random")
    assert len(pd.read_csv(csv)) == 11, "the rerun adds 3 trials to the 8 it found"
    assert len(again["trials"]) == 11


def test_ctrl_c_keeps_finished_trials_and_the_rerun_runs_the_interrupted_one_again(tiny, tmp_path, monkeypatch):
    import pandas as pd

    from recbole_llm.tuning import TuningInterrupted

    calls = []

    def fake_train(model, dataset, files, config_dict):
        calls.append(config_dict["n_layers"])
        if len(calls) == 3 and not getattr(fake_train, "interrupted", False):
            fake_train.interrupted = True
            raise KeyboardInterrupt
        config, *_ = build("SASRec", tiny)
        return 0.1 * config_dict["n_layers"], {}, config

    monkeypatch.setattr("recbole_llm.tuning.train_and_validate", fake_train)
    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "0")
    space = tmp_path / "space.hyper"
    space.write_text("n_layers choice [1,2,3]\nclip_grad_norm choice [None,5.0]\n")
    kwargs = dict(max_evals=5, folds=[1], params_file=space, output_dir=tmp_path, warmup=5, early_stop=100,
                  algo="random")
    with pytest.raises(TuningInterrupted, match="2 finished trials kept"):
        tune("SASRec", "tiny", **kwargs)
    assert len(pd.read_csv(tmp_path / "SASRec-tiny.csv")) == 2
    result = tune("SASRec", "tiny", **kwargs)
    assert len(result["trials"]) == 5 and len(calls) == 6, "2 before, the interrupted one again, 2 more"
    best = yaml.safe_load(Path(result["config_file"]).read_text())
    assert best["clip_grad_norm"] in (None, 5.0), "an empty CSV cell comes back as None, not NaN"


def test_exhaustive_search_runs_with_this_hyperopt(tiny, tmp_path, monkeypatch):
    def fake_train(model, dataset, files, config_dict):
        config, *_ = build("SASRec", tiny)
        return 0.1 * config_dict["n_layers"], {}, config

    monkeypatch.setattr("recbole_llm.tuning.train_and_validate", fake_train)
    space = tmp_path / "space.hyper"
    space.write_text("n_layers choice [1,2,3]\n")
    result = tune("SASRec", "tiny", max_evals=3, folds=[1], params_file=space, output_dir=tmp_path,
                  algo="exhaustive", early_stop=100)
    assert sorted(r["n_layers"] for r in result["trials"]) == [1, 2, 3], "every point of the grid once"


def test_the_tune_command_has_its_own_flags_and_keeps_them_from_recbole(tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("llmseqsim_pooling choice ['mean','last']\n")
    done = subprocess.run([sys.executable, "-m", "recbole_llm", "tune", "--model=LLMSeqSim", "--dataset=ml-100k",
                           "--algo=random", "--max_evals=2", "--folds=1", f"--params_file={space}",
                           f"--output_dir={tmp_path / 'study'}", "--state=ERROR", "--show_progress=False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "will not be used" not in output, "the tune command's own flags never reach RecBole's Config"
    assert output.count("trial ") >= 2 and "mean validation" in output, "a progress line per trial"
    assert (tmp_path / "study" / "LLMSeqSim-ml-100k.yaml").exists()
    refused = subprocess.run([sys.executable, "-m", "recbole_llm", "tune", "--model=LLMSeqSim", "--dataset=ml-100k",
                              "--epoch=3", "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert refused.returncode == 2 and "did you mean --epochs" in refused.stderr
