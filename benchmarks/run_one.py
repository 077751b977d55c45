"""Train and evaluate one (model, seed) under the temporal protocol; write a JSON result.

Used by the benchmark scripts in a subprocess per run, so a crash loses one run only.

    python benchmarks/run_one.py --model LLM2SASRec --dataset beauty --seed 1 --out r.json [key=value ...]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value (yaml values)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv

    import torch

    torch.set_num_threads(args.threads)
    import recbole_llm
    from common import DATA_PATH
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_trainer, init_logger, init_seed

    from recbole_llm.quick_start import config_files

    config_dict = {"seed": args.seed, "data_path": str(DATA_PATH), "show_progress": False, "state": "WARNING"}
    for item in args.overrides:
        key, value = item.split("=", 1)
        config_dict[key] = yaml.safe_load(value)
    config = Config(model=args.model, dataset=args.dataset, config_file_list=config_files(), config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    started = time.perf_counter()
    model = recbole_llm.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    init_seconds = time.perf_counter() - started
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_seconds = []
    original = trainer._train_epoch

    def timed_epoch(*a, **k):
        t = time.perf_counter()
        result = original(*a, **k)
        epoch_seconds.append(time.perf_counter() - t)
        return result

    trainer._train_epoch = timed_epoch
    best_valid, valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    t = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_seconds = time.perf_counter() - t
    result = {
        "model": args.model,
        "seed": args.seed,
        "overrides": config_dict,
        "valid": {k: float(v) for k, v in valid_result.items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs": len(epoch_seconds),
        "sec_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "init_seconds": init_seconds,
        "eval_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps({k: result[k] for k in ("model", "seed", "epochs", "sec_per_epoch")}), result["test"])


if __name__ == "__main__":
    main()
