"""Checkpoints that load without running code.

RecBole pickles its whole ``Config`` (and whatever else a state holds) into every checkpoint with pickle protocol
4, so reading one means unpickling arbitrary objects: a checkpoint from elsewhere can run code. Every checkpoint
our flows write (RecBole's trainer through the patch table, our resume files) is instead plain data: tensors,
numbers, strings, lists and dicts, with the run's settings as a dict (``config``: model, dataset and the settings
given to RecBole's Config, from which the Config is rebuilt). ``load_checkpoint`` reads with torch's
``weights_only=True``, which can only rebuild such data. A pickled checkpoint (RecBole's own format, or ours
before this format) is refused with a message, unless the caller says it trusts the file (``trusted=True``,
``--trust_checkpoint``, or ``RECBOLE_LLM_TRUST_CHECKPOINTS=1``), which names the risk.
"""
from __future__ import annotations

import enum
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import MissingFileError, SettingError

FORMAT = "recbole_llm.checkpoint/1"
TRUST_ENV = "RECBOLE_LLM_TRUST_CHECKPOINTS"


class UntrustedCheckpointError(SettingError):
    """A checkpoint that would have to be unpickled in full (it could run code)."""


def plain(value):
    """``value`` as data ``weights_only`` can load: numpy arrays become tensors, numpy scalars Python numbers,
    enums their names, ordered dicts dicts; anything else that is not plain data becomes its ``str``."""
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float subclass
        return value.item()
    if isinstance(value, enum.Enum):  # before int: IntEnum members are ints
        return value.name
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str, bytes):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):  # OrderedDict too: loaded back as a dict
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, torch.device):
        return str(value)
    return str(value)


def config_record(config) -> dict:
    """What rebuilds a run's Config: its model, dataset and the settings given to it (files, dict, command line)."""
    if isinstance(config, dict) and config.get("format") == FORMAT:
        return config
    settings = dict(getattr(config, "external_config_dict", {}) or {})
    settings.pop("model", None), settings.pop("dataset", None)
    return {"format": FORMAT, "model": str(config["model"]), "dataset": str(config["dataset"]),
            "settings": plain(settings), "seed": config["seed"], "hash": config_hash(config)}


# settings that change where or how loudly a run goes, not what it computes
VOLATILE_SETTINGS = {"state", "show_progress", "data_path", "checkpoint_dir", "device", "gpu_id", "use_gpu",
                     "local_rank", "single_spec", "world_size", "nproc", "offset", "ip", "port", "log_wandb",
                     "wandb_project", "llm_state_shard",
                     # how the same numbers are computed, like the thread count (also not hashed): the fused full
                     # softmax is the plain one's loss and gradients up to float rounding (tests/test_fused_softmax.py);
                     # so is the cloze losses' last block at the masked positions, with the same random draws on the
                     # CPU (tests/test_cloze_states.py; on a GPU torch's fused dropout draws another stream of the
                     # same distribution), and torch's GELU kernel for RecBole's (tests/test_fused_gelu.py)
                     "full_softmax", "train_keep_freed_memory", "cloze_last_block", "feed_forward_gelu"}


# Keys given a default in a model's yaml after runs had recorded their hash, by the yaml that declares them, at the
# value it declares, one dict per stage in order (stop 51: the move into our own classes, then the defaults moved
# from code into yaml; stop 54: dropout_sampler). A run made before a stage, which read none of its keys, computed
# what a run at these values computes; ``config_hashes`` also gives the hash without each later stage's keys, so
# that run (and an ensemble member named by its hash) is still found, not made again.
_PAPER_CATALOG = {"softmax_negatives": None, "softmax_sampler": "uniform", "softmax_loss": "ce", "gbce_t": 0.75,
                  "train_precision": "fp32"}
