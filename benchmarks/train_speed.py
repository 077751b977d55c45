"""Training steps of the paper preset's neural models, fp32 against bf16 (RecBole's ``enable_amp``: CPU autocast in
bf16) and the full softmax against a sampled one (``softmax_negatives``), side by side in one process on one
thread, beside the same process's matmul peaks (2048^2, fp32 and bf16).

For each variant: seconds per training step (RecBole's own ``_train_epoch`` over the same first ``--batches``
batches, after one warm-up batch), the FLOPs of one step (torch's FlopCounterMode: forward and backward, the mean
over as many batches from another pass of the loader: the same number, not the same batches; a cloze batch's masked
positions vary), and the step's GFLOP/s as a share of the matching matmul peak. Shares in files before stop 55
count the backward pass alone (2/3 of a step's matrix work; ``step_flops``).

    python -m benchmarks.train_speed --models SASRec LLM2SASRec --batches 30 \
        --out benchmarks/results/profile/train_speed.json

Variants: fp32 / bf16 x the plain full softmax ("full": with BERT4Rec's whole last block, ``cloze_last_block: all``;
the other defaults as they are), the fused one (``full_softmax: fused``, the last block at the masked positions) and
256 sampled negatives; "uniform dropout": the fused one with ``dropout_sampler: uniform``; "fresh pages": the plain
one with ``train_keep_freed_memory: False`` (glibc unmaps every large freed tensor, so the
next step faults its pages in again; run this without the Makefile's ``MALLOC_*`` variables, which would keep them).
The FLOPs of a step are counted on the plain loss: the fused one does the same products.

Where the fused loss is used, also (since stop 56): its own time per timed step (``loss_seconds_per_step``: its
forward, which makes every catalog product; its backward only scales them), its FLOPs on the counted batches
(``loss_gflop_per_step``, from the shapes), its rate (``loss_gflop_per_s``) and share of the peak, and
``share_ceiling``: the step's share were the loss at its measured rate and everything else at the peak. Where that
ceiling is below 0.5, no work outside the catalog loss can bring the step to half the peak.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

# "full": the plain softmax and BERT4Rec's whole last block (cloze_last_block: all; a SASRec / GRU4Rec run drops that
# key); like every variant it takes the model's defaults for what it leaves out (the fused GELU, fused AdamW, kept
# memory, packing skipped where nothing is padding), so it is not the code before stop 53: measure that from its own
# commit (benchmarks/results/profile/train_speed_before_stop53_final_*.json).
_FULL = {"full_softmax": "plain", "cloze_last_block": "all"}
VARIANTS = {
    "fp32 full": {"enable_amp": False, **_FULL},
    "bf16 full": {"enable_amp": True, **_FULL},
    "fp32 sampled-256": {"enable_amp": False, "softmax_negatives": 256},
    "bf16 sampled-256": {"enable_amp": True, "softmax_negatives": 256},
    "fp32 full, fresh pages": {"enable_amp": False, "train_keep_freed_memory": False, **_FULL},
    "bf16 full, fresh pages": {"enable_amp": True, "train_keep_freed_memory": False, **_FULL},
    "fp32 fused": {"enable_amp": False, "full_softmax": "fused"},
    "bf16 fused": {"enable_amp": True, "full_softmax": "fused"},
    "fp32 fused, uniform dropout": {"enable_amp": False, "full_softmax": "fused", "dropout_sampler": "uniform"},
    "bf16 fused, uniform dropout": {"enable_amp": True, "full_softmax": "fused", "dropout_sampler": "uniform"},
}


def matmul_peak(dtype, n: int = 2048, repeats: int = 10, trials: int = 3) -> float:
    """The best of ``trials`` timings of ``repeats`` n x n products: a moment's contention lowers one trial only."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def step_flops(model, batch, bf16: bool) -> int:
    """The FLOPs of one training step's forward and backward, as torch's FlopCounterMode counts them.

    One counter context spans both passes: entering a FlopCounterMode clears its counts, so a second ``with counter``
    for the backward pass (as this benchmark had it until stop 55) kept the backward's FLOPs alone, two thirds of a
    step's matrix work, and every share of the peak it reported was 2/3 of the true one."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _forward_backward(model, batch, bf16)
    return counter.get_total_flops()


def _forward_backward(model, batch, bf16: bool) -> None:
    """One training step's forward (under CPU bf16 autocast where asked) and backward, without the optimizer."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model.calculate_loss(batch)
    loss.backward()


