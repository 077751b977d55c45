"""Outcomes the command line reports in one line, not as a traceback."""
from __future__ import annotations


class DryRunFinished(Exception):
    """``--llm_dry_run=True`` did what it was asked: the files and the cost estimate are written, nothing was
    sent; there is no model to train or evaluate, so the run ends here, successfully."""


class MissingAPIKeyError(RuntimeError):
    """A paid provider (embeddings or fine-tuning) without its key in the environment."""


class ProviderError(RuntimeError):
    """A provider that timed out, answered with something unreadable or refused: names the endpoint and the
    settings that change how long we wait."""


class SecretInSettingsError(ValueError):
    """An API key (or another secret) given as a setting: it would be written to the log, the checkpoint and
    tensorboard. Keys are read only from the environment."""
