"""Settings have one typed home per model (``settings_class``, a ``recbole_llm.settings.ModelSettings`` dataclass)
and their defaults only in yaml: every registered model's settings read from its yaml alone, a model file keeps no
code default for any setting and reads its own settings only through its class, and a bad value is refused with
the key's name."""
import ast
import dataclasses
from pathlib import Path

import pytest
from recbole.config import Config

from recbole_llm.errors import SettingError
from recbole_llm.registry import get_model, registered_models
from recbole_llm.settings import ModelSettings, typed_value

MODEL_DIR = Path(__file__).resolve().parent.parent / "recbole_llm" / "model"
NO_SETTINGS = {"MostPopular": "counts training items; nothing to set"}


@pytest.mark.parametrize("name", registered_models())
def test_every_model_reads_its_typed_settings_from_its_yaml_alone(name):
    """No preset, no config file: the model's yaml (and RecBole's) must declare every field."""
    settings_class = getattr(get_model(name), "settings_class", None)
    if name in NO_SETTINGS:
        assert settings_class is None
        return
    assert isinstance(settings_class, type) and issubclass(settings_class, ModelSettings), name
    assert dataclasses.is_dataclass(settings_class)
    assert all(field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
               for field in dataclasses.fields(settings_class)), "defaults live in yaml, not in the dataclass"
    settings = settings_class.read(Config(model=name, dataset="ml-100k", config_dict={"data_path": "/nonexistent"}))
    assert isinstance(settings, settings_class)


@pytest.mark.parametrize("name", [m for m in registered_models() if m not in NO_SETTINGS])
def test_every_model_reads_its_settings_under_both_presets(name):
    from recbole_llm.presets import config_files

    for preset in ("paper", "best"):
        config = Config(model=name, dataset="beauty", config_file_list=config_files(None, name, "beauty", preset),
                        config_dict={"data_path": "/nonexistent"})
        get_model(name).settings_class.read(config)


def _settings_fields() -> set[str]:
    return {field.name for name in registered_models() if name not in NO_SETTINGS
            for field in dataclasses.fields(get_model(name).settings_class)}


