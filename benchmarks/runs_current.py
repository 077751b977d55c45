"""Which committed runs a ``report`` would run again: for every experiment file, each finished run whose recorded
config hash no longer equals the hash of the settings it asks for now (``finished_run_is_current``). A change of
defaults (a yaml key added, a code default moved to yaml) must leave this list as it was: run it before and after.

    python -m benchmarks.runs_current [--experiments benchmarks/experiments] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def stale_runs(experiments: Path) -> dict:
    import recbole_llm  # noqa: F401
    from recbole_llm.experiment import finished_run_is_current, load_experiment, parse_model_spec

    report = {}
    for path in sorted(Path(experiments).glob("*.yaml")):
        spec = load_experiment(path)
        checked, stale = 0, []
        for model_spec in spec["models"]:
            label, model, overrides = parse_model_spec(model_spec)
            settings = {**spec["set"], **overrides}
            seeds = sorted({*spec["seeds"], *(spec.get("one_pass_seeds") or [])})
            for seed in seeds:
                target = Path(spec["out"]) / f"{label}__seed{seed}.json"
                if not target.is_file():
                    continue
                checked += 1
                if not finished_run_is_current(target, model, spec["dataset"], seed, settings, spec.get("data_path")):
                    stale.append(target.name)
        report[path.name] = {"finished": checked, "stale": stale}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("benchmarks/experiments"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    report = stale_runs(args.experiments)
    for name, row in report.items():
        print(f"{name}: {row['finished']} finished, {len(row['stale'])} stale {row['stale'] if row['stale'] else ''}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
