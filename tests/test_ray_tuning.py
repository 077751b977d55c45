"""Tuning on Ray Tune (``tune --backend ray``): trials as Ray tasks of one CPU, TPE after random warm-up, ASHA on
the per-epoch validation score, never the test split; failed trials recorded, the experiment resumable."""
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")  # Ray Tune's result storage


@pytest.fixture
def local_ray():
    yield
    ray.shutdown()


def test_ray_tune_runs_trials_on_the_folds_records_failures_and_resumes(tiny, tmp_path, local_ray, capsys):
    from recbole_llm.ray_tuning import tune_on_ray

    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.001,0.01]\ninner_size choice [32,-32]\n")
    base = {**tiny["config"], "epochs": 2, "stopping_step": 5}
    from recbole_llm.presets import config_files

    first = [{"learning_rate": 0.01, "inner_size": 32}, {"learning_rate": 0.01, "inner_size": -32}]
    kwargs = dict(max_evals=3, folds=[1, 2], params_file=space, base_config=base, warmup=3,
                  config_file_list=config_files(None, "PaperSASRec", "tiny", "paper"),
                  output_dir=tmp_path / "tuning", seed=3, points_to_evaluate=first)
    result = tune_on_ray("PaperSASRec", "tiny", **kwargs)
    rows = pd.read_csv(tmp_path / "tuning" / "PaperSASRec-tiny.csv")
    assert len(rows) == 3 and set(rows["status"].str[:6]) <= {"ok", "failed"}
    failed = rows[rows["status"].str.startswith("failed")]
    assert len(failed) >= 1 and (failed["inner_size"] == -32).all(), "a failing trial is recorded, not fatal"
    assert "inner_size=-32: a whole number" in failed["status"].iloc[0], "the cause, not Ray's traceback"
    assert (rows[rows["status"] == "ok"]["inner_size"] == 32).all()
    ok = rows[rows["status"] == "ok"]
    assert ok["score"].between(0, 1).all() and set(ok["folds_run"]) <= {1, 2}
    assert (ok[~ok["pruned"]]["folds_run"] == 2).all(), "a trial counts as complete only after every fold"
    assert result["best_score"] == pytest.approx(ok[ok["folds_run"] == 2]["score"].max())
    assert "# rerun: python run_recbole_llm.py --model=PaperSASRec" in (tmp_path / "tuning" / "PaperSASRec-tiny.yaml").read_text()
    ray.shutdown()
    again = tune_on_ray("PaperSASRec", "tiny", **kwargs)
    assert "resuming the Ray Tune experiment" in capsys.readouterr().out, "the experiment folder is Ray's, resumed"
    seconds = pd.read_csv(tmp_path / "tuning" / "PaperSASRec-tiny.csv")["seconds"].fillna(-1).tolist()
    assert seconds == rows["seconds"].fillna(-1).tolist(), \
        "a finished experiment resumes without running its trials again"
    assert again["best_score"] == result["best_score"]


def test_fold_trial_reports_the_running_mean_over_folds_and_never_tests(tiny, monkeypatch):
    from ray.air import session

    from recbole_llm.presets import config_files
    from recbole_llm.ray_tuning import fold_trial
    from recbole_llm.trainer import Trainer

    from recbole_llm import pipeline

    reports, runs, evaluated = [], [], []
    monkeypatch.setattr(session, "report", lambda metrics: reports.append(metrics))
    build = pipeline.build
    monkeypatch.setattr(pipeline, "build", lambda *a, **k: runs.append(build(*a, **k)) or runs[-1])
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate",
                        lambda self, data, *a, **k: evaluated.append(data) or evaluate(self, data, *a, **k))
    fold_trial({"learning_rate": 0.01}, model="PaperSASRec", dataset="tiny", folds=(1, 2),
               config_file_list=config_files(None, "PaperSASRec", "tiny", "paper"),
               base_config={**tiny["config"], "epochs": 2, "stopping_step": 5})
    assert [r["fold"] for r in reports] == [1, 1, 2, 2, 2], "one report per validated epoch, then the final one"
    assert [r["complete"] for r in reports] == [False] * 4 + [True]
    assert [r["first_fold_epochs"] for r in reports] == [1, 2, 2, 2, 2], "ASHA's clock stops after fold 1"
    assert reports[1]["mean_valid_score"] == max(r["mean_valid_score"] for r in reports[:2])
    assert reports[3]["folds_done"] == 1 and min(r["mean_valid_score"] for r in reports) >= 0
    valid = {id(run.valid_data) for run in runs}
    assert evaluated and all(id(data) in valid for data in evaluated), "only the folds' validation was evaluated"
    assert not any(data is run.test_data for run in runs for data in evaluated)


def test_ray_on_ml100k_trials_side_by_side_give_what_one_gives(tmp_path, local_ray, embedding_cache):
    """ml-100k (RecBole's own copy) with a tiny budget: two trials of the same configuration and seed, run side by
    side on the local Ray's two CPUs, score exactly alike, and exactly as the same trial run alone."""
    from recbole_llm.presets import config_files
    from recbole_llm.ray_tuning import tune_on_ray

    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.001,0.002]\n")
    point = {"learning_rate": 0.002}
    base = {"epochs": 1, "stopping_step": 2, "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1,
            "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 1024, "metrics": ["NDCG", "Hit"], "show_progress": False,
            "state": "ERROR", "embedding_cache_path": str(embedding_cache)}
    kwargs = dict(folds=[1], params_file=space, base_config=base, warmup=3, seed=0,
                  config_file_list=config_files(None, "PaperSASRec", "ml-100k", "paper"))
    tune_on_ray("PaperSASRec", "ml-100k", max_evals=2, output_dir=tmp_path / "pair", max_concurrent=2,
                points_to_evaluate=[point, point], **kwargs)
    pair = pd.read_csv(tmp_path / "pair" / "PaperSASRec-ml-100k.csv")
    assert (pair["status"] == "ok").all() and len(pair) == 2
    tune_on_ray("PaperSASRec", "ml-100k", max_evals=1, output_dir=tmp_path / "alone", max_concurrent=1,
                points_to_evaluate=[point], **kwargs)
    alone = pd.read_csv(tmp_path / "alone" / "PaperSASRec-ml-100k.csv")
    assert pair["score"].tolist() == [alone["score"].iloc[0]] * 2
