"""Does it matter that RecBole clips the *global* gradient norm where the paper's Keras ``clipnorm`` clips each
weight tensor on its own? Counts, over a model's first training steps on the Beauty `paper` preset, the steps
whose global norm exceeds the published ``clip_grad_norm`` (RecBole clips those) and those where any single tensor
does (Keras would clip those), training as RecBole does (AdamW, global clipping).

    python -m benchmarks.grad_norms [--models LLM2BERT4Rec BERT4Rec] [--steps 200] [--threads 1]

Prints and writes benchmarks/results/profile/grad_norms.json.
"""
import argparse
import json
import sys
from itertools import islice
from pathlib import Path

from benchmarks.common import build_beauty, quiet_beauty_settings

OUT = Path(__file__).resolve().parent / "results" / "profile" / "grad_norms.json"


def measure(model_name: str, steps: int) -> dict:
    import torch

    from recbole_llm import pipeline

    run = pipeline.build(model_name, "beauty", None, quiet_beauty_settings())
    model, config = run.model, run.config
    max_norm = float(config["clip_grad_norm"]["max_norm"])
    optimizer = run.trainer.optimizer
    model.train()
    rows = []
    for step, batch in enumerate(islice(run.train_data, steps)):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch.to(config["device"]))
        loss.backward()
        norms = [p.grad.norm().item() for p in model.parameters() if p.grad is not None]
        total = sum(n * n for n in norms) ** 0.5
        rows.append({"step": step, "loss": round(loss.item(), 4), "global_norm": round(total, 4),
                     "largest_tensor_norm": round(max(norms), 4)})
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
    over_global = [r["step"] for r in rows if r["global_norm"] > max_norm]
    over_tensor = [r["step"] for r in rows if r["largest_tensor_norm"] > max_norm]
    return {"model": model_name, "max_norm": max_norm, "steps": len(rows), "steps_per_epoch": len(run.train_data),
            "steps_clipped_globally": over_global, "steps_with_a_tensor_over": over_tensor, "trace": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["LLM2BERT4Rec", "PaperBERT4Rec"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too
    import torch

    torch.set_num_threads(args.threads)
    build_beauty()
    results = [measure(name, args.steps) for name in args.models]
    for r in results:
        print(f"{r['model']}: clip_grad_norm {r['max_norm']}, {r['steps']} of {r['steps_per_epoch']} steps per epoch; "
              f"global norm over it at steps {r['steps_clipped_globally']}; a tensor over it at steps "
              f"{r['steps_with_a_tensor_over']}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"command": "python -m benchmarks.grad_norms " + " ".join(
        ["--models", *args.models, "--steps", str(args.steps), "--threads", str(args.threads)]), "runs": results},
        indent=1))


if __name__ == "__main__":
    main()
