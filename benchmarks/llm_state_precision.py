"""The frozen LLM's states in fp32, bf16 (CPU autocast, only where the CPU has AVX-512 BF16) and int8 (torch's
dynamic quantisation), side by side in one process on one thread: prompts per second and cosine agreement with
fp32 on a seeded sample of the run's real prompts (user and item prompts), then, given a trained LLMSRec
checkpoint, its validation NDCG@20 with the item and validation states made in each precision (the model itself
is the one trained; only the states it reads change).

    python -m benchmarks.llm_state_precision --dataset beauty --sample 256 \
        [--checkpoint saved/LLMSRec-....pth --set key=value ...] --out benchmarks/results/profile/llm_state_precision.json
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--sample", type=int, default=256, help="user prompts and item prompts each")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--checkpoint", default=None, help="a trained LLMSRec checkpoint (validation NDCG@20)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value settings of the LLMSRec run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import recbole_llm  # noqa: F401
    from recbole_llm.llm.precision import cpu_has_native_bf16, precision_context
    from recbole_llm.model.llmsrec import load_frozen_llm, run_prompts
    from recbole_llm.pipeline import load_data

    settings = {"show_progress": False, "llm_state_precision": "fp32"}
    for item in args.set:
        key, value = item.split("=", 1)
        settings[key] = yaml.safe_load(value)
    run = load_data("LLMSRec", args.dataset, config_dict=settings)
    parts = run_prompts(run.config, run.train_data, run.valid_data, run.test_data, order_test=False)
    rng = random.Random(0)
    sample = {"user": rng.sample(sorted(set(parts["train"])), args.sample),
              "item": rng.sample(sorted(set(parts["items"])), args.sample)}
    precisions = ["fp32", "int8"] + (["bf16"] if cpu_has_native_bf16() else [])
    states, speed = {}, {}
    for precision in precisions:
        tokenizer, llm, _ = load_frozen_llm(run.config["llm_model"], precision)
        for kind, prompts in sample.items():
            prompts = sorted(prompts, key=len)
            out = []
            started = time.perf_counter()
            with torch.no_grad(), precision_context(precision):
                for start in range(0, len(prompts), args.batch):
                    encoded = tokenizer(prompts[start : start + args.batch], return_tensors="pt", padding=True)
                    out.append(llm.model(**encoded).last_hidden_state[:, -1].float())
            speed[f"{precision}|{kind}"] = len(prompts) / (time.perf_counter() - started)
            states[f"{precision}|{kind}"] = torch.cat(out)
        del llm
    result = {"cpu_native_bf16": cpu_has_native_bf16(), "threads": 1, "sample": args.sample, "precisions": {}}
    for precision in precisions:
        row = {}
        for kind in sample:
            cosine = torch.nn.functional.cosine_similarity(states[f"{precision}|{kind}"], states[f"fp32|{kind}"])
            row[kind] = {"prompts_per_s": round(speed[f"{precision}|{kind}"], 2),
                         "speed_vs_fp32": round(speed[f"{precision}|{kind}"] / speed[f"fp32|{kind}"], 3),
                         "cosine_to_fp32_min": round(cosine.min().item(), 6),
                         "cosine_to_fp32_mean": round(cosine.mean().item(), 6)}
        result["precisions"][precision] = row
    if args.checkpoint:
        result["validation_ndcg@20"] = validation_by_precision(args, settings, precisions)
    from recbole_llm.experiment import provenance

    result["provenance"] = provenance(1)
    result["command"] = "python -m benchmarks.llm_state_precision " + " ".join(
        f"--{k} {v}" if not isinstance(v, list) else f"--{k} {' '.join(v)}" for k, v in vars(args).items() if v)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def validation_by_precision(args, settings: dict, precisions: list[str]) -> dict:
    """The trained model's validation NDCG@20 with its item and validation states in each precision (states not
    yet stored are computed and stored, so a rerun is cheap)."""
    from recbole_llm import pipeline
    from recbole_llm.patches import load_checkpoint

    scores = {}
    # everything trained, but not the item states (a buffer made from the states of the precision it trained on)
    weights = {k: v for k, v in load_checkpoint(args.checkpoint)["state_dict"].items() if k != "item_states"}
    for precision in precisions:
        run = pipeline.build_model(pipeline.load_data(
            "LLMSRec", args.dataset, config_dict={**settings, "llm_state_precision": precision}))
        missing, unexpected = run.model.load_state_dict(weights, strict=False)
        assert not unexpected and all(k == "item_states" for k in missing), (missing, unexpected)
        run.trainer.eval_collector.data_collect(run.train_data)  # what fit() registers before evaluating
        result = run.trainer.evaluate(run.valid_data, load_best_model=False, show_progress=False)
        scores[precision] = round(float(result["ndcg@20"]), 4)
    return scores


if __name__ == "__main__":
    main()
