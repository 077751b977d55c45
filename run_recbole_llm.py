"""Entry point: the same flags as RecBole's run_recbole.py, for our models and RecBole's.

    python run_recbole_llm.py --model=LLM2SASRec --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
    python run_recbole_llm.py --help
"""
import sys

from recbole_llm.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
