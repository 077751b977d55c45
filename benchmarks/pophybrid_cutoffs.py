"""Where LLMSeqSim&Popularity's popularity cutoffs fall on Beauty's test-split training sessions: how many items the
count never sees, each quantile's cutoff over every catalog item (ours) and over the seen items only (the paper
code's ``popularities_df``), and the cutoff in sessions. Explains why re-taking the quantile changes nothing and how
few sessions the paper's test-inclusive count has to add to lift an item over the cutoff.

    python -m benchmarks.pophybrid_cutoffs

Prints and writes benchmarks/results/profile/pophybrid_cutoffs.json.
"""
import json
import sys
from pathlib import Path

from benchmarks.common import build_beauty, quiet_beauty_settings

OUT = Path(__file__).resolve().parent / "results" / "profile" / "pophybrid_cutoffs.json"


def measure() -> dict:
    import torch

    from recbole_llm.data.sessions import item_popularity, training_sessions
    from recbole_llm.model.hybrids import popularity_cutoff
    from recbole_llm.pipeline import load_data

    # the training split's dataset, as the model receives it (the full one holds the test sessions too)
    dataset = load_data("LLMSeqSimPopHybrid", "beauty", config_dict=quiet_beauty_settings()).train_data.dataset
    sessions, _ = training_sessions(dataset)
    pop = item_popularity(dataset, dataset.item_num, "train")
    items = pop[1:]
    seen = items[items > 0].double()
    cutoffs = {}
    for quantile in (0.25, 0.5, 0.75):
        ours = popularity_cutoff(pop, quantile)
        cutoffs[str(quantile)] = {"over_catalog": ours, "over_seen_items": float(torch.quantile(seen, quantile)),
                                  "in_sessions": round(ours * len(sessions), 2)}
    return {"training_sessions": len(sessions), "catalog_items": items.numel(),
            "unseen_in_training": int((items == 0).sum()), "cutoffs": cutoffs}


def main() -> None:
    build_beauty()
    result = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
