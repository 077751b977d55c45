"""One error model: the user's errors derive from RecboleLLMError and print one line; bugs keep their traceback."""
import inspect
import pathlib

import pytest

import recbole_llm
from recbole_llm import errors
from recbole_llm.errors import RecboleLLMError, run_command

PACKAGE = pathlib.Path(recbole_llm.__file__).parent


def _all_exception_classes():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages([str(PACKAGE)], "recbole_llm."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                yield cls


def test_every_error_class_of_ours_is_a_recbole_llm_error():
    outcomes = {"DryRunFinished", "TuningInterrupted"}  # not errors: a finished dry run, a Ctrl-C that says what it kept
    loose = [cls.__qualname__ for cls in _all_exception_classes()
             if cls.__name__ not in outcomes and not issubclass(cls, RecboleLLMError)]
    assert loose == []


def test_the_package_raises_no_bare_value_or_file_errors():
    bare = [f"{path.relative_to(PACKAGE)}:{number}" for path in PACKAGE.rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if "raise ValueError(" in line or "raise FileNotFoundError(" in line]
    assert bare == []


def test_run_command_prints_a_users_error_in_one_line_and_keeps_a_bugs_traceback(capsys):
    def refuses():
        raise errors.SettingError("epochs=0: give --epochs=1 or more")

    assert run_command(refuses) == 2
    assert capsys.readouterr().err == "error: epochs=0: give --epochs=1 or more\n"
    with pytest.raises(errors.SettingError):
        run_command(refuses, debug=True)

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted) == 130 and "interrupted" in capsys.readouterr().err

    def bug():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_command(bug)
    assert run_command(lambda: None) == 0
    assert isinstance(errors.SettingError("x"), ValueError), "code that catches ValueError keeps working"


def test_install_is_idempotent():
    applied = len(recbole_llm.patches.applied())
    recbole_llm.install()
    assert len(recbole_llm.patches.applied()) == applied
