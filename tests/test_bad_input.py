"""Bad input through the real entry points: one clear line, a non-zero exit, nothing computed for nothing."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import build

from recbole_llm.embeddings.store import EmbeddingMismatchError, EmbeddingSpec, read_catalog, read_itememb

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
    import recbole_llm.model.llmseqsim as module

    def never(*args, **kwargs):
        raise AssertionError("embeddings were built before the options were checked")

    monkeypatch.setattr(module, "item_embedding_table", never)
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
