"""LLMSeqSim's nearest-item search on synthetic catalogs up to a million items: latency per session (p50 / p95, one
thread) and recall@20 against exact search, for exact search (torch) and the faiss indexes (HNSW, IVF), at several
catalog sizes: where an approximate index starts to pay (``llmseqsim_ann_min_items``).

Item vectors: ``--clusters`` Gaussian clusters in ``--dim`` dimensions (items of a category lie together, as text
embeddings of a catalog do), L2-normalised as LLMSeqSim's PCA + L2 recipe leaves them. A session is 2-8 items of one
cluster; its query is their mean (LLMSeqSim's pooling), searched with cosine similarity; the prompt's items are
searched for and dropped as the model does (top 20 + prompt length).

    python -m benchmarks.scale_synthetic --sizes 10000 100000 300000 1000000 --out benchmarks/results/profile/scale_llmseqsim.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_catalog(items: int, dim: int, clusters: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, items)
    vectors = centres[labels] + 0.35 * rng.standard_normal((items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[0] = 0.0  # RecBole's padding row
    return torch.from_numpy(vectors), labels


def synthetic_sessions(labels: np.ndarray, count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    by_cluster = {}
    for item, label in enumerate(labels[1:], 1):
        by_cluster.setdefault(int(label), []).append(item)
    pools = [np.array(v) for v in by_cluster.values() if len(v) >= 8]
    return [rng.choice(pools[rng.integers(len(pools))], rng.integers(2, 9), replace=False) for _ in range(count)]


def measure(index, vectors: torch.Tensor, sessions: list[np.ndarray], k: int = 20) -> dict:
    """Per session, one at a time: pool, search top k + prompt, drop the prompt's items; seconds and the top k."""
    times, tops = [], []
    for prompt in sessions:
        started = time.perf_counter()
        query = vectors[torch.from_numpy(prompt)].mean(0, keepdim=True)
        scores, ids = index.search(query, k + len(prompt))
        keep = ~torch.isin(ids[0], torch.from_numpy(prompt))
        tops.append(ids[0][keep][:k])
        times.append(time.perf_counter() - started)
    times = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "tops": tops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10000, 100000, 1000000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--build_threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import faiss

    from recbole_llm.embeddings.index import ItemIndex
    from recbole_llm.experiment import provenance

    torch.set_num_threads(1)
    rows = []
    for size in args.sizes:
        vectors, labels = synthetic_catalog(size + 1, args.dim, min(args.clusters, size // 20))
        sessions = synthetic_sessions(labels, args.sessions)
        faiss.omp_set_num_threads(1)
        exact = measure(ItemIndex(vectors, "cosine", "exact"), vectors, sessions)
        row = {"items": size, "dim": args.dim, "exact_p50_ms": exact["p50_ms"], "exact_p95_ms": exact["p95_ms"]}
        for kind, params in (("hnsw", {"hnsw_m": 32, "ef_construction": 80, "ef_search": 128}),
                             ("ivf", {"nprobe": 32})):
            faiss.omp_set_num_threads(args.build_threads)
            started = time.perf_counter()
            index = ItemIndex.build(vectors, "cosine", kind, **params)
            build_seconds = time.perf_counter() - started
            faiss.omp_set_num_threads(1)  # search: one thread, as the latency target asks
            found = measure(index, vectors, sessions)
            recall = float(np.mean([len(set(t.tolist()) & set(f.tolist())) / len(t)
                                    for t, f in zip(exact["tops"], found["tops"])]))
            row.update({f"{kind}_build_s": build_seconds, f"{kind}_p50_ms": found["p50_ms"],
                        f"{kind}_p95_ms": found["p95_ms"], f"{kind}_recall@20": recall, f"{kind}_params": params})
            print(f"{size:>9,} items  {kind}: build {build_seconds:6.1f} s  p50 {found['p50_ms']:.2f} ms "
                  f"(exact {exact['p50_ms']:.2f} ms)  recall@20 {recall:.3f}", flush=True)
        rows.append(row)
    result = {"command": "python -m benchmarks.scale_synthetic " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if v is not None and k != "out"), "rows": rows, "provenance": provenance(1)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
