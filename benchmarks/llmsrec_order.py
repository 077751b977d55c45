"""LLM-SRec vs Pop vs SASRec vs LLM2SASRec, and the order test.

    python benchmarks/llmsrec_order.py --dataset ml-100k --mode cached --train-prompts 3000 --epochs 30
    python benchmarks/llmsrec_order.py --dataset beauty --mode cached --test-sessions 500 --train-prompts 3000
    python benchmarks/llmsrec_order.py --dataset ml-100k --mode learned --train-steps 150   (the earlier runs)

``--mode cached`` (``llmsrec_user_token: fixed``): the frozen LLM's state of each of a seeded sample of
``--train-prompts`` training prompts is computed once; the epochs train the small modules on those states.
``--mode learned``: the user token learns, so every step runs the LLM (``--train-steps`` steps, one epoch).

On Beauty, SASRec and LLM2SASRec are the checkpoints of the seed-1 report runs (their full-test
NDCG@20 is printed to show they are those runs); without a checkpoint they are trained here first.
LLMSRec distils that SASRec (the teacher) into the frozen SmolLM2-135M, with a CPU budget: a few
hundred training prompts and a seeded sample of the test sessions (``max_test_sessions``), the same
sample for every model. Each model is scored twice on that sample: with the prompts as they are,
and with the items of every prompt shuffled. Pop, on the same sample, shows what "learned nothing
but popularity" scores. Resumable: each variant writes benchmarks/results/<dataset>_llmsrec/<variant>.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHOWN = ["ndcg@10", "ndcg@20", "hit@10", "hit@20"]


def evaluate(model_name: str, dataset: str, settings: dict, checkpoint: str | None, threads: int) -> dict:
    import torch

    from recbole_llm import pipeline
    from recbole_llm.analysis import shuffled_prompts
    from recbole_llm.experiment import provenance
    from recbole_llm.patches import load_checkpoint
    from recbole_llm.quick_start import config_files

    torch.set_num_threads(threads)
    settings = {"seed": 1, "state": "WARNING", "show_progress": True, **settings}
    if dataset == "beauty":
        settings["data_path"] = str(DATA_PATH)
    # the protocol only (not the published Beauty configurations): what these runs were made with
    run = pipeline.build(model_name, dataset, config_files(), settings, preset=False)
    model, trainer = run.model, run.trainer
    train_data, valid_data, test_data = run.train_data, run.valid_data, run.test_data
    started = time.perf_counter()
    if checkpoint:
        model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
        trainer.eval_collector.data_collect(train_data)  # what fit() would register (catalog size, popularity)
    else:
        trainer.fit(train_data, valid_data, saved=True, show_progress=True)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=not checkpoint, show_progress=True)
    eval_seconds = time.perf_counter() - started
    if hasattr(trainer.model, "ITEM_SEQ"):
        with shuffled_prompts(trainer.model, seed=0):
            shuffled = trainer.evaluate(test_data, load_best_model=False, show_progress=True)
    else:  # a general model (Pop) never sees the prompt's order
        shuffled = result
    return {"model": model_name, "settings": settings, "checkpoint": checkpoint or trainer.saved_model_file,
            "test_sessions": len(test_data.dataset.inter_feat), "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "test": {k: float(v) for k, v in result.items()},
            "test_shuffled": {k: float(v) for k, v in shuffled.items()}, "provenance": provenance(threads)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="beauty", help="beauty (from ../shared/data) or a RecBole dataset name")
    parser.add_argument("--sasrec", help="checkpoint of the SASRec report run (also the teacher); empty: train it here")
    parser.add_argument("--llm2sasrec", help="checkpoint of the LLM2SASRec report run; empty: train it here")
    parser.add_argument("--test-sessions", type=int, default=300)
    parser.add_argument("--mode", choices=["cached", "learned"], default="cached")
    parser.add_argument("--train-steps", type=int, default=100, help="learned mode: training steps")
    parser.add_argument("--train-prompts", type=int, default=3000, help="cached mode: training prompts")
    parser.add_argument("--epochs", type=int, default=30, help="cached mode: epochs over the cached states")
    parser.add_argument("--baseline-epochs", type=int, help="epoch cap of SASRec/LLM2SASRec trained here")
    parser.add_argument("--only", nargs="+", help="variants to run (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.dataset == "beauty":
        build_beauty()
    out = RESULTS / (f"{args.dataset}_llmsrec" if args.mode == "learned" else f"{args.dataset}_llmsrec_cached")
    out.mkdir(parents=True, exist_ok=True)
    sample = {"max_test_sessions": args.test_sessions}
    # SASRec and LLM2SASRec supervise every position of a session window (the paper's training, 2.5x faster here)
    baseline = {**sample, "train_mode": "all_positions",
                **({"epochs": args.baseline_epochs} if args.baseline_epochs else {})}
    if args.mode == "learned":
        llmsrec = {**sample, "epochs": 1, "llmsrec_max_train_steps": args.train_steps, "train_batch_size": 16,
                   "llmsrec_max_prompt_items": 5, "llmsrec_state_batch_size": 64, "llmsrec_user_token": "learned"}
    else:
        # llmsrec_dim 32 and weight decay 0.1: chosen on the ml-100k validation holdout (3,000 cached prompts
        # overfit the learned-mode sizes: 64-d without decay peaks at epoch 0, variant LLMSRec-dim64-wd0)
        llmsrec = {**sample, "epochs": args.epochs, "llmsrec_max_train_steps": None, "train_batch_size": 64,
                   "llmsrec_train_prompts": args.train_prompts, "llmsrec_max_prompt_items": 5,
                   "llmsrec_state_batch_size": 32, "llmsrec_user_token": "fixed", "llmsrec_dim": 32,
                   "weight_decay": 0.1}
    variants = {
        "Pop": ("Pop", sample, None),
        "SASRec": ("SASRec", baseline, args.sasrec),
        "LLM2SASRec": ("LLM2SASRec", {**baseline, "embedding_reduction": "pca"}, args.llm2sasrec),
        "LLMSRec": ("LLMSRec", llmsrec, None),
        "LLMSRec-no-distill": ("LLMSRec", {**llmsrec, "llmsrec_distill_weight": 0.0}, None),
    }
    if args.mode == "cached":
        variants["LLMSRec-dim64-wd0"] = ("LLMSRec", {**llmsrec, "llmsrec_dim": 64, "weight_decay": 0.0}, None)
    for name, (model, settings, checkpoint) in variants.items():
        target = out / f"{name}.json"
        if target.exists() or (args.only and name not in args.only):
            continue
        if model == "LLMSRec":  # the teacher is the SASRec evaluated above
            settings = {**settings, "llmsrec_teacher_checkpoint": json.loads((out / "SASRec.json").read_text())["checkpoint"]}
        print(f"== {name}", flush=True)
        result = evaluate(model, args.dataset, settings, checkpoint, args.threads)
        if checkpoint:  # the same checkpoint on the whole test set: identifies the report run
            full = evaluate(model, args.dataset, {k: v for k, v in settings.items() if k != "max_test_sessions"},
                            checkpoint, args.threads)
            result["full_test_ndcg@20"] = full["test"]["ndcg@20"]
        target.write_text(json.dumps(result, indent=2))

    header = ["model", "test sessions"] + SHOWN + ["NDCG@20 shuffled", "drop", "train s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in variants:
        target = out / f"{name}.json"
        if not target.exists():
            continue
        r = json.loads(target.read_text())
        base, shuffled = r["test"]["ndcg@20"], r["test_shuffled"]["ndcg@20"]
        drop = f"{(base - shuffled) / base:+.1%}" if base else "-"
        cells = [name, str(r["test_sessions"])] + [f"{r['test'][m]:.4f}" for m in SHOWN]
        cells += [f"{shuffled:.4f}", drop, f"{r['train_seconds']:.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
