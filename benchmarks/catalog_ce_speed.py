"""The fused full-catalog CE against torch's, side by side on the paper preset's own training steps.

    python -m benchmarks.catalog_ce_speed [--models BERT4Rec LLM2BERT4Rec SASRec] [--batches 8] [--rounds 3] [--threads 1]

(with the Makefile's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment, as the runs have).

For each model (Beauty, the `paper` preset with its published configuration), pre-draws `--batches`
training batches and times full training steps (loss, backward, AdamW step) through the model's own
``calculate_loss``, alternating the fused loss (recbole_llm.model.catalog_softmax) and the reference
(``F.cross_entropy`` on the logits) in ABBA order every round, so that whatever else runs on the machine
weighs on both alike. Prints and writes seconds per step, the implied seconds per epoch and the ratio
fused / reference to benchmarks/results/profile/catalog_ce_speed.json.
"""
import argparse
import contextlib
import json
import statistics
import time
from itertools import islice

from benchmarks.common import DATA_PATH, build_beauty

from benchmarks.profile_train_step import OUT


def reference_cross_entropy(states, table, bias, targets):
    import torch

    logits = states @ table.T
    return torch.nn.functional.cross_entropy(logits if bias is None else logits + bias, targets)


@contextlib.contextmanager
def reference_loss():
    """Every caller of the fused loss uses torch's instead, within the block."""
    from recbole_llm.model import catalog_softmax, cloze_predict

    fused = catalog_softmax.catalog_cross_entropy
    catalog_softmax.catalog_cross_entropy = cloze_predict.catalog_cross_entropy = reference_cross_entropy
    try:
        yield
    finally:
        catalog_softmax.catalog_cross_entropy = cloze_predict.catalog_cross_entropy = fused


def time_steps(model, optimizer, batches) -> float:
    started = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    return (time.perf_counter() - started) / len(batches)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["BERT4Rec", "LLM2BERT4Rec", "SASRec"])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from recbole_llm import pipeline
    from recbole_llm.experiment import provenance

    torch.set_num_threads(args.threads)
    build_beauty()
    results = []
    for name in args.models:
        run = pipeline.build_model(pipeline.load_data(
            name, "beauty", None, {"data_path": str(DATA_PATH), "session_tie_order": "file", "show_progress": False,
                                   "state": "ERROR"}), with_trainer=False)
        model, train = run.model, run.train_data
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(run.config["learning_rate"]))
        batches = list(islice(iter(train), args.batches + 1))
        time_steps(model, optimizer, batches[:1])  # warm-up
        batches = batches[1:]
        times = {"fused": [], "reference": []}
        for _ in range(args.rounds):
            for side in ("fused", "reference", "reference", "fused"):
                with reference_loss() if side == "reference" else contextlib.nullcontext():
                    times[side].append(time_steps(model, optimizer, batches))
        per_epoch = len(train)
        row = {"model": name, "batches_per_epoch": per_epoch, "steps_timed_per_side": len(batches) * 2 * args.rounds}
        for side, values in times.items():
            row[f"{side}_s_per_step"] = round(statistics.median(values), 4)
            row[f"{side}_s_per_epoch"] = round(statistics.median(values) * per_epoch, 1)
        row["ratio_fused_over_reference"] = round(row["fused_s_per_step"] / row["reference_s_per_step"], 3)
        print(json.dumps(row))
        results.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"command": "python -m benchmarks.catalog_ce_speed " + " ".join(
        ["--models", *args.models, "--batches", str(args.batches), "--rounds", str(args.rounds), "--threads",
         str(args.threads)]), "results": results, "provenance": provenance(args.threads)}
    (OUT / "catalog_ce_speed.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