_ANN = {"ann_hnsw_m": 32, "ann_ef_construction": 80, "ann_ef_search": 128, "ann_nprobe": 32}
_STOP_51 = {
    "PaperSASRec.yaml": {"output_dense": None, "output_bias": False, "pack_sequences": False, **_PAPER_CATALOG},
    "PaperGRU4Rec.yaml": {"output_dense": None, "output_bias": False, **_PAPER_CATALOG},
    "PaperBERT4Rec.yaml": {"bert_layers": "recbole", "bert_padding": "right", "bert_predict_mask": "recbole",
                           "pack_sequences": False, **_PAPER_CATALOG},
    "SKNNEmb.yaml": {"sknn_emb_index": "auto", "sknn_emb_ann_min_sessions": 200000, **_ANN},
    "LLMSeqSimSeqHybrid.yaml": {"llmseqsim_index": "exact", "llmseqsim_ann_min_items": 200000,
                                "llmseqsim_ann_candidates": 200, **_ANN},
    "LLMSeqPrompt.yaml": {"prompt_rank_score": "sum", "prompt_rank_prior": 0.0, "llmseqsim_pooling": "mean",
                          "llm_gradient_checkpointing": True},
    "LLMESRSASRec.yaml": {"embedding_freeze": False},
    "LLMESRGRU4Rec.yaml": {"embedding_freeze": False},
}
_STOP_54 = {name: {"dropout_sampler": "torch"} for name in ("PaperSASRec.yaml", "PaperGRU4Rec.yaml",
                                                             "PaperBERT4Rec.yaml")}
_OUR_CLASSES = {"ScoreEnsemble.yaml": {"ensemble_train_members": False}}  # 558c34d, the move into our own classes
DEFAULTS_ADDED_TO_YAML = (_OUR_CLASSES, _STOP_51, _STOP_54)
# The paper's sequential models under the names they had before the move into our own classes (558c34d, stop 51):
# until then ``SASRec`` was RecBole's class with our behaviour patched in, which computed what PaperSASRec computes
# (``benchmarks/subclass_equivalence.py``). A run recorded then hashed the old name (its own, or an ensemble
# member's), and the preset file's old name in ``preset``, before every stage's keys existed.
NAMES_BEFORE_OUR_CLASSES = {"PaperSASRec": "SASRec", "PaperGRU4Rec": "GRU4Rec", "PaperBERT4Rec": "BERT4Rec"}
# The commits whose runs recorded a hash before the move (``git rev-list 07f5412^..558c34d^``, 12 hex digits): only
# their records may match under the old names. From the move on, ``SASRec`` is RecBole's own class, which at the
# same settings hashes like the renamed PaperSASRec but trains otherwise: a record is told by the code that made it.
COMMITS_BEFORE_OUR_CLASSES = frozenset("""
03aeb46d3299 07f5412cb3d1 0d33ad9669a0 0e97a0b638a9 10f670b7471b 180f8d6ce614 1c86d12cb6e8 2a61d2275fe3 2cb8a836322f
2f4c4fd6357c 306875dd19de 4ceb9430afca 50b1ba7086b4 6382f63dcf2d 7a2e63bf0045 7addb1474d01 8bd0aa3b228f 8cbffa3b184b
96cd039e15a5 99172e0c1bd5 9a95e9856617 a2c0c5911f6f ab4a20bf6296 ac77adb28b55 beeffb1e48f6 c158b98a5175 c32af4cec4d7
cb625faf523b d0160d46a7cf d17b50defb61 d3e779db491e d76219bb4332 dfa32cf66bf5 e505de958c1d ea8ac5acad44 ed7bbacf4c4e
ee92ad2607d0 f0eeba7ac9c2 f7c1efca6219 f8204bf0fcc5 ff5d5322d091
""".split())
# Keys that did not exist before their stage: no run made before it could set them, so at the stage's value they
# come out of the earlier hashes however this run set them (e.g. a paper preset file pinning the faithful value
# where the model's yaml defaults to a faster one).
NEW_KEYS = {"train_precision", "dropout_sampler"}


