"""Shared helpers of the micro-benchmarks (``python -m benchmarks.<name>`` from the repository root, by hand,
never by the test suite); experiments are files in benchmarks/experiments/ run by ``python -m recbole_llm report``."""
from __future__ import annotations

import os
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECBOLE_LLM_SHARED", ROOT.parent / "shared")) / "data"
DATA_PATH = ROOT / "dataset"


def quiet_beauty_settings(**extra) -> dict:
    """Settings of a benchmark's Beauty run: our data folder, the files' same-day order, no logging or progress."""
    return {"data_path": str(DATA_PATH), "state": "ERROR", "show_progress": False, "session_tie_order": "file", **extra}


def build_beauty(force: bool = False) -> dict | None:
    """dataset/beauty from the paper's staged tables in ../shared/data (the library's builder)."""
    from recbole_llm.data.datasets import build_paper_beauty

    return build_paper_beauty(SHARED / "amazon-beauty", DATA_PATH, force=force)