@contextlib.contextmanager
def fused_loss_tally():
    """Seconds spent inside the fused catalog loss's forward, which makes the catalog products (its backward only
    scales what the forward made), and those products' FLOPs: 2 x positions x catalog x width for the logits and for
    each gradient asked for (from the shapes: FlopCounterMode does not count the in-place ``addmm_`` the loss
    accumulates with). These are the products the plain loss's count has.

    Why: with a thin hidden size (the paper's SASRec: 48) the catalog products themselves run far below the matmul
    peak; the loss's own share bounds what the whole step could reach (``share_ceiling``)."""
    from recbole_llm.model.fused_softmax import FusedCatalogCrossEntropy

    tally = {"seconds": 0.0, "flops": 0, "calls": 0}
    original = FusedCatalogCrossEntropy.forward

    def forward(ctx, states, table, *rest):
        started = time.perf_counter()
        out = original(ctx, states, table, *rest)
        tally["seconds"] += time.perf_counter() - started
        products = 1 + int(ctx.needs_input_grad[0]) + int(ctx.needs_input_grad[1])
        tally["flops"] += 2 * products * states.shape[0] * table.shape[0] * table.shape[1]
        tally["calls"] += 1
        return out

    FusedCatalogCrossEntropy.forward = staticmethod(forward)
    try:
        yield tally
    finally:
        FusedCatalogCrossEntropy.forward = staticmethod(original)


def measure(model_name: str, settings: dict, batches: int) -> dict:
    from benchmarks.common import quiet_beauty_settings
    from recbole_llm import pipeline
    from recbole_llm.trainer import _FirstBatches

    if "BERT4Rec" not in model_name:
        settings = {k: v for k, v in settings.items() if k != "cloze_last_block"}
    run = pipeline.build(model_name, "beauty", None, quiet_beauty_settings(**settings))
    trainer, train = run.trainer, run.train_data
    trainer._train_epoch(_FirstBatches(train, 1), 0)  # warm-up: allocations, kernels chosen
    used = run.model.settings
    run.model.settings = dataclasses.replace(used, full_softmax="plain")  # the same products, each seen by the counter
    bf16 = bool(settings.get("enable_amp"))
    counted = list(_FirstBatches(train, batches))  # as many as are timed, from the loader's pass before the timed one
    flops = sum(step_flops(run.model, batch, bf16) for batch in counted) / len(counted)
    run.model.settings = used
    fused = used.full_softmax == "fused" and not getattr(used, "softmax_negatives", 0)
    loss_flops = 0.0
    if fused:  # the fused loss's FLOPs on the same batches, to set against the step's
        with fused_loss_tally() as counted_loss:
            for batch in counted:
                _forward_backward(run.model, batch, bf16)
        loss_flops = counted_loss["flops"] / len(counted)
    trainer.optimizer.zero_grad()
    with fused_loss_tally() as tally:
        started = time.perf_counter()
        trainer._train_epoch(_FirstBatches(train, batches), 1)
        seconds = (time.perf_counter() - started) / min(batches, len(train))
    row = {"seconds_per_step": round(seconds, 4), "gflop_per_step": round(flops / 1e9, 3),
           "gflop_per_s": round(flops / 1e9 / seconds, 1), "batch_size": int(run.config["train_batch_size"]),
           "batches_per_epoch": len(train), "epoch_seconds_estimate": round(seconds * len(train))}
    if fused and tally["calls"]:  # the loss's rate on the timed batches; its FLOPs on the counted ones, as the step's
        row.update({"loss_seconds_per_step": round(tally["seconds"] / min(batches, len(train)), 4),
                    "loss_gflop_per_step": round(loss_flops / 1e9, 3),
                    "loss_gflop_per_s": round(tally["flops"] / 1e9 / tally["seconds"], 1)})
    return row


