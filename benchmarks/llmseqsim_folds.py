"""Choose LLMSeqSim's pooling and embedding recipe on Beauty's three temporal folds (never the test split).

    python benchmarks/llmseqsim_folds.py

Mean validation NDCG@20 over folds 1-3 for every pooling strategy x recipe,
under the paper preset. Each fold's data is built once; every candidate is
scored on it. Results: benchmarks/results/beauty_folds/llmseqsim_folds.json
(resumable: finished candidates are kept).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_beauty, fold_data, validation_ndcg  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty_folds" / "llmseqsim_folds.json"
POOLINGS = ["mean", "last", "constant_linear", "scaling_linear", "scaling_quadratic", "scaling_cubic", "log",
            "harmonic", "squared_harmonic"]
RECIPES = {
    "none": {"embedding_reduction": "none", "embedding_dim": None, "embedding_normalize": False},
    "pca128+l2": {"embedding_reduction": "pca", "embedding_dim": 128, "embedding_normalize": True},
    "pca256+l2": {"embedding_reduction": "pca", "embedding_dim": 256, "embedding_normalize": True},
    "pca512+l2": {"embedding_reduction": "pca", "embedding_dim": 512, "embedding_normalize": True},
}


def main():
    import numpy as np
    import torch

    from recbole_llm.experiment import provenance

    torch.set_num_threads(1)
    build_beauty()
    scores = json.loads(OUT.read_text()) if OUT.exists() else {}
    for fold in (1, 2, 3):
        todo = [(p, r) for r in RECIPES for p in POOLINGS if f"{p}|{r}|fold{fold}" not in scores]
        if not todo:
            continue
        config, train, valid = fold_data("LLMSeqSim", fold)
        for pooling, recipe in todo:
            for key, value in {"llmseqsim_pooling": pooling, **RECIPES[recipe]}.items():
                config[key] = value
            scores[f"{pooling}|{recipe}|fold{fold}"] = score = validation_ndcg(config, train, valid)
            OUT.write_text(json.dumps(scores, indent=1))
            OUT.with_suffix(".provenance.json").write_text(json.dumps(provenance(1), indent=1))
            print(f"fold {fold} {pooling} {recipe}: {score:.4f}", flush=True)
    table = {(p, r): np.mean([scores[f"{p}|{r}|fold{f}"] for f in (1, 2, 3)]) for r in RECIPES for p in POOLINGS}
    print("| pooling | " + " | ".join(RECIPES) + " |\n|---|" + "---|" * len(RECIPES))
    for p in POOLINGS:
        print(f"| {p} | " + " | ".join(f"{table[(p, r)]:.4f}" for r in RECIPES) + " |")
    best = max(table, key=table.get)
    print(f"best on the folds: pooling {best[0]}, recipe {best[1]} (mean valid NDCG@20 {table[best]:.4f})")


if __name__ == "__main__":
    main()
