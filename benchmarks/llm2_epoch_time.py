"""Training-time cost of the LLM initialisation, LLM2X vs X side by side in one process.

    python -m benchmarks.llm2_epoch_time [--batches 60] [--rounds 3] [--threads 1]

For each pair both models train on the *same* pre-drawn batches through RecBole's own
``Trainer._train_epoch``, alternating X, LLM2X, LLM2X, X (ABBA) every round, so whatever
else runs on the machine weighs on both sides alike. Prints milliseconds per batch, the
implied seconds per full epoch, and the ratio LLM2X / X. One-off costs (loading and
reducing the embedding file) are reported separately as model-construction time.
"""
import argparse
import statistics
import time
from itertools import islice

from benchmarks.common import DATA_PATH, build_beauty

PAIRS = [("PaperSASRec", "LLM2SASRec"), ("PaperGRU4Rec", "LLM2GRU4Rec"), ("PaperBERT4Rec", "LLM2BERT4Rec")]


def build(model_name: str, seed: int):
    from recbole_llm import pipeline
    from recbole_llm.presets import config_files

    settings = {"data_path": str(DATA_PATH), "seed": seed, "state": "ERROR", "show_progress": False,
                "train_batch_size": 1024, "embedding_reduction": "pca"}
    run = pipeline.build(model_name, "beauty", config_files(), settings, preset=False)  # the protocol only
    trainer, train_data, construction = run.trainer, run.train_data, run.init_seconds
    return trainer, train_data, construction


def main():
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", nargs="+", default=[b for _, b in PAIRS])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    build_beauty()
    print(f"| pair | batches/epoch | X ms/batch | LLM2X ms/batch | X s/epoch | LLM2X s/epoch | ratio LLM2X/X |"
          f" X init s | LLM2X init s |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for base, llm2 in (p for p in PAIRS if p[1] in args.pairs):
        (tb, data, init_b), (tl, _, init_l) = build(base, 1), build(llm2, 1)
        batches = list(islice(data, args.batches))
        times = {base: [], llm2: []}
        for epoch in range(args.rounds):
            for name, trainer in ((base, tb), (llm2, tl), (llm2, tl), (base, tb)):
                started = time.perf_counter()
                trainer._train_epoch(batches, epoch)
                times[name].append((time.perf_counter() - started) / len(batches))
        ms_b, ms_l = statistics.median(times[base]) * 1000, statistics.median(times[llm2]) * 1000
        print(f"| {llm2} / {base} | {len(data)} | {ms_b:.1f} | {ms_l:.1f} | {ms_b * len(data) / 1000:.1f} |"
              f" {ms_l * len(data) / 1000:.1f} | {ms_l / ms_b:.3f} | {init_b:.2f} | {init_l:.2f} |", flush=True)


if __name__ == "__main__":
    main()
