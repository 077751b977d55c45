"""The reproduction report: resumable plan, tables and plots."""
import json
from pathlib import Path

import numpy as np
import pytest

from recbole_llm.analysis import ndcg_per_session, paired_bootstrap
from recbole_llm.experiment import parse_model_spec, run_plan
from recbole_llm.report import build_report


def test_model_spec_parsing():
    assert parse_model_spec("SASRec") == ("SASRec", "SASRec", {})
    assert parse_model_spec("perm=LLM2SASRec[embedding_permute=true,hidden_size=32]") == (
        "perm", "LLM2SASRec", {"embedding_permute": True, "hidden_size": 32})
    with pytest.raises(ValueError, match="bad model spec"):
        parse_model_spec("a b")


def test_report_runs_plan_once_and_writes_outputs(tiny, tmp_path, tiny_llm):
    out = tmp_path / "report"
    common = {k: v for k, v in tiny["config"].items() if k != "data_path"}
    prompt = (f"prompt=LLMSeqPrompt[llm_model={tiny_llm},prompt_finetune=false,prompt_samples=3,llm_max_new_tokens=6,"
              f"max_test_sessions=4,llm_answer_cache={tmp_path / 'answers.sqlite'}]")
    specs = ["Pop", "SKNN", "sim-last=LLMSeqSim[llmseqsim_pooling=last]", prompt]
    run_plan(out, "tiny", specs, [1], common, data_path=str(tiny["path"]))
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert set(finished) == {"Pop__seed1.json", "SKNN__seed1.json", "sim-last__seed1.json", "prompt__seed1.json"}
    run_plan(out, "tiny", specs, [1], common, data_path=str(tiny["path"]))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == finished, "finished runs are not redone"
    table = build_report(out)
    assert "| SKNN | 1 |" in table and "serendipity@20" in table
    assert (out / "results.csv").read_text().count("\n") == 5
    assert "| prompt | 1 | 4 |" in table, "sampled test sessions are shown"
    for png in ("hit_rate_by_last_item_popularity.png", "hit_rate_by_last_position.png",
                "llmseqprompt_mapped_similarity.png"):
        assert (out / png).stat().st_size > 1000
    hallucination = (out / "llmseqprompt_hallucination.md").read_text()
    assert "| prompt | 1 |" in hallucination and "hallucination rate" in hallucination, "a table, not a bar chart"
    from recbole_llm.analysis import ndcg_per_session

    for label in ("prompt", "SKNN", "Pop"):  # LLM-scored and general models keep the ranks of their one pass
        ranks = np.load(out / f"{label}__seed1.npz")["rank_cut1"]
        run = json.loads((out / f"{label}__seed1.json").read_text())
        assert len(ranks) == run["test_sessions"]
        # ties count against the target in the ranks, in no particular order in the metric
        assert ndcg_per_session(ranks).mean() <= run["test"]["ndcg@20"] + 1e-4, label


def test_ranks_kept_from_the_one_evaluation_pass_equal_the_session_analysis_ones(tiny):
    """What an LLM-scored run keeps (``_target_ranks`` around the test evaluation) is what every other run's
    per-session analysis computes, session for session, so the two can be paired in a bootstrap."""
    from conftest import build

    from recbole_llm.analysis import session_analysis
    from recbole_llm.experiment import _target_ranks
    from recbole_llm.registry import get_trainer

    config, dataset, (train, _, test), model = build("SKNN", tiny)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, None, saved=False, show_progress=False)
    with _target_ranks(trainer) as ranks:
        trainer.evaluate(test, load_best_model=False, show_progress=False)
    expected = session_analysis(model, test, train._dataset, mask_prompts=bool(config["exclude_session_items"]))
    assert np.array_equal(np.concatenate(ranks), expected["rank_cut1"])
    assert "_full_sort_batch_eval" not in vars(trainer), "the trainer is left as it was"


