"""The prepare stage: what a model reads that costs to make, made once, before the model is built.

Data flows one way: titles -> embeddings (a provider, possibly paid; cached) -> reduced file -> model. A
model class that reads such things says so with two class methods: ``check_settings(config)`` (cheap checks
that refuse a bad setting before any paid call) and ``prepare_resources(config, dataset)`` (make or reuse
its files). ``prepare`` runs both for the configured model, and makes the embeddings the IntraListDiversity
metric reads, after the split and before the model: RecBole's ``data_preparation`` calls it (see
``patches.py``), so RecBole's own run, its hyper-tuning, DDP processes and our pipeline all prepare the same
way, and model constructors only read. Training work (fine-tuning an LLM, a teacher model) belongs to the
model's trainer, not here.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def check_settings(config) -> None:
    """The configured model's own checks (nothing is read or computed)."""
    from .registry import get_model

    hook = getattr(get_model(config["model"]), "check_settings", None)
    if hook is not None:
        hook(config)


def prepare(config, dataset) -> None:
    """Make (or reuse) everything the configured model and metrics read; ``dataset`` is the training split."""
    from .registry import get_model

    check_settings(config)
    hook = getattr(get_model(config["model"]), "prepare_resources", None)
    if hook is not None:
        hook(config, dataset)
    if "intralistdiversity" in [str(m).lower() for m in (config["metrics"] or [])]:
        from .embeddings.store import EmbeddingMismatchError, prepare_item_embeddings
        from .metrics import diversity_recipe

        try:
            prepare_item_embeddings(diversity_recipe(config))
        except EmbeddingMismatchError:
            raise
        except (FileNotFoundError, ValueError) as error:  # no item texts: the metric reports NaN
            logger.warning("IntraListDiversity needs item texts to embed; it will report NaN (%s)", error)


def prepare_after_split(original):
    """``data_preparation`` (the patch table's row): the split, then the prepare stage on its training part."""
    import functools

    @functools.wraps(original)
    def data_preparation(config, dataset):
        loaders = original(config, dataset)
        prepare(config, loaders[0]._dataset)
        return loaders

    return data_preparation
