"""Shared helpers of the benchmark scripts (run by hand, never by the test suite)."""
from __future__ import annotations

import os
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECBOLE_LLM_SHARED", ROOT.parent / "shared")) / "data"
DATA_PATH = ROOT / "dataset"


def build_beauty(force: bool = False) -> dict | None:
    """dataset/beauty from the paper's staged tables in ../shared/data (the library's builder)."""
    from recbole_llm.data.datasets import build_paper_beauty

    return build_paper_beauty(SHARED / "amazon-beauty", DATA_PATH, force=force)


def fold_data(model: str, fold: int, settings: dict | None = None):
    """(config, train, valid) of one temporal fold of Beauty under the paper preset, built once per fold so that
    many fitted-once candidates can be scored on it."""
    from recbole_llm import pipeline

    run = pipeline.load_data(model, "beauty", None, {"data_path": str(DATA_PATH), "temporal_fold": fold,
                                                     "show_progress": False, "state": "ERROR", **(settings or {})})
    return run.config, run.train_data, run.valid_data


def validation_ndcg(config, train, valid) -> float:
    """Validation NDCG@20 of config's model, fitted once on ``train`` (kNN, LLMSeqSim, hybrids): never test."""
    from recbole_llm import pipeline
    from recbole_llm.prepare import prepare

    prepare(config, train._dataset)  # the candidate's own recipe (the fold was prepared for the first one)
    trainer = pipeline.build_model(pipeline.Run(config, None, train, valid, None)).trainer
    trainer.eval_collector.data_collect(train)
    return float(trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@20"])