def test_plots_split_models_into_panels_of_distinct_hues_with_labelled_seed_spread(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recbole_llm.report import PANEL_SIZE, panels, series_style, write_plots

    hues = {tuple(series_style(i)["color"]) for i in range(PANEL_SIZE)}
    assert len(hues) == PANEL_SIZE, "every series of a panel has its own hue"
    assert [len(p) for p in panels([f"m{i:02d}" for i in range(20)])] == [7, 7, 6], "at most 8 lines a panel"
    rng = np.random.default_rng(0)
    runs = []
    for model in range(11):
        for seed in (1, 2):
            sessions = {f"rank_cut{p}": rng.integers(-1, 40, 200) for p in (1, 2, 3, 4, 5)}
            sessions["last_item_popularity"] = rng.integers(1, 100, 200).astype(float)
            runs.append({"label": f"m{model:02d}", "seed": seed, "test": {}, "sessions": sessions})
    saved = []
    original = plt.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved.append({"name": Path(path).name, "axes": [{
            "ticks": [t.get_text() for t in ax.get_xticklabels()], "legend": ax.get_legend(),
            "bars": len(ax.containers), "ylabel": ax.get_ylabel()} for ax in fig.axes]})
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    write_plots(runs, tmp_path)
    names = [s["name"] for s in saved]
    assert names == ["hit_rate_by_last_item_popularity.png", "ndcg_by_last_item_popularity.png",
                     "hit_rate_by_last_position.png"], "NDCG beside the hit rates"
    for plot in saved:
        assert [a["bars"] for a in plot["axes"]] == [6, 5], "11 models in two panels of at most 8"
        assert all("std over seeds" in a["ylabel"] for a in plot["axes"])
        assert all("n=" in t for t in plot["axes"][0]["ticks"])
        assert plot["axes"][0]["legend"].get_bbox_to_anchor().x0 > 0, "legend outside the data"
    assert [t.split("\n")[0] for t in saved[2]["axes"][0]["ticks"]] == ["1", "2", "3", "4", "5"]


def test_shuffled_prompts_permutes_items_within_each_prompt_only():
    import torch
    from recbole.data.interaction import Interaction

    from recbole_llm.analysis import shuffled_prompts

    class Recorder:
        ITEM_SEQ, ITEM_SEQ_LEN = "item_id_list", "item_length"

        def __init__(self):
            self.seen = []

        def full_sort_predict(self, interaction):
            self.seen.append(interaction[self.ITEM_SEQ].clone())
            return torch.zeros(len(interaction))

    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 0, 0], [7, 8, 0, 0, 0, 0, 0, 0]])
    batch = {"item_id_list": seq, "item_length": torch.tensor([6, 2])}
    model = Recorder()
    with shuffled_prompts(model, seed=3):
        for _ in range(5):
            model.full_sort_predict(Interaction(dict(batch)))
    model.full_sort_predict(Interaction(dict(batch)))
    shuffled, plain = model.seen[:5], model.seen[5]
    assert torch.equal(plain, seq), "the original scoring is back after the block"
    for row in shuffled:
        assert sorted(row[0, :6].tolist()) == [1, 2, 3, 4, 5, 6] and row[0, 6:].tolist() == [0, 0]
        assert sorted(row[1, :2].tolist()) == [7, 8] and not row[1, 2:].any()
    assert any(not torch.equal(row[0], seq[0]) for row in shuffled), "the order changes"


@pytest.mark.parametrize("stopped_after", [2, 4], ids=["mid-training", "before-test-evaluation"])
def test_interrupted_run_goes_on_from_its_last_epoch_and_matches_an_uninterrupted_one(tiny, tmp_path, monkeypatch,
                                                                                     stopped_after):
    import recbole_llm.experiment as experiment
    from recbole_llm.trainer import ResumableTraining

    common = {k: v for k, v in tiny["config"].items() if k not in ("data_path", "checkpoint_dir")}
    common.update(epochs=4, stopping_step=10)

    def run(name, **extra):
        overrides = {**common, "checkpoint_dir": str(tmp_path / name), **extra}
        return experiment.run_single("SASRec", "tiny", 3, tmp_path / name / "SASRec__seed3.json", overrides,
                                 data_path=str(tiny["path"]))

    whole = run("whole")

    class Stopped(Exception):
        pass

    save = ResumableTraining._save
    saves = []

    def save_then_stop(self, epoch):
        save(self, epoch)
        saves.append(epoch)
        if len(saves) == stopped_after:
            raise Stopped

    monkeypatch.setattr(ResumableTraining, "_save", save_then_stop)
    with pytest.raises(Stopped):
        run("cut")
    monkeypatch.setattr(ResumableTraining, "_save", save)
    resume = tmp_path / "cut" / "SASRec__seed3.resume.pth"
    assert saves == list(range(stopped_after)) and resume.exists()
    assert not (tmp_path / "cut" / "SASRec__seed3.json").exists()

    with pytest.raises(ValueError, match="learning_rate changed"):  # the same resume file, another setting
        run("cut", learning_rate=0.5)
    resumed = run("cut")
    assert resumed["resumed_at_epoch"] == stopped_after and resumed["epochs"] == 4 and not resume.exists()
    assert resumed["train_loss"] == whole["train_loss"], "same batches, same dropout, same optimizer state"
    assert resumed["valid"] == pytest.approx(whole["valid"]) and resumed["test"] == pytest.approx(whole["test"])