def _calls(tree):
    """(function name enclosing, node) for every node of a module."""
    def walk(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            yield inner, child
            yield from walk(child, inner)
    return walk(tree, None)


def test_model_files_keep_no_code_defaults_and_read_settings_through_their_class():
    """``config_value(config, key, default)`` / ``config_choice`` would put a default beside the yaml's, and
    ``config["key"]`` of a model setting would bypass its type and choices. ``fits_in_one_pass`` is exempt: it
    is asked about an experiment's partial settings before any Config exists (contract.py)."""
    fields = _settings_fields() - {"seed"}  # RecBole's own seed is read by RecBole too
    found = []
    for path in sorted(MODEL_DIR.glob("*.py")):
        for where, node in _calls(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("config_value", "config_choice"):
                found.append(f"{path.name}:{node.lineno} {node.func.id}")
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                    and node.slice.value in fields and where != "fits_in_one_pass"
                    and isinstance(node.ctx, ast.Load)):
                found.append(f"{path.name}:{node.lineno} [{node.slice.value!r}]")
    assert not found, found


@pytest.mark.parametrize("value,kind,expected", [
    (True, bool, True), (1, bool, True), ("False", bool, False), (3, int, 3), (3.0, int, 3), (2, float, 2.0),
    (None, int | None, None), (5, int | None, 5), ("cosine", "Literal", "cosine"), ([1, 2], list, [1, 2])])
def test_typed_values(value, kind, expected):
    from typing import Literal

    kind = Literal["cosine", "dot"] if kind == "Literal" else kind
    assert typed_value("key", value, kind) == expected


@pytest.mark.parametrize("value,kind,message", [
    ("yes", bool, "key must be True or False"), (2.5, int, "key must be a whole number"),
    (None, int, "key must be a whole number; got None"), ("x", float, "key must be a number"),
    ("cos", "Literal", "key must be one of cosine, dot; got 'cos'"), (True, int, "whole number")])
def test_bad_values_are_refused_with_the_key(value, kind, message):
    from typing import Literal

    kind = Literal["cosine", "dot"] if kind == "Literal" else kind
    with pytest.raises(SettingError, match=message):
        typed_value("key", value, kind)


def test_a_bad_setting_is_refused_before_the_data_is_read():
    from recbole_llm.prepare import check_settings

    config = Config(model="LLMSeqSim", dataset="ml-100k", config_dict={"llmseqsim_similarity": "cosin",
                                                                      "data_path": "/nonexistent"})
    with pytest.raises(SettingError, match="llmseqsim_similarity must be one of cosine, dot, euclidean; got 'cosin'"):
        check_settings(config)
    config = Config(model="PaperSASRec", dataset="ml-100k", config_dict={"softmax_negatives": "many",
                                                                        "data_path": "/nonexistent"})
    with pytest.raises(SettingError, match="softmax_negatives must be a whole number"):
        check_settings(config)


def test_a_key_no_yaml_declares_is_named():
    from recbole_llm.model.llmseqsim import LLMSeqSimSettings

    config = Config(model="LLMSeqSim", dataset="ml-100k", config_dict={"data_path": "/nonexistent"})
    settings = dict(config.final_config_dict)
    del settings["llmseqsim_ann_candidates"]
    with pytest.raises(SettingError, match="llmseqsim_ann_candidates is not set: LLMSeqSimSettings keeps no default"):
        LLMSeqSimSettings.read(settings)


def test_the_head_choices_are_the_activations():
    import typing

    from recbole_llm.model.output_head import ACTIVATIONS
    from recbole_llm.model.sequential import CausalSettings

    kind = typing.get_type_hints(CausalSettings)["output_dense"]
    literal = next(a for a in typing.get_args(kind) if a is not type(None))
    assert set(typing.get_args(literal)) == set(ACTIVATIONS)


def test_runs_recorded_before_a_default_moved_to_yaml_stay_current(tmp_path):
    """A key given a yaml default later (``DEFAULTS_ADDED_TO_YAML``), at that default, computes what the run without
    it computed: the run's recorded hash is still accepted, so a report does not run it again, and an ensemble member
    named by it is found, not trained again. A key a preset file or the run sets counts as before."""
    import json

    from recbole_llm.checkpoints import config_hash, config_hashes
    from recbole_llm.experiment import finished_run_is_current, run_settings
    from recbole_llm.presets import config_files

    def paper_sasrec(**settings):
        return Config(model="PaperSASRec", dataset="ml-100k", config_file_list=config_files(
            None, "PaperSASRec", "ml-100k", "paper"), config_dict={**run_settings(1, {}, str(tmp_path)), **settings})

    config = paper_sasrec()
    assert config["pack_sequences"] is False and config["softmax_sampler"] == "uniform"
    full, before_54, earlier = config_hashes(config)
    assert full == config_hash(config) != before_54 != earlier
    config.final_config_dict.pop("dropout_sampler")  # stop 54's
    assert config_hash(config) == before_54
    for key in ("output_dense", "output_bias", "pack_sequences", "train_precision"):  # set by PaperSASRec.yaml only
        config.final_config_dict.pop(key)
    assert config_hash(config) == earlier, "softmax_* are overall.yaml's (a preset file): they stay in the hash"
    explicit = paper_sasrec(pack_sequences=False)
    assert earlier not in config_hashes(explicit), "a run that set the key itself recorded it"
    pinned = paper_sasrec(dropout_sampler="torch", train_precision="fp32")  # keys no run before their stage had
    assert config_hashes(pinned)[1:] == (before_54, earlier), "a file or run pinning a new key at its default"
    assert before_54 not in config_hashes(paper_sasrec(dropout_sampler="uniform"))
    done = tmp_path / "PaperSASRec__seed1.json"
    for recorded, current in ((earlier, True), (before_54, True), (full, True), ("0" * 16, False)):
        done.write_text(json.dumps({"config_hash": recorded}))
        assert finished_run_is_current(done, "PaperSASRec", "ml-100k", 1, {}, str(tmp_path)) is current


def test_runs_recorded_before_our_own_classes_stay_current(tmp_path):
    """Before the move into our own classes (558c34d) the paper's SASRec ran as RecBole's SASRec with our behaviour
    patched in, read its preset from properties/paper/beauty/SASRec.yaml, and an ensemble named its members so and
    had no ``ensemble_train_members``. Those runs computed what these compute: their recorded hashes must be
    accepted, or a report trains them again (the sampled-softmax folds' SASRec rows, the LLM-SRec teachers and the
    ensembles built on them). From the move on, ``SASRec`` is RecBole's own class, which hashes alike but trains
    otherwise, so only a record made by a commit before the move is matched under the old name."""
    import json

    from recbole_llm.checkpoints import _digest, _hashed_settings, config_hash, config_hashes, hashes_before_our_classes
    from recbole_llm.experiment import finished_run_is_current, run_settings
    from recbole_llm.presets import config_files

    paper = Config(model="PaperSASRec", dataset="beauty", config_file_list=config_files(
        None, "PaperSASRec", "beauty", "paper"), config_dict=run_settings(1, {}, str(tmp_path)))
    recorded = _hashed_settings(paper)
    for key in ("dropout_sampler", "pack_sequences", "train_precision"):  # PaperSASRec.yaml's, after the move (the
        del recorded[key]  # preset file sets its output head: that was in the hash before)
    assert recorded["preset"].endswith("/PaperSASRec.yaml)")
    recorded["model"], recorded["preset"] = "SASRec", recorded["preset"].replace("/PaperSASRec.yaml", "/SASRec.yaml")
    assert hashes_before_our_classes(paper) == (_digest(recorded),)
    assert _digest(recorded) not in config_hashes(paper)

    before, at_the_move = "8bd0aa3b228f802e792cc141c20c89f9d9d84b55", "558c34d0000000000000000000000000000000000"
    done = tmp_path / "SASRec__seed1.json"
    for record, current in (({"config_hash": _digest(recorded), "provenance": {"git_sha": before}}, True),
                            ({"config_hash": _digest(recorded), "provenance": {"git_sha": at_the_move}}, False),
                            ({"config_hash": _digest(recorded)}, False),  # no provenance: not known to be older
                            ({"config_hash": _digest({**recorded, "model": "GRU4Rec"}),
                              "provenance": {"git_sha": before}}, False)):
        done.write_text(json.dumps(record))
        assert finished_run_is_current(done, "PaperSASRec", "beauty", 1, {}, str(tmp_path)) is current

    ml = Config(model="PaperSASRec", dataset="ml-100k", config_dict=run_settings(1, {}, str(tmp_path)))
    recbole_sasrec = Config(model="SASRec", dataset="ml-100k", config_dict=run_settings(1, {}, str(tmp_path)))
    assert config_hash(recbole_sasrec) in hashes_before_our_classes(ml), "why records are told by their commit"
    assert config_hash(recbole_sasrec) not in config_hashes(ml)
    assert hashes_before_our_classes(Config(model="LLM2SASRec", dataset="ml-100k",
                                            config_dict=run_settings(1, {}, str(tmp_path)))) == ()

    members = [{"model": "PaperSASRec", "checkpoint": "a.json"}, "LLMSeqSim"]
    ensemble = Config(model="ScoreEnsemble", dataset="beauty", config_dict={
        **run_settings(1, {}, str(tmp_path)), "ensemble_members": members})
    recorded = _hashed_settings(ensemble)
    assert recorded.pop("ensemble_train_members") is False
    recorded["ensemble_members"] = [{"model": "SASRec", "checkpoint": "a.json"}, "LLMSeqSim"]
    assert hashes_before_our_classes(ensemble) == (_digest(recorded),)
    unrenamed = Config(model="ScoreEnsemble", dataset="beauty", config_dict={
        **run_settings(1, {}, str(tmp_path)), "ensemble_members": ["LLM2SASRec", "LLMSeqSim"]})
    recorded = _hashed_settings(unrenamed)
    recorded.pop("ensemble_train_members")  # the move's key alone: in config_hashes, no rename needed
    assert _digest(recorded) in config_hashes(unrenamed) and hashes_before_our_classes(unrenamed) == ()


@pytest.mark.parametrize("experiment, label", [
    ("beauty_sampled_softmax_folds.yaml", "SASRec-full-fold1"),
    ("beauty_llmsrec_full.yaml", "SASRec-teacher"),
    ("beauty_ensemble.yaml", "SASRec+LLM2SASRec+LLMSeqSim"),
])
def test_committed_runs_made_before_our_own_classes_are_current(experiment, label):
    """Records committed before the move, with the hash they really recorded, against today's experiment files."""
    from recbole_llm.experiment import finished_run_is_current, load_experiment, parse_model_spec

    root = Path(__file__).resolve().parent.parent
    spec = load_experiment(root / "benchmarks" / "experiments" / experiment)
    label_, model, overrides = next(parse_model_spec(m) for m in spec["models"] if parse_model_spec(m)[0] == label)
    target = root / spec["out"] / f"{label_}__seed1.json"
    assert finished_run_is_current(target, model, spec["dataset"], 1, {**spec["set"], **overrides},
                                   spec.get("data_path"))


def test_a_cloze_runs_hash_ignores_the_field_names_recboles_transform_writes(tiny):
    """BERT4Rec's data transform writes MASK_ITEM_SEQ, POS_ITEMS, ... into the config while the data is prepared: a
    run's hash at its end must equal the hash of a fresh Config of the same settings (what a report asks), or every
    cloze run would look stale and be trained again. Runs recorded with those keys still match."""
    import copy

    from conftest import build
    from recbole_llm.checkpoints import TRANSFORM_KEYS, _digest, _hashed_settings, config_hash, config_hashes

    config = build("PaperBERT4Rec", tiny, train_mode="all_positions")[0]
    assert TRANSFORM_KEYS & set(config.final_config_dict), "the transform wrote its keys"
    fresh = copy.deepcopy(config)  # the same settings before the data was prepared
    for key in TRANSFORM_KEYS & set(fresh.final_config_dict):
        del fresh.final_config_dict[key]
    assert config_hash(config) == config_hash(fresh)
    recorded_before = _digest({**_hashed_settings(config),
                               **{k: config[k] for k in TRANSFORM_KEYS if k in config.final_config_dict}})
    assert recorded_before != config_hash(fresh) and recorded_before in config_hashes(fresh)


def test_train_precision_is_hashed_as_fp32_where_the_trainer_ignores_it(tmp_path):
    """LLMSeqSimSeqHybrid reads its partner's yaml (LLM2SASRec: ``train_precision: auto``) but trains through a
    trainer that ignores the key: its hash must not change with that default, or its recorded runs would look stale
    and be run again. A model whose trainer reads it (LLM2SASRec) hashes what it asked for."""
    from recbole_llm.checkpoints import config_hash
    from recbole_llm.experiment import run_settings

    hybrid = Config(model="LLMSeqSimSeqHybrid", dataset="ml-100k", config_dict=run_settings(1, {}, str(tmp_path)))
    assert hybrid["hybrid_sequential_model"] == "LLM2SASRec" and hybrid["train_precision"] == "auto"
    asked = config_hash(hybrid)
    hybrid.final_config_dict["train_precision"] = "fp32"
    assert config_hash(hybrid) == asked
    model = Config(model="LLM2SASRec", dataset="ml-100k", config_dict=run_settings(1, {}, str(tmp_path)))
    assert model["train_precision"] == "auto"
    asked = config_hash(model)
    model.final_config_dict["train_precision"] = "fp32"
    assert config_hash(model) != asked