def share_ceiling(row: dict, peak: float) -> float:
    """The step's share of the peak if the fused loss kept its measured rate and everything outside it ran at the
    peak (no overhead, no elementwise work): an upper bound on what removing work outside the catalog loss could
    give. The loss's and the step's FLOPs are counted on the same batches."""
    outside = max(0.0, row["gflop_per_step"] - row["loss_gflop_per_step"])
    seconds = row["loss_gflop_per_step"] / row["loss_gflop_per_s"] + outside / peak
    return round(row["gflop_per_step"] / seconds / peak, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["PaperSASRec", "LLM2SASRec"])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import recbole_llm  # noqa: F401
    from benchmarks.common import build_beauty
    from recbole_llm.experiment import provenance
    from recbole_llm.llm.precision import cpu_has_native_bf16

    build_beauty()
    native_bf16 = cpu_has_native_bf16() and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() != "AVX2"
    variants = [v for v in args.variants if native_bf16 or not VARIANTS[v].get("enable_amp")]  # never emulated bf16
    peaks = {"fp32": round(matmul_peak(torch.float32), 1)}
    if native_bf16:
        peaks["bf16"] = round(matmul_peak(torch.bfloat16), 1)
    # the instruction set torch's kernels run on (ATEN_CPU_CAPABILITY=avx2, with MKL_ENABLE_INSTRUCTIONS=AVX2 and
    # ONEDNN_MAX_CPU_ISA=AVX2 for the matmul libraries, runs an AVX-512 machine on its AVX2 code paths)
    isa = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           **{k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
              if k in os.environ}}
    result = {"matmul_peak_gflop_per_s": peaks, "matmul_peak_gflop_per_s_before": dict(peaks), "threads": 1,
              "batches": args.batches, "isa": isa, "models": {}}
    for model in args.models:
        rows = {}
        for name in variants:
            row = measure(model, VARIANTS[name], args.batches)
            rows[name] = row
            print(model, name, row, flush=True)
        if "fp32 full" in rows:
            base = rows["fp32 full"]["seconds_per_step"]
            for row in rows.values():
                row["speed_vs_fp32_full"] = round(base / row["seconds_per_step"], 2)
        result["models"][model] = rows
    # the peaks again after the steps: the higher of the two (matmul_peak_gflop_per_s) is each share's denominator,
    # so a busy moment while one was measured cannot flatter the shares
    after = {"fp32": round(matmul_peak(torch.float32), 1)}
    if native_bf16:
        after["bf16"] = round(matmul_peak(torch.bfloat16), 1)
    result["matmul_peak_gflop_per_s_after"] = after
    for precision in peaks:
        peaks[precision] = max(peaks[precision], after[precision])
    for rows in result["models"].values():
        for name, row in rows.items():
            peak = peaks[name.split()[0]]
            row["share_of_peak"] = round(row["gflop_per_s"] / peak, 3)
            if "loss_gflop_per_s" in row:
                row["loss_share_of_peak"] = round(row["loss_gflop_per_s"] / peak, 3)
                row["share_ceiling"] = share_ceiling(row, peak)
    result["command"] = (f"python -m benchmarks.train_speed --models {' '.join(args.models)} --batches {args.batches} "
                         f"--variants {' '.join(repr(v) for v in args.variants)} --out {args.out}")
    result["provenance"] = provenance(1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["matmul_peak_gflop_per_s"]))


if __name__ == "__main__":
    main()
