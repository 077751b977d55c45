"""LLMSeqPrompt (GenItem) with the local SmolLM2-135M on Beauty: base model vs LoRA fine-tuned.

    python benchmarks/llmseqprompt_beauty.py [--test-sessions 60] [--train-steps 30]

A CPU budget: a seeded sample of the test sessions (the same for both), the last 5 items of each
session in the prompt, 10 sampled answers per prompt. No validation pass (nothing is selected on
it). Both runs land in benchmarks/results/beauty beside the other Beauty runs (resumable), with
HR/NDCG@20, unique recommendations, hallucination rate and mapped similarity.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

from recbole_llm.report import run_plan  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty"
SHOWN = ["hit@20", "ndcg@20", "hit@10", "ndcg@10", "unique_recommendations", "hallucination_rate",
         "mean_mapped_similarity", "parse_failures"]


SPECS = ["LLMSeqPrompt-base=LLMSeqPrompt[prompt_finetune=false]", "LLMSeqPrompt"]


def common(test_sessions: int = 60, train_steps: int = 30) -> dict:
    return {"prompt_task": "genitem", "llm_provider": "local", "max_test_sessions": test_sessions,
            "max_train_steps": train_steps, "prompt_samples": 10, "prompt_max_items": 5, "llm_max_new_tokens": 32,
            "llm_batch_size": 8, "eval_step": 0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--test-sessions", type=int, default=60)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    build_beauty()
    run_plan(OUT, "beauty", SPECS, [1], common(args.test_sessions, args.train_steps), args.threads, DATA_PATH)
    print("| model | test sessions | " + " | ".join(SHOWN) + " |\n|" + "---|" * (len(SHOWN) + 2))
    for label in ("LLMSeqPrompt-base", "LLMSeqPrompt"):
        target = OUT / f"{label}__seed1.json"
        if target.exists():
            r = json.loads(target.read_text())
            cells = [f"{r['test'][m]:.4f}" if m in r["test"] else "-" for m in SHOWN]
            print(f"| {label} | {r['test_sessions']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