def _digest(settings: dict) -> str:
    import hashlib
    import json

    text = json.dumps(plain(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Field names RecBole's data transforms (recbole/data/transform.py) write into the config while the data is
# prepared, derived from the model's ``transform``: a run's config has them at its end, a Config made to ask whether
# that run is current does not. Not inputs, so not hashed (runs recorded with them: ``config_hashes``).
TRANSFORM_KEYS = {"MASK_INDEX", "MASK_ITEM_SEQ", "POS_ITEMS", "NEG_ITEMS", "INVERSE_ITEM_SEQ", "CROP_ITEM_SEQ",
                  "CROP_ITEM_SEQ_LEN", "REORDER_ITEM_SEQ"}


def _hashed_settings(config) -> dict:
    """The resolved settings (RecBole's final config) without the ones that only say where files go or how much is
    printed, or that RecBole's transforms derive. ``train_precision`` counts as fp32 for a model whose trainer does
    not read it: a hybrid carries its LLM2 partner's yaml default (``auto``) but trains in fp32 whatever it says."""
    settings = {str(k): v for k, v in dict(config.final_config_dict).items()
                if k not in VOLATILE_SETTINGS and k not in TRANSFORM_KEYS}
    if settings.get("train_precision") not in (None, "fp32"):
        from .registry import declares_setting

        if not declares_setting(config["model"], "train_precision"):
            settings["train_precision"] = "fp32"
    return settings


def _transform_keys(config) -> dict:
    """The ``TRANSFORM_KEYS`` RecBole's transform of this config writes (none without a ``transform``)."""
    import copy

    from recbole.data.transform import construct_transform

    try:
        if not config["transform"]:
            return {}
        scratch = copy.deepcopy(config)
        construct_transform(scratch)
    except Exception:  # noqa: BLE001 - only for matching older runs' hashes
        return {}
    return {k: v for k, v in dict(scratch.final_config_dict).items() if k in TRANSFORM_KEYS}


def config_hash(config) -> str:
    """A digest of everything a run computes from (``_hashed_settings``)."""
    return _digest(_hashed_settings(config))


def config_hashes(config) -> tuple[str, ...]:
    """``config_hash`` first, then the hash a run of these settings recorded before each stage of
    ``DEFAULTS_ADDED_TO_YAML``, latest first: the same settings without the keys that only that stage's (and every
    later stage's) yaml entries set (not a preset file, not the run's own settings, except for ``NEW_KEYS``); then,
    for a model with a data transform, each of those with the ``TRANSFORM_KEYS`` a run recorded before stop 54.
    Duplicates are dropped (a stage that set none of this model's keys), so only the first position is fixed."""
    return _with_transform_keys(config, _setting_versions(config))


def made_before_our_classes(record: dict) -> bool:
    """Whether a run's record was made by a commit before the move into our own classes (its provenance)."""
    sha = (record.get("provenance") or {}).get("git_sha")
    return isinstance(sha, str) and sha[:12] in COMMITS_BEFORE_OUR_CLASSES


def hashes_before_our_classes(config) -> tuple[str, ...]:
    """The hashes a run of these settings recorded before the move into our own classes, under the old names
    (``NAMES_BEFORE_OUR_CLASSES``); none where no name changed. Not in ``config_hashes``: today's RecBole SASRec at
    the same settings hashes alike but computes otherwise, so only a record ``made_before_our_classes`` may match
    them (``experiment.finished_run_is_current``)."""
    renamed = _before_our_classes(_setting_versions(config)[-1])
    return () if renamed is None else _with_transform_keys(config, [renamed])


def _setting_versions(config) -> list[dict]:
    """The hashed settings, then the settings without each later stage's keys, latest stage first."""
    settings = _hashed_settings(config)
    given = set()
    for part in ("file_config_dict", "variable_config_dict", "cmd_config_dict"):
        given |= set(getattr(config, part, None) or {})
    names = _model_yaml_names(config)
    versions, earlier = [settings], dict(settings)
    for stage in reversed(DEFAULTS_ADDED_TO_YAML):
        for name in names:
            for key, value in stage.get(name, {}).items():
                if ((key not in given or key in NEW_KEYS) and key in earlier and type(earlier[key]) is type(value)
                        and earlier[key] == value):
                    del earlier[key]
        versions.append(dict(earlier))
    return versions


def _with_transform_keys(config, versions: list[dict]) -> tuple[str, ...]:
    derived = _transform_keys(config)  # runs recorded before stop 54 hashed these too
    hashes = [_digest(v) for v in versions] + ([_digest({**v, **derived}) for v in versions] if derived else [])
    return tuple(dict.fromkeys(hashes))  # a stage that set none of this model's keys adds no other hash


def _before_our_classes(earliest: dict) -> dict | None:
    """The settings a run of a paper sequential model (or an ensemble of one) recorded before the move into our own
    classes: the settings before the earliest stage, under the old model, member and preset file names; None where
    no name changed."""
    def old_name(name):
        return NAMES_BEFORE_OUR_CLASSES.get(name, name) if isinstance(name, str) else name

    def old_member(member):  # {model: ..., checkpoint: ...}, or a bare model name
        return {**member, "model": old_name(member.get("model"))} if isinstance(member, dict) else old_name(member)

    renamed = {**earliest, "model": old_name(earliest.get("model"))}
    members = earliest.get("ensemble_members")
    if isinstance(members, list):
        renamed["ensemble_members"] = [old_member(m) for m in members]
    if renamed == earliest:
        return None
    new, old = earliest.get("model"), renamed["model"]
    if new != old and isinstance(renamed.get("preset"), str):
        renamed["preset"] = renamed["preset"].replace(f"/{new}.yaml", f"/{old}.yaml")
    return renamed


def _model_yaml_names(config) -> list[str]:
    """The names of the model yaml files a Config of ours read (its model's, and a wrapped companion model's)."""
    from .registry import get_model, model_yaml_files

    try:
        model = get_model(config["model"])
    except Exception:  # noqa: BLE001 - a name RecBole resolves otherwise: no yaml of ours
        return []
    files = model_yaml_files(model)
    companion_key = getattr(model, "companion_model_key", None)
    if companion_key and config[companion_key]:
        files += model_yaml_files(get_model(config[companion_key]))
    return [file.name for file in files]


def rebuild_config(record: dict):
    """The Config of a checkpoint's ``config`` record."""
    from recbole.config import Config

    return Config(model=record["model"], dataset=record["dataset"], config_dict=dict(record["settings"]))


def save_checkpoint(state: dict, path: os.PathLike) -> None:
    """``state`` as plain data (its config as a record), written atomically."""
    state = dict(state)
    if "config" in state:
        state["config"] = config_record(state["config"])
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(state), tmp)
    os.replace(tmp, path)


def trusted_by_environment() -> bool:
    return os.environ.get(TRUST_ENV) == "1"


def load_checkpoint(path: os.PathLike, map_location="cpu", trusted: bool = False) -> dict:
    """A checkpoint's state, loaded with ``weights_only=True``. A pickled checkpoint is read in full only when
    ``trusted`` (or ``RECBOLE_LLM_TRUST_CHECKPOINTS=1``); otherwise it is refused, naming the file and the way."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if trusted or trusted_by_environment():
            return torch.load(path, map_location=map_location, weights_only=False)
        raise UntrustedCheckpointError(
            f"checkpoint {path} holds pickled Python objects (RecBole's own checkpoint format, or an older "
            "recbole-llm's): loading it could run code. If you made it yourself, load it as trusted "
            f"(--trust_checkpoint, trusted=True or {TRUST_ENV}=1)") from error
    except (RuntimeError, EOFError, OSError) as error:  # truncated, not a torch file, unreadable zip
        raise SettingError(f"checkpoint {path} is not a readable torch checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]})") from error


def checkpoint_config(checkpoint: dict, path: os.PathLike = "checkpoint"):
    """The Config a loaded checkpoint was trained with (a record is rebuilt; a trusted pickled Config is used)."""
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if config is None:
        raise SettingError(f"{path} has no run settings ('config'): it is not a RecBole or recbole-llm checkpoint")
    if isinstance(config, dict):
        if config.get("format") != FORMAT:
            raise SettingError(f"{path}: unknown checkpoint format {config.get('format')!r}")
        return rebuild_config(config)
    return config
