"""The presets: paper (reproduction) and best (what validation chose beyond the paper), one rule for every caller."""
import pytest

from recbole_llm.presets import PROPERTIES_DIR, config_files


def test_best_reads_the_papers_file_then_its_own_and_paper_is_unchanged():
    paper = config_files(None, "PaperSASRec", "beauty")
    best = config_files(None, "PaperSASRec", "beauty", "best")
    assert paper == [str(PROPERTIES_DIR / "overall.yaml"), str(PROPERTIES_DIR / "paper/beauty/PaperSASRec.yaml")]
    assert best == paper + [str(PROPERTIES_DIR / "best/beauty/PaperSASRec.yaml")]
    assert config_files(None, "LLM2SASRec", "beauty", "best") == config_files(None, "LLM2SASRec", "beauty"), \
        "no best file: the paper's configuration"
    with pytest.raises(ValueError, match="preset must be one of paper, best"):
        config_files(None, "PaperSASRec", "beauty", "newest")


def test_every_best_file_says_which_validation_evidence_chose_it():
    for path in (PROPERTIES_DIR / "best").rglob("*.yaml"):
        text = path.read_text()
        assert "validation" in text and "preset: best" in text, path
        assert "benchmarks/results/" in text, f"{path}: name the committed runs behind the choice"


def test_the_best_ensemble_trains_its_members_with_the_best_presets_files(tiny):
    from recbole.config import Config

    from recbole_llm.model.ensemble import member_files_and_settings, member_specs

    config = Config(model="ScoreEnsemble", dataset="beauty", config_file_list=config_files(None, "ScoreEnsemble",
                    "beauty", "best"), config_dict={"data_path": str(tiny["path"]), "checkpoint_dir": "saved"})
    specs = member_specs(config)
    assert [s["model"] for s in specs] == ["PaperSASRec", "LLM2SASRec", "LLMSeqSim", "LLMESRSASRec", "LLMESRGRU4Rec"]
    assert [s["train"] for s in specs] == [True, True, False, True, True]
    for spec in specs:  # each member runs the best preset's files of its model
        files, _ = member_files_and_settings(config, spec)
        assert files == config_files(None, spec["model"], "beauty", "best"), spec["model"]
    assert member_files_and_settings(config, specs[4])[0][-1].endswith("best/beauty/LLMESRGRU4Rec.yaml")


def test_preset_config_gives_recboles_own_flow_the_protocol(tiny):
    from recbole.data import create_dataset, data_preparation

    import recbole_llm

    config = recbole_llm.preset_config("PaperSASRec", "tiny", config_dict={**tiny["config"], "epochs": 1})
    assert config["train_mode"] == "prefixes" and config["exclude_session_items"] is True
    assert "SESSION" in config["eval_args"]["split"], "the paper's temporal session split, not RecBole's default"
    train, valid, test = data_preparation(config, create_dataset(config))
    assert len(test.dataset.inter_feat) > 0
    with pytest.raises(ValueError, match="preset must be one of"):
        recbole_llm.preset_config("PaperSASRec", "tiny", "newest")


@pytest.mark.parametrize("model, fold_label", [("LLMESRSASRec", "LLMESRSASRec48-scalenone"),
                                               ("LLMESRGRU4Rec", "LLMESRGRU4Rec")])
def test_a_best_file_runs_the_fold_row_that_chose_it(model, fold_label):
    """The best preset's files were written by hand from the fold rows they cite: each must resolve to the settings
    that row ran with, or the preset would run a configuration no fold measured."""
    import yaml
    from recbole.config import Config

    from recbole_llm.experiment import parse_model_spec

    folds = yaml.safe_load((PROPERTIES_DIR.parent / "benchmarks/experiments/beauty_semantic_folds.yaml").read_text())
    rows = {label: (name, overrides) for label, name, overrides in map(parse_model_spec, folds["models"])}
    name, overrides = rows[fold_label]
    assert name == model
    ran = Config(model=model, dataset="beauty", config_file_list=config_files(None, model, "beauty"),
                 config_dict={**folds["set"], **overrides})
    best = Config(model=model, dataset="beauty", config_file_list=config_files(None, model, "beauty", "best"))
    best_keys = set(yaml.safe_load(open(config_files(None, model, "beauty", "best")[-1]))) - {"preset"}
    for key in (set(folds["set"]) | set(overrides) | best_keys) - {"session_tie_order"}:
        assert best[key] == ran[key], f"{model}: {key} is {best[key]!r} in the best preset, {ran[key]!r} on the folds"


def test_the_paper_preset_keeps_llm2bert4recs_faithful_training(tiny):
    """LLM2BERT4Rec's own defaults train in bf16 (where the hardware has it) with uniform dropout; the paper preset
    keeps fp32 and torch's dropout, which reproduce its committed rows."""
    from recbole.config import Config

    import recbole_llm  # noqa: F401

    settings = {"data_path": str(tiny["path"]), "checkpoint_dir": "saved"}
    paper = Config(model="LLM2BERT4Rec", dataset="beauty", config_file_list=config_files(None, "LLM2BERT4Rec", "beauty"),
                   config_dict=settings)
    assert (paper["train_precision"], paper["dropout_sampler"]) == ("fp32", "torch")
    own = Config(model="LLM2BERT4Rec", dataset="tiny", config_dict=settings)
    assert (own["train_precision"], own["dropout_sampler"]) == ("auto", "uniform")


def test_the_paper_preset_keeps_llm2sasrecs_fp32(tiny):
    """LLM2SASRec's own default trains in bf16 where the hardware has it (validated on the folds in stop 48); the
    paper preset keeps fp32, which made its committed rows."""
    from recbole.config import Config

    import recbole_llm  # noqa: F401

    settings = {"data_path": str(tiny["path"]), "checkpoint_dir": "saved"}
    paper = Config(model="LLM2SASRec", dataset="beauty", config_file_list=config_files(None, "LLM2SASRec", "beauty"),
                   config_dict=settings)
    assert paper["train_precision"] == "fp32"
    own = Config(model="LLM2SASRec", dataset="tiny", config_dict=settings)
    assert own["train_precision"] == "auto"
