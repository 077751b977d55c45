"""LLMSeqPrompt (GenItem) with the local SmolLM2-135M on Beauty: base vs LoRA fine-tuned, free vs
catalog-constrained generation, beside MostPopular and LLMSeqSim on the same test sessions.

    python benchmarks/llmseqprompt_beauty.py [--test-sessions 40] [--train-steps 60]

A CPU budget: a seeded sample of the test sessions (``max_test_sessions``, the same sessions for every
model), the last 5 items of each session in the prompt. Free generation samples ``prompt_samples`` answers
per prompt and maps hallucinated titles to the nearest catalog title; constrained generation
(``prompt_constrained: true``) runs a beam search over the catalog's title trie, so every answer is a
catalog item. The fine-tuned runs share one LoRA adapter (cached by its settings). Runs land in
benchmarks/results/beauty_llmseqprompt/ (resumable, one JSON per run with its provenance).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty_llmseqprompt"
SHOWN = ["hit@20", "ndcg@20", "unique_recommendations", "hallucination_rate", "mean_mapped_similarity"]
SPECS = [
    "MostPopular", "LLMSeqSim",
    "LLMSeqPrompt-base=LLMSeqPrompt[prompt_finetune=false]",
    "LLMSeqPrompt-base-constrained=LLMSeqPrompt[prompt_finetune=false,prompt_constrained=true]",
    "LLMSeqPrompt", "LLMSeqPrompt-constrained=LLMSeqPrompt[prompt_constrained=true]",
]


def common(test_sessions: int, train_steps: int) -> dict:
    return {"max_test_sessions": test_sessions, "prompt_task": "genitem", "llm_provider": "local",
            "llm_max_train_steps": train_steps, "prompt_samples": 5, "prompt_max_items": 5, "llm_max_new_tokens": 32,
            "llm_batch_size": 8, "prompt_beams": 20, "eval_step": 0}


def table() -> str:
    lines = ["| model | test sessions | " + " | ".join(SHOWN) + " | s per session |",
             "|" + "---|" * (len(SHOWN) + 3)]
    for spec in SPECS:
        label = spec.split("=")[0] if "=" in spec else spec
        target = OUT / f"{label}__seed1.json"
        if target.exists():
            r = json.loads(target.read_text())
            cells = [f"{r['test'][m]:.4f}" if m in r["test"] else "-" for m in SHOWN]
            lines.append(f"| {label} | {r['test_sessions']} | " + " | ".join(cells)
                         + f" | {r['eval_seconds'] / r['test_sessions']:.2f} |")
    return "\n".join(lines)


def main():
    from recbole_llm.experiment import run_plan

    parser = argparse.ArgumentParser()
    parser.add_argument("--test-sessions", type=int, default=40)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="labels to run")
    args = parser.parse_args()
    build_beauty()
    specs = [s for s in SPECS if not args.only or (s.split("=")[0] if "=" in s else s) in args.only]
    run_plan(OUT, "beauty", specs, [1], common(args.test_sessions, args.train_steps), args.threads, DATA_PATH)
    text = table()
    (OUT / "table.md").write_text(f"Rebuild: `python benchmarks/llmseqprompt_beauty.py --test-sessions "
                                  f"{args.test_sessions} --train-steps {args.train_steps}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
