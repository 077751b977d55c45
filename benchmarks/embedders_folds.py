"""Which offline embedder serves which model family, chosen on Beauty's three temporal folds (never test).

    python benchmarks/embedders_folds.py [--embedders all-MiniLM-L6-v2 all-mpnet-base-v2] [--families ...]

For each memory-based family (LLMSeqSim, SKNNEmb, LLMSeqSimPopHybrid, LLMSeqSimSeqHybrid with the SKNN-Emb
partner), with its published Beauty configuration: mean validation NDCG@20 over folds 1-3 for every embedder,
and each embedder's speed (titles/s, 512 titles, one thread, nothing cached). Embeddings are computed once per
embedder and cached. Results: benchmarks/results/beauty_folds/embedders_folds.json (resumable).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty, fold_data, validation_ndcg  # noqa: E402
from paper_beauty import SKNNEMB_PAPER  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty_folds" / "embedders_folds.json"
FAMILIES = {
    "LLMSeqSim": ("LLMSeqSim", {}),
    "SKNNEmb": ("SKNNEmb", {}),
    "LLMSeqSimPopHybrid": ("LLMSeqSimPopHybrid", {}),
    "LLMSeqSimSeqHybrid": ("LLMSeqSimSeqHybrid", {"hybrid_sequential_model": "SKNNEmb", "MAX_ITEM_LIST_LENGTH": 50}),
}


def titles_per_second(model: str, n: int = 512) -> float:
    import pandas as pd

    from recbole_llm.embeddings.providers.local import LocalProvider

    titles = pd.read_csv(DATA_PATH / "beauty" / "beauty.item", sep="\t", dtype=str, keep_default_na=False,
                         quoting=3).iloc[:n, 1].tolist()
    provider = LocalProvider(model)
    provider._embed_batch(titles[:8])  # load the weights first
    started = time.perf_counter()
    for start in range(0, len(titles), 64):
        provider._embed_batch(titles[start : start + 64])
    return len(titles) / (time.perf_counter() - started)


def main():
    import numpy as np
    import torch
    import yaml

    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", nargs="+", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = parser.parse_args()
    from recbole_llm.experiment import provenance

    torch.set_num_threads(1)
    build_beauty()
    scores = json.loads(OUT.read_text()) if OUT.exists() else {}
    for embedder in args.embedders:
        if f"speed|{embedder}" not in scores:
            scores[f"speed|{embedder}"] = titles_per_second(embedder)
            OUT.write_text(json.dumps(scores, indent=1))
    for family in args.families:
        model_name, extra = FAMILIES[family]
        if family == "LLMSeqSimSeqHybrid":
            extra = {**extra, "hybrid_sequential_config": yaml.safe_load(SKNNEMB_PAPER)}
        for fold in (1, 2, 3):
            todo = [e for e in args.embedders if f"{family}|{e}|fold{fold}" not in scores]
            if not todo:
                continue
            config, train, valid = fold_data(model_name, fold, extra)
            for embedder in todo:
                config["embedding_model"] = embedder
                if family == "LLMSeqSimSeqHybrid":
                    config["hybrid_sequential_config"] = {**extra["hybrid_sequential_config"],
                                                          "embedding_model": embedder}
                scores[f"{family}|{embedder}|fold{fold}"] = score = validation_ndcg(config, train, valid)
                OUT.write_text(json.dumps(scores, indent=1))
                OUT.with_suffix(".provenance.json").write_text(json.dumps(provenance(1), indent=1))
                print(f"{family} fold {fold} {embedder}: {score:.4f}", flush=True)
    print("| family | " + " | ".join(args.embedders) + " |\n|---|" + "---|" * len(args.embedders))
    for family in args.families:
        cells = [np.mean([scores[f"{family}|{e}|fold{f}"] for f in (1, 2, 3)]) for e in args.embedders]
        print(f"| {family} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    print("| titles/s (1 thread) | " + " | ".join(f"{scores[f'speed|{e}']:.0f}" for e in args.embedders) + " |")


if __name__ == "__main__":
    main()
