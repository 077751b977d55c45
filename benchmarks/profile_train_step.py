"""Where a Beauty training epoch spends its time, and how fast the hardware could go.

    python -m benchmarks.profile_train_step [--model PaperSASRec] [--mode all_positions] [--batches 40] [--threads 1]

Times, over the first `--batches` batches of one epoch (paper preset, RecBole's
default SASRec sizes): data loading and collation, forward (sequence encoder),
the full-catalog logits + cross-entropy, backward, optimizer step; counts the
FLOPs of the matrix products and reports the achieved GFLOP/s beside a fp32
matmul of the same machine (2048 x 2048) measured in the same process.
Writes benchmarks/results/profile/<model>-<mode>-<threads>t.json.
"""
import argparse
import json
import time
from pathlib import Path

from benchmarks.common import DATA_PATH, build_beauty

OUT = Path(__file__).resolve().parent / "results" / "profile"


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="PaperSASRec")
    parser.add_argument("--mode", default="all_positions", choices=["prefixes", "all_positions"])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=None)
    args = parser.parse_args()
    import torch

    from recbole_llm import pipeline
    from recbole_llm.experiment import provenance
    from recbole_llm.data.windows import TARGETS
    from recbole_llm.model.position_losses import every_position
    from recbole_llm.presets import config_files

    torch.set_num_threads(args.threads)
    build_beauty()
    batch_size = args.batch_size or (256 if args.mode == "all_positions" else 2048)
    run = pipeline.build_model(pipeline.load_data(
        args.model, "beauty", config_files(), {"data_path": str(DATA_PATH), "train_mode": args.mode,
                                               "train_batch_size": batch_size, "show_progress": False,
                                               "state": "ERROR"}, preset=False), with_trainer=False)
    config, train, model = run.config, run.train_data, run.model
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    model.train()
    hidden, n_items = config["hidden_size"], model.n_items
    parts = {"load": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    targets_total, rows_total, positions_total = 0, 0, 0
    iterator = iter(train)
    for _ in range(args.batches):
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        t1 = time.perf_counter()
        seq, lengths = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
        if args.mode == "all_positions":
            with every_position(model):
                output = model.forward(seq, lengths)
            targets = batch[TARGETS]
            keep = targets > 0
            output, targets = output[keep], targets[keep]
        else:
            output, targets = model.forward(seq, lengths), batch[model.POS_ITEM_ID]
        t2 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(output @ model.item_embedding.weight[:n_items].T, targets)
        t3 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[key] += value
        targets_total += len(targets)
        rows_total += len(seq)
        positions_total += int(lengths.sum()) if args.mode == "all_positions" else len(seq) * seq.shape[1]
    seconds = sum(parts.values())
    # matrix-product FLOPs (forward x3 for forward + backward): catalog logits, and the encoder's linear layers
    # (per position: 4 H^2 attention projections + 2 H*inner feed-forward per layer) on every encoded position
    logits_flops = 2 * targets_total * hidden * n_items * 3
    layers, inner = config["n_layers"], config["inner_size"]
    encoded = rows_total * seq.shape[1]
    encoder_flops = 2 * encoded * layers * (4 * hidden * hidden + 2 * hidden * inner) * 3
    peak = matmul_peak()
    result = {
        "model": args.model, "mode": args.mode, "threads": args.threads, "batch_size": batch_size,
        "batches": args.batches, "rows": rows_total, "supervised_targets": targets_total,
        "seconds": {k: round(v, 3) for k, v in parts.items()}, "seconds_total": round(seconds, 3),
        "ms_per_target": round(1000 * seconds / targets_total, 4),
        "achieved_gflops": round((logits_flops + encoder_flops) / seconds / 1e9, 1),
        "logits_share_of_flops": round(logits_flops / (logits_flops + encoder_flops), 3),
        "matmul_2048_gflops": round(peak, 1),
        "epoch_estimate_seconds": round(seconds / rows_total * len(train._dataset.inter_feat), 1),
        "provenance": provenance(args.threads),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.model}-{args.mode}-{args.threads}t.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
