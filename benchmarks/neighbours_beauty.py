"""LLMSeqSim, the SKNN family, SKNN-Emb and the hybrids on Beauty (temporal protocol).

    python benchmarks/neighbours_beauty.py [--seeds 1 2 3]

1. picks LLMSeqSim's pooling and reduction on the validation folds (never the test set),
2. runs every model through the report runner (results land next to the other Beauty runs),
3. measures SKNN-Emb and V-SKNN latency per prompt session (p50/p90, one session at a time), once.
Resumable like every report run.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty"
POOLINGS = ["mean", "last", "constant_linear", "scaling_linear", "scaling_quadratic", "scaling_cubic", "log",
            "harmonic", "squared_harmonic"]
REDUCTIONS = [("none", None), ("pca", 256), ("pca", 128)]


def select_llmseqsim() -> dict:
    """Mean validation NDCG@20 over the three temporal folds for each pooling x reduction."""
    import numpy as np

    from recbole_llm.quick_start import config_files
    from recbole_llm.tuning import train_and_validate

    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "llmseqsim_selection.json"
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    for reduction, dim in REDUCTIONS:
        for pooling in POOLINGS:
            key = f"{pooling}|{reduction}|{dim}"
            if key in scores:
                continue
            fold_scores = []
            for fold in (1, 2, 3):
                settings = {"data_path": str(DATA_PATH), "temporal_fold": fold, "llmseqsim_pooling": pooling,
                            "embedding_reduction": reduction, "embedding_dim": dim, "show_progress": False,
                            "state": "ERROR"}
                fold_scores.append(train_and_validate("LLMSeqSim", "beauty", config_files(), settings)[0])
            scores[key] = float(np.mean(fold_scores))
            cache.write_text(json.dumps(scores, indent=1))
            print(f"LLMSeqSim {key}: mean valid NDCG@20 {scores[key]:.4f}", flush=True)
    best = max(scores, key=scores.get)
    pooling, reduction, dim = best.split("|")
    print(f"best LLMSeqSim on the folds: {best} ({scores[best]:.4f})")
    return {"llmseqsim_pooling": pooling, "embedding_reduction": reduction,
            "embedding_dim": None if dim == "None" else int(dim)}


def latency(model: str, n: int = 500) -> dict:
    """Seconds per prompt session, one session per call, over the first n test sessions."""
    import numpy as np
    import torch

    from recbole_llm import pipeline
    from recbole_llm.quick_start import config_files

    torch.set_num_threads(1)
    run = pipeline.build_model(pipeline.load_data(
        model, "beauty", config_files(), {"data_path": str(DATA_PATH), "state": "ERROR", "eval_batch_size": 1,
                                          "show_progress": False}, preset=False), with_trainer=False)
    net, test = run.model, run.test_data
    times = []
    with torch.no_grad():
        for i, batch in enumerate(test):
            if i >= n:
                break
            started = time.perf_counter()
            net.full_sort_predict(batch[0])
            times.append(time.perf_counter() - started)
    times = np.array(times) * 1000
    return {"model": model, "sessions": len(times), "p50_ms": float(np.percentile(times, 50)),
            "p90_ms": float(np.percentile(times, 90))}


def plan() -> list[str]:
    """Report specs of the memory-based models, LLMSeqSim as chosen on the folds."""
    best = select_llmseqsim()
    spec = ",".join(f"{k}={'~' if v is None else v}" for k, v in best.items())
    return ["Pop", "SKNN", "VSKNN", "SSKNN", "SFSKNN", "SKNNEmb", f"LLMSeqSim[{spec}]", f"LLMSeqSimPopHybrid[{spec}]",
            f"LLMSeqSimSeqHybrid[{spec},hybrid_sequential_model=SKNNEmb,hybrid_sequential_config={{}}]"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    build_beauty()
    from recbole_llm.experiment import run_plan
    from recbole_llm.report import build_report

    run_plan(OUT, "beauty", plan(), args.seeds, {}, data_path=str(DATA_PATH))
    latency_file = OUT / "latency.json"
    if not latency_file.exists():
        latency_file.write_text(json.dumps([latency("SKNNEmb"), latency("VSKNN")], indent=1))
    lat = json.loads(latency_file.read_text())
    print(build_report(OUT))
    for row in lat:
        print(f"{row['model']}: p50 {row['p50_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms per prompt session "
              f"({row['sessions']} sessions, 1 thread)")
    for file in sorted(OUT.glob("*__seed1.json")):
        run = json.loads(file.read_text())
        print(f"{file.name.split('__')[0]}: test evaluation {run['eval_seconds']:.1f}s")


if __name__ == "__main__":
    main()
