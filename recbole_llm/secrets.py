"""Secrets never travel as settings. RecBole logs the whole command line, pickles the Config into every
checkpoint and writes it to tensorboard, so a key passed as ``--openai_api_key ...`` (in any spelling: space or
``=`` form, dashes, case) or as a config entry would be kept on disk. Both doors are checked here, before
RecBole sees anything; the messages name the setting, never its value."""
from __future__ import annotations

import re

from .errors import SecretInSettingsError

SECRET_NAME = re.compile(r"(api[_-]?key|secret|passw(or)?d|credential|access[_-]?key|private[_-]?key|auth[_-]?token|"
                         r"bearer)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_-]{3,}|sk_(live|test)_\w+|AIza[\w-]{10,}|ya29\.[\w-]+|gh[pousr]_\w{10,}|"
                          r"xox[abpr]-[\w-]+|hf_\w{10,})")
ADVICE = ("API keys are read only from the environment (OPENAI_API_KEY, GOOGLE_APPLICATION_CREDENTIALS); a key in a "
          "setting would be written to the log, the checkpoint and tensorboard. Remove it and export it instead.")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def refuse_secret_arguments(argv: list[str]) -> None:
    """Refuse a command line that carries a secret: a ``--name`` that names one (with its value after ``=`` or as
    the next word), or any word that looks like a key (``sk-...``, ``AIza...``)."""
    offending = []
    for position, word in enumerate(argv):
        word = str(word)
        name, _, value = word.lstrip("-").partition("=")
        for item in ([name] if word.startswith("-") else []):
            if is_secret_name(item):
                offending.append(f"--{item}")
        candidate = value if word.startswith("-") else word
        if "=" in candidate and not word.startswith("-"):  # report --set key=value
            key, _, candidate = candidate.partition("=")
            if is_secret_name(key):
                offending.append(key)
        if candidate and SECRET_VALUE.match(candidate):
            offending.append(f"a value that looks like a key (argument {position + 1})")
    if offending:
        raise SecretInSettingsError(f"{', '.join(dict.fromkeys(offending))}: {ADVICE}")


def refuse_secret_settings(settings, source: str = "the settings") -> None:
    """The same for settings already parsed (a Config's keys, an experiment file's ``set``, ``--set``)."""
    keys = sorted(str(key) for key in settings if is_secret_name(key))
    values = sorted(str(key) for key, value in settings.items()
                    if isinstance(value, str) and SECRET_VALUE.match(value) and str(key) not in keys)
    if keys or values:
        named = ", ".join(keys + [f"{key} (its value looks like a key)" for key in values])
        raise SecretInSettingsError(f"{named} in {source}: {ADVICE}")
