"""Build Beauty from ../shared/data and print its statistics and SESSION split sizes.

    python -m benchmarks.beauty_data
"""
import sys
import time

import recbole_llm  # noqa: F401  (the patches, before RecBole is used)
from recbole.config import Config
from recbole.data import create_dataset

from benchmarks.common import DATA_PATH, build_beauty
from recbole_llm.presets import config_files


def main():
    started = time.perf_counter()
    stats = build_beauty(force="--force" in sys.argv)
    print("converter:", stats or "already built")
    config = Config(model="SASRec", dataset="beauty", config_file_list=config_files(),
                    config_dict={"data_path": str(DATA_PATH), "show_progress": False})
    dataset = create_dataset(config)
    print(f"users {dataset.user_num - 1}, items {dataset.item_num - 1}, interactions {dataset.inter_num}")
    train, valid, test = dataset.build()
    print("split:", dataset.session_split_report)
    print(f"rows: train {len(train.inter_feat)}, valid {len(valid.inter_feat)}, test {len(test.inter_feat)}")
    print(f"wall time {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
