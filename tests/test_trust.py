"""Trust (issue #41): no key reaches a file, no setting runs code, no checkpoint from elsewhere runs code."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_llm.errors import SecretInSettingsError
from recbole_llm.secrets import refuse_secret_arguments, refuse_secret_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test123"


@pytest.mark.parametrize("argv", [
    ["--openai_api_key", KEY], ["--openai_api_key=sk-test123=="], ["--OPENAI-API-KEY=abc"], ["--api-key", "abc"],
    ["--vertex_secret=abc"], ["--embedding_model", KEY], ["--set", "openai_api_key=abc"], ["--set", f"x={KEY}"],
    ["--hf_token=hf_abcdefghijklmnop"], ["--password=hunter2"],
])
def test_every_spelling_of_a_secret_on_the_command_line_is_refused_without_echoing_it(argv):
    with pytest.raises(SecretInSettingsError) as refused:
        refuse_secret_arguments(["--model=Pop", *argv])
    assert KEY not in str(refused.value) and "abc" not in str(refused.value) and "hunter2" not in str(refused.value)


def test_ordinary_settings_pass():
    refuse_secret_arguments(["--model=LLMSRec", "--llmsrec_user_token=fixed", "--embedding_model", "all-MiniLM-L6-v2",
                             "--set", "learning_rate=0.001", "--skip_check=1"])
    refuse_secret_settings({"llmsrec_user_token": "fixed", "task": "sk"})
    with pytest.raises(SecretInSettingsError, match="openai_api_key in the file"):
        refuse_secret_settings({"openai_api_key": "x"}, "the file")


@pytest.mark.parametrize("entry", ["run_recbole_llm.py", "-m recbole_llm run"])
@pytest.mark.parametrize("argv", [["--openai_api_key", KEY], [f"--openai_api_key={KEY}=="]])
def test_a_key_on_the_command_line_never_reaches_a_file(tmp_path, entry, argv):
    script = [str(ROOT / entry)] if entry.endswith(".py") else entry.split()
    done = subprocess.run([sys.executable, *script, "--model=Pop", "--dataset=ml-100k", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr[-800:]
    assert KEY not in done.stdout + done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if KEY.encode() in p.read_bytes()], written
    assert not (tmp_path / "log").exists(), "a refused run leaves no log"


def test_a_key_in_a_config_file_is_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text("openai_api_key: sk-fromfile\n")
    done = subprocess.run([sys.executable, str(ROOT / "run_recbole_llm.py"), "--model=Pop", "--dataset=ml-100k",
                           "--config_files=mine.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "openai_api_key" in done.stderr and "sk-fromfile" not in done.stderr


def test_string_settings_are_literals_never_code(tmp_path):
    """RecBole's Config eval()s string settings; after ``import recbole_llm`` they are parsed as literals."""
    from recbole.config import Config

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    config = Config(model="Pop", dataset="ml-100k", config_dict={
        "x_payload": payload, "learning_rate": "0.5", "topk": "[5, 10]", "flag": "true", "nothing": "None",
        "shard": "1/2"})
    assert not marker.exists(), "a setting ran code"
    assert config["x_payload"] == payload and config["shard"] == "1/2"
    assert config["learning_rate"] == 0.5 and config["topk"] == [5, 10] and config["flag"] is True
    assert config["nothing"] is None


def test_an_experiment_set_value_runs_no_code(tmp_path):
    from recbole_llm.experiment import parse_model_spec

    marker = tmp_path / "pwned2"
    _, _, overrides = parse_model_spec(f"Pop[x=__import__('os').system('touch {marker}')]")
    from recbole.config import Config

    Config(model="Pop", dataset="ml-100k", config_dict=overrides)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("how", ["cli", "python", "teacher", "resume"])
