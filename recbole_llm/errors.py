"""One error model: every error a user can act on derives from ``RecboleLLMError``, and both command lines
(``run_recbole_llm.py`` and ``python -m recbole_llm``) route through ``run_command``, which prints such an error as
one ``error:`` line (exit 2) and keeps the traceback for real bugs (and for everything with ``--debug``).

``SettingError`` and ``MissingFileError`` are also ``ValueError`` / ``FileNotFoundError``, so code (and RecBole)
that catches those keeps working.
"""
from __future__ import annotations

import sys
from typing import Callable


class RecboleLLMError(Exception):
    """An error the user can act on: its message says what is wrong and what to do."""


class SettingError(RecboleLLMError, ValueError):
    """A setting, option or input value that cannot run (checked before any paid call or training)."""


class MissingFileError(RecboleLLMError, FileNotFoundError):
    """A file the run needs is not there (a dataset, a config file, a checkpoint, a prepared table)."""


class DryRunFinished(Exception):
    """``--llm_dry_run=True`` did what it was asked: the files and the cost estimate are written, nothing was
    sent; there is no model to train or evaluate, so the run ends here, successfully."""


class MissingAPIKeyError(RecboleLLMError, RuntimeError):
    """A paid provider (embeddings or fine-tuning) without its key in the environment."""


class ProviderError(RecboleLLMError, RuntimeError):
    """A provider that timed out, answered with something unreadable or refused: names the endpoint and the
    settings that change how long we wait."""


class SecretInSettingsError(SettingError):
    """An API key (or another secret) given as a setting: it would be written to the log, the checkpoint and
    tensorboard. Keys are read only from the environment."""


INTERRUPTED = ("interrupted: nothing of this run was saved beyond its last checkpoint (python -m recbole_llm report "
               "runs resume from their last validated epoch)")


def run_command(command: Callable[[], int | None], debug: bool = False) -> int:
    """Run a command line's work: its exit status; a user's error in one line (2), Ctrl-C in one line (130), a
    finished dry run (0). ``ValueError`` / ``FileNotFoundError`` raised by RecBole on a bad setting count as the
    user's too. Anything else is a bug and keeps its traceback."""
    try:
        return command() or 0
    except DryRunFinished as finished:
        print(finished)
        return 0
    except KeyboardInterrupt as interrupted:  # tuning says what it kept (TuningInterrupted); a run how to go on
        if debug:
            raise
        print(f"error: {str(interrupted) or INTERRUPTED}", file=sys.stderr)
        return 130
    except (RecboleLLMError, ValueError, FileNotFoundError) as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
