"""The full-catalog cross-entropy, plain against fused (``full_softmax: fused``), side by side in one process.

    python -m benchmarks.fused_softmax_speed --out benchmarks/results/profile/fused_softmax_speed.json

For each [positions x width] shape against Beauty's 12,101 items, one thread: milliseconds of loss + backward
(median of ``--repeats``, plain and fused alternating, each within ``keep_freed_memory`` as in a training epoch),
for fp32 and, where the CPU has native bf16, bf16 autocast, and the fused loss at several chunk sizes. The shapes
(``SHAPES``) are about the supervised positions of one training batch of the paper preset's models on Beauty.
GFLOP/s count the three catalog products.
This is what ``fused_softmax.MAX_ROWS`` was chosen from.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

# name: (positions, width); positions of one batch of the paper preset on Beauty (~7 supervised per window)
SHAPES = {"SASRec (batch 32, 48-d)": (224, 48), "LLM2BERT4Rec (batch 224, 224-d)": (1165, 224),
          "LLM2SASRec (batch 416, 384-d)": (3100, 384)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12_101)
    parser.add_argument("--rows", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from recbole_llm.allocator import keep_freed_memory
    from recbole_llm.experiment import provenance
    from recbole_llm.llm.precision import cpu_has_native_bf16
    from recbole_llm.model.fused_softmax import fused_cross_entropy

    def plain(states, table, targets, bias, rows):
        return torch.nn.functional.cross_entropy(states @ table.T + bias, targets)

    def fused(states, table, targets, bias, rows):
        return fused_cross_entropy(states, table, targets, bias, rows=rows)

    memory = contextlib.ExitStack()
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    result = {"items": args.items, "threads": 1, "repeats": args.repeats, "shapes": {}}
    for name, (positions, width) in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        states = torch.randn(positions, width, generator=generator, requires_grad=True)
        table = (0.1 * torch.randn(args.items, width, generator=generator)).requires_grad_()
        bias = torch.zeros(args.items, requires_grad=True)
        targets = torch.randint(1, args.items, (positions,), generator=generator)
        gflop = 6 * positions * width * args.items / 1e9
        for precision in precisions:
            variants = {"plain": (plain, None), **{f"fused rows={r}": (fused, r) for r in args.rows}}
            times = {v: [] for v in variants}
            for _ in range(args.repeats + 1):  # the first round warms up, then dropped
                for variant, (loss_fn, rows) in variants.items():
                    memory.enter_context(keep_freed_memory())  # as a training epoch runs: no page faults
                    started = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        loss = loss_fn(states, table, targets, bias, rows)
                    loss.backward()
                    times[variant].append(time.perf_counter() - started)
                    states.grad = table.grad = bias.grad = None
                    memory.close()
            row = {}
            for variant, seconds in times.items():
                ms = statistics.median(seconds[1:]) * 1e3
                row[variant] = {"ms": round(ms, 1), "gflop_per_s": round(gflop / ms * 1e3, 1)}
            for variant in variants:
                row[variant]["speed_vs_plain"] = round(row["plain"]["ms"] / row[variant]["ms"], 2)
            result["shapes"][f"{name} {precision}"] = {"positions": positions, "width": width, **row}
            print(name, precision, json.dumps(row), flush=True)
    result["command"] = f"python -m benchmarks.fused_softmax_speed --out {args.out}"
    result["provenance"] = provenance(1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