@pytest.mark.parametrize("damage", ["truncated", "another torch file"])
def test_a_damaged_or_foreign_resume_file_is_one_clear_error_naming_it(tiny, tmp_path, monkeypatch, damage):
    import torch

    import recbole_llm.experiment as experiment
    from recbole_llm.errors import SettingError
    from recbole_llm.trainer import ResumableTraining

    overrides = {k: v for k, v in tiny["config"].items() if k not in ("data_path", "checkpoint_dir")}
    overrides.update(epochs=3, stopping_step=10, checkpoint_dir=str(tmp_path / "saved"))
    out = tmp_path / "SASRec__seed1.json"
    save = ResumableTraining._save

    def save_then_stop(self, epoch):
        save(self, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumableTraining, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_single("SASRec", "tiny", 1, out, overrides, data_path=str(tiny["path"]))
    monkeypatch.setattr(ResumableTraining, "_save", save)
    resume = out.with_suffix(".resume.pth")
    if damage == "truncated":
        resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])
    else:
        torch.save({"state_dict": {}}, resume)
    with pytest.raises(SettingError, match="resume file .*SASRec__seed1.resume.pth.*delete it to start the run again"):
        experiment.run_single("SASRec", "tiny", 1, out, overrides, data_path=str(tiny["path"]))


def test_a_run_records_the_precision_it_trained_in(tiny, tmp_path):
    """``train_precision: auto`` is hashed as asked (like the device): the result says what this machine made of it."""
    import recbole_llm.experiment as experiment
    from recbole_llm.llm.precision import cpu_has_native_bf16

    overrides = {k: v for k, v in tiny["config"].items() if k not in ("data_path", "checkpoint_dir")}
    overrides.update(epochs=1, checkpoint_dir=str(tmp_path / "saved"), train_precision="auto")
    result = experiment.run_single("PaperSASRec", "tiny", 1, tmp_path / "PaperSASRec__seed1.json", overrides,
                                   data_path=str(tiny["path"]))
    assert result["trained_in"] == ("bf16" if cpu_has_native_bf16() else "fp32")
    del overrides["train_precision"]
    result = experiment.run_single("SASRec", "tiny", 1, tmp_path / "SASRec__seed1.json", overrides,
                                   data_path=str(tiny["path"]))
    assert result["trained_in"] == "fp32"


def test_ndcg_per_session_matches_the_rank_formula():
    values = ndcg_per_session(np.array([1, 3, 20, 21, -1]), k=20)
    assert np.allclose(values, [1.0, 0.5, 1 / np.log2(21), 0.0, 0.0])


def test_paired_bootstrap_separates_a_real_gap_from_none():
    rng = np.random.default_rng(1)
    ranks = rng.integers(1, 60, size=500)
    mean, low, high = paired_bootstrap(ranks, ranks)
    assert mean == low == high == 0.0
    better = np.where(rng.random(500) < 0.3, 1, ranks)  # 30% of sessions move the target to rank 1
    mean, low, high = paired_bootstrap(better, ranks)
    assert 0 < low < mean < high
    with pytest.raises(ValueError, match="same sessions"):
        paired_bootstrap(ranks, ranks[:10])