def test_a_checkpoint_from_elsewhere_runs_no_code(tmp_path, how, capsys):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"config": _Payload(marker), "state_dict": {}}, evil)
    if how == "cli":
        from recbole_llm.__main__ import main

        assert main(["recommend", "--checkpoint", str(evil), "--session", "50"]) == 2
        assert "could run code" in capsys.readouterr().err
    elif how == "python":
        import recbole_llm

        with pytest.raises(ValueError, match="trust"):
            recbole_llm.recommend(evil, ["50"])
    elif how == "teacher":
        from recbole_llm.model.llmsrec import teacher_weights

        with pytest.raises(ValueError, match="could run code"):
            teacher_weights(evil)
    else:
        from recbole_llm.checkpoints import load_checkpoint

        with pytest.raises(ValueError, match="could run code"):
            load_checkpoint(evil)
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_checkpoints_we_write_load_with_weights_only_and_rebuild_their_config(tiny, tmp_path):
    import torch
    from conftest import build

    import recbole_llm
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), model = build("SASRec", tiny)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    raw = torch.load(trainer.saved_model_file, weights_only=True)  # plain data only
    assert raw["config"]["model"] == "SASRec" and "state_dict" in raw
    rebuilt, loaded, *_ = recbole_llm.load_data_and_model(trainer.saved_model_file)
    assert rebuilt["hidden_size"] == config["hidden_size"] and rebuilt["data_path"] == config["data_path"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("k", ["0", "-1"])
def test_recommend_refuses_a_k_below_one(k, capsys):
    from recbole_llm.__main__ import main

    assert main(["recommend", "--model", "Pop", "--dataset", "ml-100k", "--session", "50", "-k", k]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -k must be 1 or more") and "Traceback" not in err


def _openai_at(url):
    from recbole_llm.embeddings.providers import make_provider

    return make_provider("openai", "text-embedding-3-small", api_key="sk-x", base_url=url, max_retries=0, timeout=5)


def test_the_embedding_cache_keys_by_endpoint(tmp_path):
    from loopback import Loopback, openai_embeddings

    from recbole_llm.embeddings.cache import EmbeddingCache
    from recbole_llm.embeddings.embed import embed_texts
    from recbole_llm.errors import ProviderError

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", openai_embeddings)
        first = embed_texts(_openai_at(server.url + "/v1"), ["red lipstick"], cache, show_progress=False)
        again = embed_texts(_openai_at(server.url + "/v1"), ["red lipstick"], cache, show_progress=False)
        assert len(server.requests) == 1 and np.array_equal(first, again), "same endpoint: cached"
    with pytest.raises(ProviderError):  # another server (nothing listens there): asked, not answered from the cache
        embed_texts(_openai_at("http://127.0.0.1:9/v1"), ["red lipstick"], cache, show_progress=False)


def test_a_nan_vector_is_never_cached_and_a_healthy_server_is_asked_again(tmp_path):
    from loopback import Loopback, openai_embeddings

    from recbole_llm.embeddings.cache import EmbeddingCache
    from recbole_llm.embeddings.embed import embed_texts
    from recbole_llm.errors import ProviderError

    def nan_for_lipstick(body, match, headers):
        status, payload, extra = openai_embeddings(body, match, headers)
        for row in payload["data"]:
            if "lipstick" in body["input"][row["index"]]:
                row["embedding"] = [float("nan")] * len(row["embedding"])
        return status, payload, extra

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", nan_for_lipstick)
        with pytest.raises(ProviderError, match="NaN"):
            embed_texts(_openai_at(server.url + "/v1"), ["red lipstick", "dry shampoo"], cache, show_progress=False)
        assert len(cache) == 0, "nothing of the batch was cached"
    with Loopback() as healthy:
        healthy.route("POST", r"/v1/embeddings", openai_embeddings)
        vectors = embed_texts(_openai_at(healthy.url + "/v1"), ["red lipstick", "dry shampoo"], cache,
                              show_progress=False)
    assert np.isfinite(vectors).all()


def test_embeddings_are_rebuilt_when_the_titles_change(tiny, tmp_path):
    from recbole_llm.embeddings.store import EmbeddingSpec, build_item_embeddings, read_itememb

    spec = EmbeddingSpec(provider="local", model="all-MiniLM-L6-v2", reduction="none")
    path = build_item_embeddings("tiny", spec, tiny["path"])
    ids, before = read_itememb(path)
    item_file = tiny["path"] / "tiny" / "tiny.item"
    item_file.write_text(item_file.read_text().replace("Matte Red Lipstick", "Garden Hose Nozzle"))
    rebuilt = build_item_embeddings("tiny", spec, tiny["path"])
    ids_after, after = read_itememb(rebuilt)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if not np.allclose(a, b)]
    assert list(ids) == list(ids_after) and len(changed) == 1, "the one retitled item, and only it, has a new vector"


def test_a_damaged_embedding_file_for_intra_list_diversity_is_refused_not_nan(tiny):
    from conftest import build

    from recbole_llm.embeddings.store import EmbeddingMismatchError, embedding_file
    from recbole_llm.metrics import diversity_embeddings, diversity_recipe

    config, _, (train, _, _), _ = build("Pop", tiny, metrics=["NDCG", "IntraListDiversity"])
    table = diversity_embeddings(config, train._dataset)
    assert table.shape[0] == train._dataset.item_num  # made by the prepare stage, read here
    recipe = diversity_recipe(config)
    from recbole_llm.embeddings.store import EmbeddingSpec

    path, _ = embedding_file(recipe, EmbeddingSpec.from_config(recipe))
    lines = path.read_text().splitlines()
    item, vector = lines[2].split("\t")
    lines[2] = item + "\t" + " ".join(["nan"] + vector.split()[1:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EmbeddingMismatchError, match="NaN or inf"):
        diversity_embeddings(config, train._dataset)


def test_embed_has_the_timeout_and_retry_flags_its_error_recommends(tiny, monkeypatch, capsys):
    import time

    from loopback import Loopback, openai_embeddings

    from recbole_llm.__main__ import main

    def slow(body, match, headers):
        time.sleep(1.5)
        return openai_embeddings(body, match, headers)

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", slow)
        started = time.perf_counter()
        code = main(["embed", "--dataset", "tiny", "--data_path", str(tiny["path"]), "--provider", "openai",
                     "--embedding_model", "text-embedding-3-small", "--base_url", server.url + "/v1",
                     "--timeout", "0.3", "--max_retries", "0"])
        assert code == 2 and time.perf_counter() - started < 10
        err = capsys.readouterr().err
        assert "--timeout / --max_retries" in err and "after 1 attempts of at most 0.3 s" in err
        assert main(["embed", "--dataset", "tiny", "--data_path", str(tiny["path"]), "--provider", "openai",
                     "--embedding_model", "text-embedding-3-small", "--base_url", server.url + "/v1",
                     "--timeout", "5", "--max_retries", "1"]) == 0


def test_a_key_in_the_environment_reaches_no_file_of_a_paid_run(tiny, tmp_path):
    """A whole run with a paid provider (OpenAI embeddings, a loopback server): the key in the environment is sent
    to the server and written nowhere: not the log, tensorboard, the checkpoint, the embedding files or the cache."""
    import os
    import subprocess
    import sys

    from loopback import Loopback, openai_embeddings

    root = Path(__file__).resolve().parent.parent
    key = "sk-sentinel-Zq81xKey"
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", openai_embeddings)
        done = subprocess.run(
            [sys.executable, str(root / "run_recbole_llm.py"), "--model=LLMSeqSim", "--dataset=tiny",
             f"--data_path={tiny['path']}", "--embedding_provider=openai", "--embedding_model=text-embedding-3-small",
             f"--openai_base_url={server.url}/v1", "--embedding_reduction=none", "--embedding_dim=None",
             f"--embedding_cache_path={tmp_path / 'cache' / 'embeddings.sqlite'}", "--show_progress=False"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**os.environ, "OPENAI_API_KEY": key, "PYTHONPATH": str(root)})
        assert done.returncode == 0, done.stderr[-1500:]
        assert any(r["headers"].get("authorization") == f"Bearer {key}" for r in server.requests), "the key was used"
    written = [path for folder in (tmp_path, tiny["path"]) for path in Path(folder).rglob("*") if path.is_file()]
    assert any("log" in str(p) for p in written) and any(p.suffix == ".pth" for p in written)
    leaked = [str(p) for p in written if key.encode() in p.read_bytes()]
    assert leaked == []
    assert key not in done.stdout + done.stderr
