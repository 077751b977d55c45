"""A finished run's best model as a weights-only file (a state dict, loadable with ``weights_only=True``), e.g. the
SASRec teacher that ``llmsrec_teacher_checkpoint`` names. The run's JSON names its checkpoint under ``saved/``
(relative to where the run was made: ``--root``).

    python -m benchmarks.export_weights --run benchmarks/results/beauty_llmsrec_full/SASRec-teacher__seed1.json \
        --out benchmarks/results/beauty_llmsrec_full/SASRec-teacher__seed1.weights.pt
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the run's result JSON")
    parser.add_argument("--out", required=True, help="the weights file to write")
    parser.add_argument("--root", default=".", help="folder the run's checkpoint path is relative to")
    args = parser.parse_args()
    import recbole_llm  # noqa: F401  (RecBole's checkpoints pickle its Config)
    from recbole_llm.patches import load_checkpoint

    checkpoint = Path(args.root) / json.loads(Path(args.run).read_text())["checkpoint"]
    state = {k: v.clone() for k, v in load_checkpoint(checkpoint)["state_dict"].items()}
    torch.save(state, args.out)
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()[:16]
    print(f"{args.out}: {len(state)} tensors from {checkpoint} (sha256 {digest})")


if __name__ == "__main__":
    main()