def test_paired_bootstrap_pools_seeds_over_the_same_sessions():
    rng = np.random.default_rng(2)
    ranks = rng.integers(1, 60, size=(2, 500))
    better = np.where(rng.random(500) < 0.3, 1, ranks[0])
    single, _, _ = paired_bootstrap(better, ranks[0])
    pooled, low, high = paired_bootstrap(np.stack([better, ranks[1]]), ranks)
    assert pooled == pytest.approx(single / 2), "the seed that did not move adds no gap"
    assert low < pooled < high
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap(ranks, ranks[:1])


def test_an_experiment_file_rebuilds_the_paper_comparison_from_finished_runs(tmp_path):
    import json

    import yaml

    from recbole_llm.experiment import load_experiment, run_experiment

    metrics = {m: 0.1 for m in ("ndcg@10", "hit@10", "hit@20", "mrr@10", "mrr@20", "catalogcoverage@10",
                                "catalogcoverage@20", "serendipity@10", "serendipity@20", "novelty@10",
                                "novelty@20", "intralistdiversity@10", "intralistdiversity@20")}

    def finished(folder, label, seed, ndcg):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{label}__seed{seed}.json").write_text(json.dumps({
            "model": label, "seed": seed, "test": {**metrics, "ndcg@20": ndcg}, "sec_per_epoch": 1.0, "epochs": 1,
            "eval_seconds": 1.0, "wall_seconds": 2.0, "test_sessions": 50}))

    root = tmp_path / "repo"
    (root / "benchmarks" / "experiments").mkdir(parents=True)
    finished(root / "results" / "main", "SASRec", 1, 0.04)
    finished(root / "results" / "main", "SASRec", 2, 0.06)
    finished(root / "results" / "main", "Pop", 1, 0.01)
    finished(root / "results" / "other", "Pop", 1, 0.02)
    (root / "table4.yaml").write_text(yaml.safe_dump({
        "SASRec": {"name": "SASRec", "ndcg": 0.05, "hit": 0.1, "coverage": 0.1},
        "Pop": {"name": "MostPopular", "ndcg": 0.01, "hit": 0.02, "coverage": 0.002}}))
    (root / "notes.md").write_text("## What differs\n- nothing here\n")
    experiment = root / "benchmarks" / "experiments" / "tiny.yaml"
    experiment.write_text(yaml.safe_dump({
        "title": "Tiny", "dataset": "tiny", "models": ["Pop", "SASRec"], "seeds": [1, 2], "out": "results/main",
        "paper": "table4.yaml", "compare": {"other order": "results/other"}, "notes": "notes.md"}))
    assert load_experiment(experiment)["out"] == str(root / "results" / "main"), "paths from the repository root"
    text = run_experiment(experiment, tables_only=True)
    leaderboard = (root / "results" / "main" / "leaderboard.md").read_text()
    assert text == leaderboard and leaderboard.startswith("# Tiny")
    sasrec = next(line for line in leaderboard.splitlines() if line.startswith("| SASRec"))
    assert "| 2 | 0.0500 ± 0.0141 | 0.050 | 1.00 |" in sasrec and sasrec.endswith("| - |")
    pop = next(line for line in leaderboard.splitlines() if line.startswith("| Pop"))
    assert "| 1 | 0.0100 | 0.010 | 1.00 |" in pop and pop.endswith("| 0.0200 |"), "one run: no ± 0"
    assert "--experiment" in leaderboard and leaderboard.rstrip().endswith("- nothing here")
    (root / "results" / "main" / "results.csv").exists()
    with pytest.raises(ValueError, match=r"--only names no run of this file: \['SASrec'\]; its labels are \['Pop', "):
        run_experiment(experiment, only=["SASRec", "SASrec"])
    for override in ({"settings": {"epochs": 1}}, {"dataset": "ml-100k"}):  # the committed runs stay where they are
        with pytest.raises(ValueError, match="give --out"):
            run_experiment(experiment, **override)
    assert sorted(p.name for p in (root / "results" / "main").glob("*.json")) == \
        ["Pop__seed1.json", "SASRec__seed1.json", "SASRec__seed2.json"]
    experiment.write_text(yaml.safe_dump({"dataset": "tiny", "models": ["Pop"], "out": "x", "seed": [1]}))
    with pytest.raises(ValueError, match=r"unknown keys \['seed'\]"):
        load_experiment(experiment)


