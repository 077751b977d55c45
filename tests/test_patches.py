"""The one table of RecBole patches: applied once, in place, refused on a RecBole it was not written for."""
import pathlib
import pickle
import warnings

import pytest
import torch

import recbole_llm
from recbole_llm import patches

PACKAGE = pathlib.Path(recbole_llm.__file__).parent


def test_every_row_is_applied_once_and_is_what_recbole_now_calls():
    rows = patches.applied()
    targets = [row.target for row, _, _ in rows]
    assert set(targets) >= {row.target for row in patches.table() if not row.target.startswith("numpy:")}
    patches.apply()  # idempotent: nothing wrapped twice
    assert len(patches.applied()) == len(rows)
    import numpy as np

    assert all(hasattr(np, name) for name in ("float_", "complex_", "unicode_", "float", "bool8"))
    last = {row.target: replacement for row, _, replacement in rows if not row.target.startswith("numpy:")}
    for target, replacement in last.items():
        owner, name = patches._resolve(patches.Patch(target, None, ""))
        assert vars(owner)[name] is replacement, target
    # a later row wraps what the earlier one left: Trainer.evaluate carries the DDP fix under the prompt mask
    evaluates = [(original, replacement) for row, original, replacement in rows
                 if row.target.endswith("Trainer.evaluate")]
    assert len(evaluates) == 2 and evaluates[1][0] is evaluates[0][1]


def test_an_untested_recbole_is_refused_with_the_fix(monkeypatch):
    patches.check_recbole_version("1.2.1")
    monkeypatch.delenv(patches.UNTESTED_RECBOLE_ENV, raising=False)
    with pytest.raises(RuntimeError, match=r"found RecBole 1\.3\.0.*pip install recbole==1\.2\.1"):
        patches.check_recbole_version("1.3.0")
    monkeypatch.setenv(patches.UNTESTED_RECBOLE_ENV, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patches.check_recbole_version("1.3.0")
    assert any("trying anyway" in str(w.message) for w in caught)


def test_a_target_that_moved_is_refused_before_anything_is_patched():
    inherited = patches.Patch("recbole.model.sequential_recommender.sasrec:SASRec.fit", lambda o: o, "why")
    with pytest.raises(RuntimeError, match=r"cannot patch recbole\.model.*SASRec\.fit \(why\)"):
        patches._resolve(inherited)  # SASRec inherits it: patching there would hit the wrong class
    with pytest.raises(RuntimeError, match="not there in this installation"):
        patches._resolve(patches.Patch("recbole.no_such_module:f", lambda o: o, "why"))


def test_checkpoints_are_read_through_one_safe_loader(tmp_path):
    from recbole.config import Config  # RecBole pickles its Config into every checkpoint

    path = tmp_path / "model.pth"
    torch.save({"config": Config.__new__(Config), "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(ValueError, match="could run code"):
        patches.load_checkpoint(path)
    loaded = patches.load_checkpoint(path, trusted=True)  # the caller says it made the file
    assert isinstance(loaded["config"], Config) and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    unsafe = [str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py")
              if "weights_only=False" in f.read_text() and f.name != "checkpoints.py"]
    assert unsafe == []
