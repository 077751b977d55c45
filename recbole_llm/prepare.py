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
    """The configured model's own checks (nothing is read or computed): its typed settings read (each key present,
    of its type, within its choices), then its ``check_settings`` hook (what relates one setting to another)."""
    from .registry import get_model

    model = get_model(config["model"])
    settings_class = getattr(model, "settings_class", None)
    if settings_class is not None:
        settings_class.read(config)
    hook = getattr(model, "check_settings", None)
    if hook is not None:
        hook(config)


def prepare(config, dataset) -> None:
    """Make (or reuse) everything the configured model and metrics read; ``dataset`` is the training split."""
    from .registry import get_model

    check_settings(config)
    check_catalog_memory(config, dataset)
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


def catalog_loss_bytes(config, n_items: int) -> int:
    """Bytes of one training batch's catalog scores and their gradients: batch x supervised positions x scored
    items x 4 bytes x 3 (scores, softmax, gradient). Positions: the window under ``train_mode: all_positions``, the
    masked slots of a cloze model, else 1; items: the catalog, or the shared negatives of a sampled softmax. The
    fused full softmax holds one chunk."""
    from .settings import config_value

    batch = int(config_value(config, "train_batch_size", 2048))
    window = int(config_value(config, "MAX_ITEM_LIST_LENGTH", 50))
    if config_value(config, "transform") == "mask_itemseq":
        positions = max(1, int(float(config_value(config, "mask_ratio", 0.2)) * window))
    else:
        positions = window if config_value(config, "train_mode", "prefixes") == "all_positions" else 1
    negatives = config_value(config, "softmax_negatives")
    if not negatives and config_value(config, "full_softmax", "plain") == "fused":
        from .model.fused_softmax import chunk_rows

        return min(batch * positions, chunk_rows(n_items)) * n_items * 4 * 2  # one chunk's logits and their cast
    scored = int(negatives) + 1 if negatives else n_items
    return batch * positions * scored * 4 * 3


def check_catalog_memory(config, dataset) -> None:
    """A model with a catalog softmax (the Paper models and their subclasses) whose training batch could not fit in
    ``memory_budget_gb`` (default: 80% of this machine's memory, divided among the runs ``report`` starts side by
    side) is refused before the model is built, naming the
    settings that would fit: a sampled softmax over a catalog of a million items costs what a full one costs over
    a few hundred."""
    import os

    from .registry import get_model
    from .settings import config_value

    if not getattr(get_model(config["model"]), "reads_window_rows", False):
        return
    budget = config_value(config, "memory_budget_gb")
    # unset: 80% of the machine's memory, shared by the runs report starts side by side (--jobs)
    side_by_side = max(1, int(os.environ.get("RECBOLE_LLM_RUNS_SIDE_BY_SIDE", "1") or 1))
    budget_bytes = (float(budget) * 2**30 if budget is not None
                    else 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / side_by_side)
    needed = catalog_loss_bytes(config, dataset.item_num)
    if needed > budget_bytes:
        from .errors import SettingError

        raise SettingError(
            f"{config['model']}'s training batch would need {needed / 2**30:.1f} GiB for its catalog scores "
            f"({config['train_batch_size']} rows x {dataset.item_num:,} items) against a budget of "
            f"{budget_bytes / 2**30:.1f} GiB (memory_budget_gb): set softmax_negatives (e.g. 256, a sampled "
            "softmax: recbole_llm/model/sampled_softmax.py) or a smaller train_batch_size")


def prepare_after_split(original):
    """``data_preparation`` (the patch table's row): the split, then the prepare stage on its training part."""
    import functools

    @functools.wraps(original)
    def data_preparation(config, dataset):
        loaders = original(config, dataset)
        prepare(config, loaders[0]._dataset)
        return loaders

    return data_preparation
