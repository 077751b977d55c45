"""Bad input through the real entry points: one clear line, a non-zero exit, nothing computed for nothing."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import build  # noqa: E402

from recbole_llm.data.catalog import read_catalog
from recbole_llm.embeddings.store import EmbeddingMismatchError, EmbeddingSpec, read_itememb

ROOT = Path(__file__).resolve().parent.parent


def _script(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run_recbole_llm.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _one_clear_line(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_itememb_with_nan_duplicates_or_a_short_row_is_refused(tmp_path):
    good = "iid:token\titem_emb:float_seq\na\t1 2 3\nb\t4 5 6\n"
    path = tmp_path / "x.itememb"
    path.write_text(good)
    assert read_itememb(path)[1].shape == (2, 3)
    for text, message in ((good + "c\t1 nan 3\n", "NaN or inf"), (good + "c\t1 inf 3\n", "NaN or inf"),
                          (good + "a\t7 8 9\n", "repeated"), (good + "c\t1 2\n", "different lengths")):
        path.write_text(text)
        with pytest.raises(EmbeddingMismatchError, match=message):
            read_itememb(path)


def test_item_file_with_repeated_ids_or_bad_bytes_is_refused(tmp_path):
    (tmp_path / "d.item").write_text("item_id:token\ttitle:token_seq\ni1\tA\ni1\tB\n")
    with pytest.raises(ValueError, match="repeated"):
        read_catalog(tmp_path, "d")
    (tmp_path / "d.item").write_bytes(b"item_id:token\ttitle:token_seq\ni1\tcaf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_catalog(tmp_path, "d")


def test_embedding_recipe_is_checked_before_any_provider_call():
    with pytest.raises(ValueError, match="embedding_reduction must be one of"):
        EmbeddingSpec(reduction="pcaa", dim=8)
    with pytest.raises(ValueError, match="embedding_provider must be one of"):
        EmbeddingSpec(provider="opnai")


@pytest.mark.parametrize("option, value, message", [
    ("llmseqsim_pooling", "median", "llmseqsim_pooling must be one of"),
    ("llmseqsim_similarity", "jaccard", "llmseqsim_similarity must be one of"),
])
def test_unknown_model_options_fail_before_embeddings_are_built(tiny, monkeypatch, option, value, message):
    import recbole_llm.embeddings.store as store

    def never(*args, **kwargs):
        raise AssertionError("embeddings were built before the options were checked")

    monkeypatch.setattr(store, "build_item_embeddings", never)
    with pytest.raises(ValueError, match=message):
        build("LLMSeqSim", tiny, **{option: value})


def test_empty_splits_say_which_and_why(tiny):
    with pytest.raises(ValueError, match="no test sessions"):
        build("SASRec", tiny, eval_args={"split": {"SESSION": [0.9, 0.1, 0.0]}, "order": "TO", "group_by": "user",
                                         "mode": "full"})


@pytest.mark.parametrize("args, needles", [
    (["--model=SASRec", "--epochs=0"], ["epochs=0", "--epochs=1"]),
    (["--model=SASRec", "--epochs=-3"], ["epochs=-3"]),
    (["--model=LLMSeqSim", "--llmseqsim_pooling=median"], ["llmseqsim_pooling must be one of"]),
    (["--model=LLMSeqSim", "--embedding_reduction=pcaa", "--embedding_dim=8"], ["embedding_reduction must be one of"]),
    (["--model=SASRec", "--config_files=nowhere.yaml"], ["config file not found: nowhere.yaml"]),
])
def test_script_turns_bad_options_into_one_line(tiny, tmp_path, args, needles):
    done = _script(*args, "--dataset=tiny", f"--data_path={tiny['path']}", cwd=tmp_path)
    _one_clear_line(done, *needles)
    assert not list(Path(tmp_path).glob("saved/*.pth")), "no checkpoint for a refused run"


def test_nan_timestamps_are_refused_not_filled(tiny, tmp_path):
    inter = tiny["path"] / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines(keepends=True)
    lines[3] = "\t".join(lines[3].split("\t")[:2]) + "\t\n"
    inter.write_text("".join(lines))
    done = _script("--model=MostPopular", "--dataset=tiny", f"--data_path={tiny['path']}", cwd=tmp_path)
    _one_clear_line(done, "1 interactions have no valid timestamp")


def test_module_command_line_has_an_error_handler(tmp_path):
    done = subprocess.run([sys.executable, "-m", "recbole_llm", "embed", "--dataset", "nothing", "--data_path",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_clear_line(done, "nothing")


# --- money: nothing paid twice, one clear error from a misbehaving provider --------------------------------

def _openai(server, **options):
    from recbole_llm.embeddings.providers import make_provider

    return make_provider("openai", "text-embedding-3-small", api_key="sk-test", base_url=server.url + "/v1", **options)


def test_a_hanging_or_garbled_provider_is_one_clear_error_naming_the_endpoint(tmp_path):
    import time

    from loopback import Loopback

    from recbole_llm.embeddings.cache import EmbeddingCache
    from recbole_llm.embeddings.embed import embed_texts
    from recbole_llm.errors import ProviderError

    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", lambda b, m, h: (time.sleep(2), (200, {}, {}))[1])
        provider = _openai(server, timeout=0.3, max_retries=1)  # the SDK's import is not what is timed
        started = time.perf_counter()
        with pytest.raises(ProviderError, match=r"127\.0\.0\.1.*embedding_timeout / embedding_max_retries"):
            embed_texts(provider, ["a title"], EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
        # two attempts that waited for the server would take >= 4 s
        assert time.perf_counter() - started < 3.5, "the configured timeout and retries, not minutes"
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", lambda b, m, h: (200, b"{not json", {}))
        with pytest.raises(ProviderError, match="unreadable"):
            embed_texts(_openai(server, max_retries=0), ["a title"], EmbeddingCache(tmp_path / "d.sqlite"),
                        show_progress=False)


def test_two_processes_embedding_the_same_texts_pay_once(tmp_path):
    import time

    from loopback import Loopback, openai_embeddings

    embedded = []

    def slow(body, match, headers):
        embedded.extend(body["input"])
        time.sleep(0.3)
        return openai_embeddings(body, match, headers)

    code = (
        "import sys; sys.argv = ['x']; import recbole_llm; from recbole_llm.embeddings.providers import make_provider;"
        "from recbole_llm.embeddings.cache import EmbeddingCache; from recbole_llm.embeddings.embed import embed_texts;"
        "p = make_provider('openai', 'text-embedding-3-small', api_key='sk-test', base_url=sys.argv[1]);"
        "p.max_batch = 10; embed_texts(p, [f'title {i}' for i in range(40)], EmbeddingCache(sys.argv[2]),"
        " show_progress=False)"
    )
    with Loopback() as server:
        server.route("POST", r"/v1/embeddings", slow)
        runs = [subprocess.Popen([sys.executable, "-c", code.replace("sys.argv[1]", repr(server.url + "/v1"))
                                  .replace("sys.argv[2]", repr(str(tmp_path / "c.sqlite")))]) for _ in range(2)]
        assert [r.wait(timeout=300) for r in runs] == [0, 0]
    assert sorted(embedded) == sorted(f"title {i}" for i in range(40)), "each text paid for once"


def test_a_damaged_cache_keeps_its_readable_rows_and_an_empty_one_warns(tmp_path, caplog):
    from recbole_llm.embeddings.cache import EmbeddingCache

    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    keys = [f"k{i}" for i in range(400)]
    cache.put_many(keys, np.random.default_rng(0).normal(size=(400, 96)).astype(np.float32))
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096  # one damaged page in the middle of the file
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        salvaged = EmbeddingCache(path)
    kept = len(salvaged.get_many(keys))
    assert 300 < kept < 400, kept
    assert "entries salvaged" in caplog.text and list(tmp_path.glob("c.sqlite.corrupt-*"))
    caplog.clear()
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with caplog.at_level("WARNING"):
        EmbeddingCache(tmp_path / "empty.sqlite")
    assert "empty (0 bytes)" in caplog.text


@pytest.mark.parametrize("damage", ["cut to half", "first 100 bytes", "first page", "a page in the middle"])
@pytest.mark.parametrize("dim", [96, 1536])  # 1536-d rows do not fit a page: their vectors run on overflow pages
def test_a_damaged_cache_salvages_every_row_whose_pages_survive(tmp_path, caplog, damage, dim):
    """The damage patterns of #41: SQLite itself reads nothing of a file cut short or with a damaged header,
    yet the rows sit intact in their leaf pages; each salvaged vector is checked against its CRC."""
    from recbole_llm.embeddings.cache import EmbeddingCache

    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    keys = [f"{i:064x}" for i in range(600)]
    vectors = np.random.default_rng(0).normal(size=(600, dim)).astype(np.float32)
    cache.put_many(keys, vectors)
    cache.put_batch_job("job-1", "batch_abc")
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    data = bytearray(path.read_bytes())
    if damage == "cut to half":
        data = data[: len(data) // 2]
    elif damage == "first 100 bytes":
        data[:100] = b"\x00" * 100
    elif damage == "first page":
        data[:4096] = b"\xff" * 4096
    else:
        middle = len(data) // 2 // 4096 * 4096
        data[middle : middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        salvaged = EmbeddingCache(path)
    found = salvaged.get_many(keys)
    # a damaged overflow page leaves the file readable to SQLite: its row fails its CRC and is dropped on read
    assert "entries salvaged" in caplog.text or "corrupt embedding cache entries" in caplog.text
    assert all(np.array_equal(found[k], vectors[i]) for i, k in enumerate(keys) if k in found), "only true rows"
    least = {"cut to half": 0.4, "first 100 bytes": 1.0, "first page": 0.95, "a page in the middle": 0.9}[damage]
    assert len(found) >= least * len(keys), (damage, len(found))
    if damage == "first 100 bytes":
        assert salvaged.batch_job("job-1") == "batch_abc", "a paid batch job's record survives too"


def test_a_cache_killed_before_its_checkpoint_salvages_the_committed_rows_of_its_wal(tmp_path, caplog):
    """A process killed before SQLite folded the WAL into the file leaves the newest rows only in the WAL: with the
    file itself lost, the salvage takes the WAL's committed frames, not a transaction that never committed."""
    import shutil
    import zlib

    from recbole_llm.embeddings.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache._db.execute("PRAGMA wal_autocheckpoint=0")
    cache._db.execute("PRAGMA cache_size=1")  # the open transaction's pages spill into the WAL, uncommitted
    keys = [f"{i:064x}" for i in range(300)]
    vectors = np.random.default_rng(1).normal(size=(300, 64)).astype(np.float32)
    cache.put_many(keys[:100], vectors[:100])
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the first 100 in the file, then 200 more in the WAL only
    cache.put_many(keys[100:], vectors[100:])
    wrong = np.zeros(64, dtype=np.float32).tobytes()
    cache._db.execute("BEGIN")
    cache._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, 64, ?, ?)",
                          [(k, zlib.crc32(wrong), wrong) for k in keys[:200]])
    copy = tmp_path / "killed"
    copy.mkdir()
    shutil.copy(tmp_path / "c.sqlite-wal", copy / "c.sqlite-wal")  # what a kill -9 leaves, the file itself lost
    (copy / "c.sqlite").write_bytes(b"")
    cache._db.rollback()
    cache.close()
    with caplog.at_level("WARNING"):
        found = EmbeddingCache(copy / "c.sqlite").get_many(keys)
    assert "entries salvaged" in caplog.text
    assert set(keys[100:]) <= set(found), "every row committed to the WAL (its pages may hold a few older ones)"
    assert len(found) < 300, "the rows only the lost file held are lost"
    assert all(np.array_equal(found[k], vectors[i]) for i, k in enumerate(keys) if k in found), \
        "no row of the transaction that never committed"


