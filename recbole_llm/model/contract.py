"""The contract between a model of ours and the code that runs it: what a model class may declare, beside RecBole's
own API (``__init__(config, dataset)``, ``calculate_loss``, ``predict``, ``full_sort_predict``).

Every hook is optional; the pipeline reads each with a default. ``tests/test_model_contract.py`` checks every
registered model against the rules below, and that the code reads no hook this file does not declare.

Rules: the constructor only reads (the prepared files, the training split, a checkpoint); it writes nothing, calls
no provider and trains nothing: that is the prepare stage's (``prepare_resources``) or the trainer's work. Scores
are [sessions, items]; a session's scores do not depend on the rest of its batch; ``predict`` agrees with
``full_sort_predict``; a state dict loaded into a model built with the same settings scores the same; the same
seed builds the same model.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

HOOKS = {
    "settings_class": "the model's settings (a recbole_llm.settings.ModelSettings dataclass; defaults only in yaml)",
    "check_settings": "classmethod(config): refuse bad settings before any data is read or anything is paid for",
    "prepare_resources": "classmethod(config, train_dataset): make or reuse the files the constructor reads",
    "needs_training": "False: fitted at construction (kNN, LLMSeqSim), no training epochs",
    "fits_in_one_pass": "classmethod(config) -> bool, where needs_training depends on the settings",
    "trainer_class": "the model's own Trainer (RecBole's get_trainer is asked otherwise)",
    "companion_model_key": "the setting naming a model this one wraps, whose defaults it also reads",
    "reads_window_rows": "True: the loss reads train_mode: all_positions window rows",
    "catalog_table": "method() -> [items, d]: what a state is scored against, where it is not the tied table",
    "expensive_scoring": "True: every score is an LLM call (no FLOPs probe, sampled test sessions)",
    "evaluation_report": "method() -> dict: figures the model adds to its evaluation result",
    "trains_members": "True: members without a checkpoint may be trained before the model is built (ScoreEnsemble)",
    "shared_on_copy": "attribute names shared, not duplicated, when RecBole deep-copies the model",
}


@runtime_checkable
class RecboleLLMModel(Protocol):
    """The hooks above as a type (all optional at run time: the pipeline reads each with a default)."""

    needs_training: ClassVar[bool]
    trainer_class: ClassVar[Any]
    reads_window_rows: ClassVar[bool]

    @classmethod
    def check_settings(cls, config) -> None: ...

    @classmethod
    def prepare_resources(cls, config, dataset) -> None: ...
