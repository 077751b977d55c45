"""What users import: a change here is a change to the public API and must be deliberate."""
import importlib
import inspect

import recbole_llm
from recbole_llm.registry import registered_models

PUBLIC = {
    "recbole_llm": ["run", "load_data_and_model", "get_model", "register_model", "recommend", "recommend_many",
                    "item_table", "build_fitted_model", "install", "preset_config"],
    "recbole_llm.checkpoints": ["load_checkpoint", "save_checkpoint", "config_hash", "UntrustedCheckpointError"],
    "recbole_llm.llm.states": ["LLMStateStore"],
    "recbole_llm.llm.precision": ["resolve_precision", "cpu_has_native_bf16", "precision_context"],
    "recbole_llm.pipeline": ["Run", "load_data", "build_model", "build"],
    "recbole_llm.prepare": ["prepare", "check_settings"],
    "recbole_llm.patches": ["apply", "applied", "table", "check_recbole_version", "load_checkpoint"],
    "recbole_llm.experiment": ["run_single", "run_plan", "parse_model_spec", "provenance"],
    "recbole_llm.report": ["build_report", "load_runs", "write_tables", "write_plots", "paper_table"],
    "recbole_llm.analysis": ["session_analysis", "shuffled_prompts", "paired_bootstrap", "ndcg_per_session"],
    "recbole_llm.embeddings": ["EmbeddingMismatchError", "EmbeddingSpec", "build_item_embeddings",
                               "item_embedding_table"],
    "recbole_llm.tuning": ["tune"],
}
MODELS = ["LLM2BERT4Rec", "LLM2GRU4Rec", "LLM2SASRec", "LLMSRec", "LLMSeqPrompt", "LLMSeqSim", "LLMSeqSimPopHybrid",
          "LLMSeqSimSeqHybrid", "MostPopular", "SFSKNN", "SKNN", "SKNNEmb", "SSKNN", "VSKNN", "ScoreEnsemble",
          "PaperSASRec", "PaperGRU4Rec", "PaperBERT4Rec", "AlphaFuseSASRec", "AlphaFuseGRU4Rec", "LLMESRSASRec",
          "LLMESRGRU4Rec"]


def test_the_package_exports_exactly_its_public_names():
    assert sorted(recbole_llm.__all__) == sorted(PUBLIC["recbole_llm"])


def test_every_public_name_exists():
    missing = [f"{module}.{name}" for module, names in PUBLIC.items() for name in names
               if not hasattr(importlib.import_module(module), name)]
    assert missing == []


def test_the_registered_models_are_the_documented_ones():
    assert registered_models() == sorted(MODELS)
    for name in MODELS:
        cls = recbole_llm.get_model(name)
        assert list(inspect.signature(cls.__init__).parameters) == ["self", "config", "dataset"], name


def test_the_run_signatures_keep_their_keywords():
    run = inspect.signature(recbole_llm.run).parameters
    assert list(run)[:4] == ["model", "dataset", "config_file_list", "config_dict"]
    build = inspect.signature(importlib.import_module("recbole_llm.pipeline").build).parameters
    assert list(build)[:4] == ["model", "dataset", "config_file_list", "config_dict"]