def test_an_api_key_on_the_command_line_is_refused_and_never_written(tiny, tmp_path):
    done = _script("--model=LLMSeqSim", "--dataset=tiny", f"--data_path={tiny['path']}", "--openai_api_key=sk-SECRET",
                   cwd=tmp_path)
    _one_clear_line(done, "OPENAI_API_KEY", "openai_api_key")
    assert "sk-SECRET" not in done.stdout + done.stderr
    assert not any("sk-SECRET" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_dry_run_ends_successfully_with_one_line(tiny, tmp_path):
    done = _script("--model=LLMSeqPrompt", "--dataset=tiny", f"--data_path={tiny['path']}", "--llm_provider=openai",
                   "--llm_dry_run=True", "--state=ERROR", "--max_test_sessions=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "dry run:" in done.stdout and "nothing was sent" in done.stdout and "Traceback" not in done.stderr
    assert list(tmp_path.glob("saved/llmseqprompt/tiny/genitem/openai-*/train.jsonl"))


def test_missing_title_column_and_a_catalog_smaller_than_the_model_are_one_line(tiny, tmp_path):
    item = tiny["path"] / "tiny" / "tiny.item"
    item.write_text(item.read_text().replace("title:token_seq", "name:token_seq"))
    done = _script("--model=LLMSeqSim", "--dataset=tiny", f"--data_path={tiny['path']}", cwd=tmp_path)
    _one_clear_line(done, "title", "embedding_text_fields")
    item.write_text(item.read_text().replace("name:token_seq", "title:token_seq"))
    done = _script("--model=LLM2SASRec", "--dataset=tiny", f"--data_path={tiny['path']}", "--hidden_size=64",
                   "--inner_size=64", cwd=tmp_path)  # 20 items: PCA gives at most 20 components, the model needs 64
    _one_clear_line(done, "needs 64", "embedding_reduction")
    assert not list(Path(tmp_path).glob("saved/*.pth"))


def test_a_setting_renamed_to_carry_its_model_prefix_is_refused_with_the_new_name(tiny, tmp_path):
    done = _script("--model=LLMSeqSim", "--dataset=tiny", f"--data_path={tiny['path']}", "--distill_weight=0.5",
                   "--max_train_steps=3", cwd=tmp_path)
    _one_clear_line(done, "distill_weight -> llmsrec_distill_weight", "llm_max_train_steps (LLMSeqPrompt)")


@pytest.mark.parametrize("args, needle", [
    (["--hidden_size=-64"], "hidden_size=-64"), (["--embedding_size=-8"], "embedding_size=-8"),
    (["--MAX_ITEM_LIST_LENGTH=0"], "MAX_ITEM_LIST_LENGTH=0"),
    (["--embedding_max_cost_usd=cheap"], "embedding_max_cost_usd='cheap'"),
])
def test_bad_sizes_and_numbers_are_one_line_each(tmp_path, args, needle):
    _one_clear_line(_script("--model=SASRec", "--dataset=ml-100k", *args, cwd=tmp_path), needle)
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize("text, needle", [("", "the file is empty"), ("a: [1, 2\n", "not valid YAML (line"),
                                          ("- just\n- a list\n", "not a list")])
def test_a_malformed_or_empty_yaml_is_named(tmp_path, text, needle):
    (tmp_path / "mine.yaml").write_text(text)
    _one_clear_line(_script("--model=Pop", "--dataset=ml-100k", "--config_files=mine.yaml", cwd=tmp_path),
                    "mine.yaml", needle)


def test_a_template_naming_no_column_is_named(tiny):
    from recbole_llm.data.catalog import item_texts, read_catalog

    catalog = read_catalog(tiny["path"] / "tiny", "tiny")
    with pytest.raises(ValueError, match=r"names \{nope\}.*columns are \['item_id', 'title', 'class'\]"):
        item_texts(catalog, EmbeddingSpec(template="{nope}"))


def test_a_mistyped_setting_is_refused_with_the_closest_name(tmp_path):
    _one_clear_line(_script("--model=Pop", "--dataset=ml-100k", "--epoch=1", cwd=tmp_path),
                    "unknown setting --epoch (did you mean --epochs?)")
    (tmp_path / "mine.yaml").write_text("my_own_knob: 3\n")  # a key the user declares is theirs to use
    done = _script("--model=Pop", "--dataset=ml-100k", "--config_files=mine.yaml", "--my_own_knob=4",
                   "--embedding_max_cost_usd=5", "--state=ERROR", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