def test_convergence_compares_runs_at_a_validation_level_every_run_reaches(tmp_path):
    from recbole_llm.report import write_convergence

    runs = [{"label": "fast", "seed": 1, "sec_per_epoch": 10.0, "epochs": 3,
             "valid_curve": [{"epoch": 0, "valid_score": 0.1, "wall_seconds": 10},
                             {"epoch": 1, "valid_score": 0.3, "wall_seconds": 20},
                             {"epoch": 2, "valid_score": 0.2, "wall_seconds": 30}]},
            {"label": "slow", "seed": 1, "sec_per_epoch": 40.0, "epochs": 2,
             "valid_curve": [{"epoch": 0, "valid_score": 0.25, "wall_seconds": 40},
                             {"epoch": 1, "valid_score": 0.2, "wall_seconds": 80}]},
            {"label": "no-curve", "seed": 1, "sec_per_epoch": 0.0, "epochs": 1}]
    text = write_convergence(runs, tmp_path)
    assert text.startswith("Validation level every run reaches (the lowest best score): 0.2500")
    assert "| fast | 1 | 10.0 | 3 | 0.3000 | 1 | 20 | 1.000 | 1.000 |" in text, "0.3 at epoch 1 is the first >= 0.25"
    assert "| slow | 1 | 40.0 | 2 | 0.2500 | 0 | 40 | 4.000 | 2.000 |" in text
    assert "no-curve" not in text and (tmp_path / "convergence.md").read_text().strip() == text
    assert write_convergence(runs[:1], tmp_path) is None


def test_convergence_to_a_reference_runs_best_says_which_never_reach_it(tmp_path):
    """``convergence_reference``: the level is that run's best (RecBole's prefix trainer's, in the speed issue), it
    comes first, and a run that never reaches the level says so instead of being compared at a lower one."""
    from recbole_llm.errors import MissingFileError
    from recbole_llm.report import write_convergence

    def run(label, per_epoch, scores):
        return {"label": label, "seed": 1, "sec_per_epoch": per_epoch, "epochs": len(scores),
                "valid_curve": [{"epoch": i, "valid_score": s, "wall_seconds": per_epoch * (i + 1)}
                                for i, s in enumerate(scores)]}

    runs = [run("new", 10.0, [0.1, 0.3]), run("recbole", 40.0, [0.2, 0.25, 0.1]), run("worse", 5.0, [0.1, 0.2])]
    text = write_convergence(runs, tmp_path, reference="recbole")
    assert text.startswith("Validation level: the best score of recbole: 0.2500")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| recbole | 1 | 40.0 | 3 | 0.2500 | 1 | 80 | 1.000 | 1.000 |",
                    "| new | 1 | 10.0 | 2 | 0.3000 | 1 | 20 | 0.250 | 0.250 |",
                    "| worse | 1 | 5.0 | 2 | 0.2000 | never | - | 0.125 | - |"]
    with pytest.raises(MissingFileError, match="convergence_reference 'prefixes'"):
        write_convergence(runs, tmp_path, reference="prefixes")


def test_a_grid_crosses_every_model_with_its_axes_and_folds_go_last():
    from recbole_llm.experiment import expand_grid

    grid = {"temporal_fold": [1, 2], "llmseqsim_pooling": ["mean", "last"],
            "recipe": {"pca8": {"embedding_reduction": "pca", "embedding_dim": 8}, "raw": {"embedding_dim": None}}}
    specs = expand_grid(["LLMSeqSim", "hyb=LLMSeqSimSeqHybrid[hybrid_sequential_config={sknn_k: 5}]"],
                        {**grid, "partner": {"same": {"hybrid_sequential_config": {"embedding_model": "m"}}}})
    assert len(specs) == 2 * 2 * 2 * 2
    parsed = {label: (model, overrides) for label, model, overrides in map(parse_model_spec, specs)}
    assert parsed["LLMSeqSim-mean-pca8-same-fold2"] == ("LLMSeqSim", {
        "llmseqsim_pooling": "mean", "embedding_reduction": "pca", "embedding_dim": 8,
        "hybrid_sequential_config": {"embedding_model": "m"}, "temporal_fold": 2})
    model, overrides = parsed["hyb-last-raw-same-fold1"]
    assert model == "LLMSeqSimSeqHybrid" and overrides["embedding_dim"] is None
    assert overrides["hybrid_sequential_config"] == {"sknn_k": 5, "embedding_model": "m"}, "dicts merge"
    with pytest.raises(ValueError, match="grid axis 'x'"):
        expand_grid(["Pop"], {"x": []})


