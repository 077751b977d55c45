"""What LLMSeqPrompt's local LLM costs on Beauty, per precision and with or without gradient checkpointing, each
configuration in its own one-thread process (so its peak resident memory is its own): seconds per LoRA step and the
process's peak memory, then seconds per session of the Rank task (20 candidates scored) and of constrained GenItem
(20 beams), with the adapter-free model. The prompts are GenItem's on real Beauty sessions: each user's last 5
titles before the last item, which is the answer (as LLMSeqPrompt builds them with prompt_max_items: 5).

    python -m benchmarks.llm_prompt_cost --steps 4 --sessions 5 --out benchmarks/results/profile/llm_prompt_cost.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [("bf16", True), ("bf16", False), ("fp32", True), ("fp32", False)]


def beauty_examples(n: int, seed: int = 0) -> tuple[list[list[dict]], list[str]]:
    import csv
    import random

    import yaml

    from benchmarks.common import DATA_PATH
    from recbole_llm.registry import PROPERTIES_DIR

    folder = DATA_PATH / "beauty"
    titles = {row[0]: row[1] for row in csv.reader(open(folder / "beauty.item"), delimiter="\t")}
    sessions: dict[str, list[tuple[float, str]]] = {}
    with open(folder / "beauty.inter") as f:
        header = next(f).rstrip("\n").split("\t")
        user, item, stamp = (header.index(c) for c in ("user_id:token", "item_id:token", "timestamp:float"))
        for line in f:
            row = line.rstrip("\n").split("\t")
            sessions.setdefault(row[user], []).append((float(row[stamp]), row[item]))
    templates = yaml.safe_load(open(PROPERTIES_DIR / "prompts" / "llmseqprompt.yaml"))
    chosen = [s for s in sessions.values() if len(s) >= 2]
    random.Random(seed).shuffle(chosen)
    examples = []
    for session in chosen[:n]:
        items = [i for _, i in sorted(session)]
        prompt = "\n".join(f"{k}. {titles[i]}" for k, i in enumerate(items[:-1][-5:], 1))
        examples.append([{"role": "system", "content": templates["system"].strip()},
                         {"role": "user", "content": templates["genitem"]["user"].format(session=prompt)},
                         {"role": "assistant", "content": titles[items[-1]]}])
    return examples, [t for k, t in titles.items() if k != "item_id:token"]


def one(precision: str, checkpointing: bool, steps: int, sessions: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from recbole_llm.llm.local import LocalPromptLLM

    examples, titles = beauty_examples(64 + sessions)
    with tempfile.TemporaryDirectory() as work:
        llm = LocalPromptLLM(work, precision=precision, gradient_checkpointing=checkpointing, max_train_steps=steps,
                             batch_size=8, eval_steps=10**6, valid_examples=0, show_progress=False)
        started = time.perf_counter()
        llm.fine_tune(examples[:64], [])
        step = (time.perf_counter() - started) / steps
        peak_training = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 2**20
        ref, prompts = llm.base_model(), [e[:2] for e in examples[64:]]
        llm.score_answers(ref, prompts[0], titles[:20])  # warm-up
        started = time.perf_counter()
        for messages in prompts:
            llm.score_answers(ref, messages, titles[:20])
        rank = (time.perf_counter() - started) / len(prompts)
        started = time.perf_counter()
        for messages in prompts:
            llm.constrained_generate(ref, messages, 20, titles)
        constrained = (time.perf_counter() - started) / len(prompts)
    return {"precision": precision, "gradient_checkpointing": checkpointing, "lora_seconds_per_step": round(step, 2),
            "peak_gb_training": round(peak_training, 2), "rank_seconds_per_session": round(rank, 2),
            "constrained_seconds_per_session": round(constrained, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", nargs=2, metavar=("PRECISION", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1] == "1", args.steps, args.sessions)))
        return
    from recbole_llm.llm.precision import cpu_has_native_bf16

    rows = []
    for precision, checkpointing in CONFIGS:
        if precision == "bf16" and not cpu_has_native_bf16():
            continue
        done = subprocess.run([sys.executable, "-m", "benchmarks.llm_prompt_cost", "--one", precision,
                               str(int(checkpointing)), "--steps", str(args.steps), "--sessions", str(args.sessions)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"command": "python -m benchmarks.llm_prompt_cost " + " ".join(sys.argv[1:]), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
