"""Training-step time with and without ``pack_sequences``, side by side in one process.

    python -m benchmarks.packed_encoder_speed [--models LLM2BERT4Rec BERT4Rec] [--batches 10] [--rounds 2] [--threads 1]

Each model is built twice from the Beauty `paper` preset (same seed, same weights), once with the encoder on every
position and once on the real items only; both train on the *same* pre-drawn batches, alternating plain, packed,
packed, plain (ABBA) each round, so load on the machine weighs on both alike. Also checks, in eval mode on the first
batch, that the two encoders agree at the real positions. Prints and writes
benchmarks/results/profile/packed_encoder_speed.json (seconds per step, the implied epoch, the ratio).
"""
import argparse
import json
import statistics
import time
from itertools import islice
from pathlib import Path

from benchmarks.common import build_beauty, quiet_beauty_settings

OUT = Path(__file__).resolve().parent / "results" / "profile" / "packed_encoder_speed.json"


def build(model_name: str, packed: bool):
    from recbole_llm import pipeline

    return pipeline.build(model_name, "beauty", None, quiet_beauty_settings(pack_sequences=packed))


def encoder_difference(plain, packed, batch) -> float:
    """Largest |difference| of the two encoders' outputs at real positions (eval mode, the first batch)."""
    import torch

    seq = batch[plain.ITEM_SEQ]
    real = seq > 0
    with torch.no_grad():
        plain.eval(), packed.eval()
        mask = plain.get_attention_mask(seq, bidirectional="BERT" in type(plain).__name__)
        emb = plain.item_embedding(seq)
        a, b = plain.trm_encoder(emb, mask)[-1], packed.trm_encoder(emb, mask)[-1]
        plain.train(), packed.train()
    return float((a[real] - b[real]).abs().max())


def main():
    import torch

    from recbole_llm.experiment import provenance

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["LLM2BERT4Rec", "PaperBERT4Rec"])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    build_beauty()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    print("| model | threads | batches/epoch | plain s/step | packed s/step | plain s/epoch | packed s/epoch | "
          "speed-up |\n|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.models:
        plain, packed = build(name, False), build(name, True)
        packed.model.load_state_dict(plain.model.state_dict())
        batches = list(islice(plain.train_data, args.batches))
        steps = len(plain.train_data)
        difference = encoder_difference(plain.model, packed.model, batches[0])
        times = {"plain": [], "packed": []}
        for epoch in range(args.rounds):
            for side, run in (("plain", plain), ("packed", packed), ("packed", packed), ("plain", plain)):
                started = time.perf_counter()
                run.trainer._train_epoch(batches, epoch)
                times[side].append((time.perf_counter() - started) / len(batches))
        a, b = statistics.median(times["plain"]), statistics.median(times["packed"])
        print(f"| {name} | {args.threads} | {steps} | {a:.3f} | {b:.3f} | {a * steps:.0f} | {b * steps:.0f} | "
              f"{a / b:.2f}x |", flush=True)
        results[f"{name}|{args.threads}t"] = {
            "batches": args.batches, "rounds": args.rounds, "batches_per_epoch": steps,
            "seconds_per_step": {k: [round(t, 4) for t in v] for k, v in times.items()},
            "median_plain": round(a, 4), "median_packed": round(b, 4), "speedup": round(a / b, 3),
            "max_abs_encoder_difference": difference, "provenance": provenance(args.threads)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