def test_the_fold_table_ranks_candidates_by_their_mean_over_folds(tmp_path):
    import json

    from recbole_llm.report import write_fold_table

    def run(label, fold, ndcg):
        (tmp_path / f"{label}-fold{fold}__seed1.json").write_text(json.dumps({
            "model": "LLMSeqSim", "seed": 1, "overrides": {"temporal_fold": fold}, "test": {"ndcg@20": ndcg},
            "valid": {}, "sec_per_epoch": 0, "epochs": 1, "eval_seconds": 1, "wall_seconds": 1}))

    for fold, (a, b) in enumerate([(0.10, 0.30), (0.20, 0.05), (0.30, 0.05)], start=1):
        run("A", fold, a), run("B", fold, b)
    run("C", 1, 0.9)  # one fold only: no mean, listed last
    from recbole_llm.report import load_runs

    table = write_fold_table(load_runs(tmp_path), tmp_path)
    rows = [line for line in table.splitlines()[2:]]
    assert rows[0] == "| A | 0.1000 | 0.2000 | 0.3000 | 0.2000 |"
    assert rows[1].startswith("| B |") and rows[1].endswith("| 0.1333 |")
    assert rows[2] == "| C | 0.9000 | - | - | - |"
    assert (tmp_path / "folds.md").read_text().count("validation") >= 1


def test_the_order_test_scores_the_same_sessions_with_shuffled_prompts(tiny, tmp_path):
    import json

    common = {k: v for k, v in tiny["config"].items() if k != "data_path"}
    out = tmp_path / "order"
    run_plan(out, "tiny", ["Pop", "SKNN"], [1], {**common, "report_order_test": True}, data_path=str(tiny["path"]))
    pop, sknn = (json.loads((out / f"{m}__seed1.json").read_text()) for m in ("Pop", "SKNN"))
    assert pop["test_shuffled"] == pop["test"], "Pop never reads the prompt"
    assert set(sknn["test_shuffled"]) == set(sknn["test"])
    table = build_report(out)
    assert "NDCG@20, shuffled prompts" in table and "| +0.0% |" in table


def test_embedding_speed_is_measured_on_local_models_only(tiny, capsys):
    from recbole_llm.__main__ import main

    assert main(["embed", "--dataset", "tiny", "--data_path", str(tiny["path"]), "--speed", "8"]) == 0
    assert "titles/s (8 titles" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="local embedders only"):
        main(["embed", "--dataset", "tiny", "--data_path", str(tiny["path"]), "--speed", "8", "--provider", "openai"])


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
EXPERIMENT_FILES = sorted((BENCHMARKS / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: p.name)
def test_every_committed_experiment_file_names_known_models_once_each(path):
    """A typo in a committed experiment file should fail here, not hours into a run."""
    from recbole_llm.experiment import load_experiment
    from recbole_llm.registry import get_model

    spec = load_experiment(path)
    parsed = [parse_model_spec(m) for m in spec["models"]]
    labels = [label for label, _, _ in parsed]
    assert len(labels) == len(set(labels)), f"{path.name}: a label appears twice"
    for _, model, _ in parsed:
        get_model(model)  # raises on an unknown model name
    assert Path(spec["out"]).is_relative_to(BENCHMARKS / "results")


def test_jobs_default_to_one_run_per_core_and_one_where_a_gpu_is_visible(monkeypatch):
    import torch

    from recbole_llm import experiment

    monkeypatch.setattr(experiment.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert experiment.default_jobs(1) == 2 and experiment.default_jobs(2) == 1 and experiment.default_jobs(4) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert experiment.default_jobs(1) == 1


def test_jobs_side_by_side_give_the_same_runs_as_one_after_another(tiny, tmp_path):
    """``--jobs 2``: the same per-run results as ``--jobs 1`` (each run is its own seeded process)."""
    import json

    common = {k: v for k, v in tiny["config"].items() if k != "data_path"}
    specs = ["PaperSASRec[train_mode=all_positions]", "PaperGRU4Rec[train_mode=all_positions]"]
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        run_plan(out, "tiny", specs, [1, 2], common, data_path=str(tiny["path"]), jobs=jobs)
        results[jobs] = {p.name: json.loads(p.read_text())["test"] for p in sorted(out.glob("*.json"))}
    assert len(results[1]) == 4 and results[1] == results[2]
    with pytest.raises(ValueError, match="--jobs"):
        run_plan(tmp_path / "x", "tiny", specs, [1], common, jobs=0)


def test_a_finished_run_is_reused_only_under_the_same_resolved_settings(tiny, tmp_path):
    import json

    out = tmp_path / "plan"
    common = {k: v for k, v in tiny["config"].items() if k != "data_path"}
    run_plan(out, "tiny", ["Pop"], [1], common, data_path=str(tiny["path"]))
    first = json.loads((out / "Pop__seed1.json").read_text())
    assert first["config_hash"]
    run_plan(out, "tiny", ["Pop"], [1], common, data_path=str(tiny["path"]))
    assert json.loads((out / "Pop__seed1.json").read_text()) == first, "same settings: reused"
    run_plan(out, "tiny", ["Pop[topk=[5,20]]"], [1], common, data_path=str(tiny["path"]))
    again = json.loads((out / "Pop__seed1.json").read_text())
    assert again["config_hash"] != first["config_hash"] and "ndcg@5" in again["test"], "other settings: run again"
    assert [json.loads(p.read_text())["config_hash"] for p in out.glob("Pop__seed1.stale-*.json")] == [
        first["config_hash"]], "the earlier run is kept, under another name"
    from recbole_llm.report import load_runs

    assert [r["label"] for r in load_runs(out)] == ["Pop"], "and left out of the tables"


def test_an_ensemble_row_runs_after_the_rows_whose_run_files_it_reads(tmp_path):
    from recbole_llm.experiment import waves

    out = tmp_path / "results"
    member = ("SASRec-teacher", "PaperSASRec", 1, {}, out / "SASRec-teacher__seed1.json")
    other = ("LLMSeqSim", "LLMSeqSim", 1, {}, out / "LLMSeqSim__seed1.json")
    ensemble = ("Ens", "ScoreEnsemble", 1, {"ensemble_members": [
        {"model": "PaperSASRec", "checkpoint": f"{out}/SASRec-teacher__seed{{seed}}.json"}, {"model": "LLMSeqSim"}]},
        out / "Ens__seed1.json")
    assert waves([ensemble, member, other], out) == [[member, other], [ensemble]]
    assert waves([member, other], out) == [[member, other]]
    relative = (ensemble[0], ensemble[1], 1, {"ensemble_members": [
        {"model": "PaperSASRec", "checkpoint": "results/SASRec-teacher__seed{seed}.json"}]}, ensemble[4])
    assert waves([relative, member], out.resolve()) == [[member], [relative]], "experiment files name run files relatively"


def test_a_headline_table_shows_only_clean_runs_or_marked_rows_with_their_reason(tmp_path):
    from recbole_llm.report import provenance_cell, write_tables

    def run(label, seed, sha, dirty):
        made = {"git_sha": sha, "git_dirty": dirty} if sha else None
        return {"label": label, "seed": seed, "test": {"ndcg@20": 0.05}, "sec_per_epoch": 1.0, "epochs": 1,
                "eval_seconds": 1.0, "wall_seconds": 1.0, "provenance": made}

    runs = [run("Clean", 1, "abc1234def", False), run("Dirty", 1, "abc1234def", True), run("Old", 1, None, None),
            run("Old", 2, "abc1234def", False)]
    table = write_tables(runs, tmp_path, headline=True, unclean={"Old": "made before provenance; rerun pending"})
    assert "| Clean |" in table and "Dirty" not in table, "an unmarked dirty row is left out"
    assert "| Old† |" in table and "- Old†: clean 1, none 1; made before provenance; rerun pending" in table
    assert "clean abc1234" in table
    assert provenance_cell([runs[1]]) == "dirty 1"
    everything = write_tables(runs, tmp_path)
    assert "| Dirty |" in everything and "dirty 1" in everything, "outside headline tables every row shows"


def test_two_processes_never_write_the_same_run(tmp_path):
    import fcntl

    from recbole_llm.experiment import run_single

    out = tmp_path / "runs" / "Pop__seed1.json"
    out.parent.mkdir()
    with open(out.with_name(out.name + ".lock"), "a+") as held:  # another process is running it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another process is already running Pop__seed1.json"):
            run_single("Pop", "tiny", 1, out)
    assert not out.exists()


_STOPPABLE_PLAN = """
import signal, sys, time
from pathlib import Path
from recbole_llm import experiment

signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises even where the shell left SIGINT ignored
markers = Path(sys.argv[1])
stubborn = sys.argv[3] == "twice"  # runs that ignore SIGTERM: the report must SIGKILL them after its grace period
experiment.STOP_GRACE_SECONDS = 3.0
def sleeper(model, dataset, seed, target, threads, settings, data_path):
    marker = Path(markers, target.stem)
    code = ("import os, signal, time; from pathlib import Path; "
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if stubborn else "") +
            f"Path({str(marker)!r} + '.tmp').write_text(str(os.getpid())); "
            f"os.replace({str(marker)!r} + '.tmp', {str(marker)!r}); time.sleep(120)")
    return [sys.executable, "-c", code]
experiment.run_one_command = sleeper
experiment.run_plan(markers / "out", "tiny", ["A=Pop", "B=Pop", "C=Pop"], [1], {}, jobs=int(sys.argv[2]))
"""


@pytest.mark.parametrize("signal_name,jobs,times", [("SIGTERM", 1, "once"), ("SIGINT", 1, "once"),
                                                     ("SIGTERM", 2, "once"), ("SIGTERM", 2, "twice")])
def test_a_stopped_report_stops_its_runs_and_starts_no_other(tmp_path, signal_name, jobs, times):
    """A report told to stop (SIGTERM, Ctrl-C) stops the runs under way and starts none of the queued ones, also when
    told twice while its runs ignore SIGTERM (they are killed after the grace period). Until stop 56 a SIGTERM let
    the pool start the next queued run when the current one died."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "plan.py"
    script.write_text(_STOPPABLE_PLAN)
    root = Path(__file__).resolve().parents[1]  # this checkout's package, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    report = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(jobs), times],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env)
    started = {}
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*__seed1"))) < jobs and time.monotonic() < deadline:
            assert report.poll() is None, report.stdout.read().decode()
            time.sleep(0.2)
        started = {p.name: int(p.read_text()) for p in tmp_path.glob("*__seed1")}
        assert len(started) == jobs
        report.send_signal(getattr(signal, signal_name))  # the report alone, not its process group
        if times == "twice":
            time.sleep(0.5)
            report.send_signal(getattr(signal, signal_name))
        report.wait(timeout=60)
        assert report.returncode != 0
        time.sleep(1.0)
        assert {p.name for p in tmp_path.glob("*__seed1")} == set(started), "a queued run was started"
        for pid in started.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "report stopped by " + ("Ctrl-C" if signal_name == "SIGINT" else "SIGTERM") in (
            report.stdout.read().decode())
    finally:  # nothing left running, whatever failed
        if report.poll() is None:
            report.kill()
        for pid in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_run_saved_before_the_hash_is_current_where_its_settings_resolve_to_the_asked_ones(tiny, tmp_path):
    """A run recorded before config hashes (its overrides only) is not trained again where an override it recorded
    is now the preset's value (beauty.yaml's BERT4Rec rows recorded ``bert_padding: left_mask``, the preset's now)."""
    import json

    from recbole_llm.experiment import finished_run_is_current

    common = {k: v for k, v in tiny["config"].items() if k != "data_path"}
    target = tmp_path / "Pop__seed1.json"

    def saved(overrides):
        target.write_text(json.dumps({"model": "Pop", "overrides": overrides, "test": {}}))
        return finished_run_is_current(target, "Pop", "tiny", 1, common, str(tiny["path"]))

    assert saved(dict(common)), "the same overrides"
    assert saved({**common, "topk": [10, 20]}), "an override at the preset's value (properties/overall.yaml)"
    assert not saved({**common, "topk": [5, 20]}), "an override of another value"
