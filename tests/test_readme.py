"""Every command the README shows still runs as written, in the time the README states for it here. Each command
states its time in a trailing comment (``# ~2 min``, ``(3 s)``, ``seconds``, ``hours``). A command stated at
``RUN_UP_TO`` or less runs for real, and fails if it takes more than twice its stated time (plus a minute for a
slower or busier machine); a longer ``run_recbole_llm.py`` / ``tune`` command is checked with ``--check`` (the model,
settings, preset files and dataset, in seconds, as the long run would refuse them); a command that cannot run here
says why in ``NOT_RUN``. A command added to the README without a stated time or a rule fails the suite."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# commands that need something the README leaves to the user (a checkpoint of theirs, their own files, GPUs, a
# long background job), by a phrase of the command, with the reason
NOT_RUN = {
    "<time>": "names a checkpoint of the user's own run",
    "--interactions inter.csv": "converts the user's own files",
    "--nproc=2": "RecBole's DDP needs GPUs (tests/test_ddp.py runs it on CPU with gloo)",
    "llm-states": "an hours-long fill of the LLM state store (tests/test_llm_states.py covers it)",
    "report --dataset beauty --models": "trains 9 runs on Beauty (tests/test_report.py runs plans on tiny data)",
    "embed --dataset beauty": "embeds 12,101 titles (tests/test_entry.py and tests/test_bad_input.py run the command)",
    "--help": "prints the help (tests/test_entry.py)",
    "--config_files=ensemble.yaml": "the ensemble.yaml shown above it names checkpoints of the user's own runs",
    "beauty_llm_gpu.yaml": "needs a CUDA GPU and the user's model folder (tests/test_gpu_experiment.py runs the file "
                           "on tiny data on CPU)",
}
RUN_UP_TO = 300  # seconds: a command stated at this or less runs for real in the suite


def readme_commands() -> list[tuple[str, str]]:
    """(command, its trailing comment) for every ``python run_recbole_llm.py`` / ``python -m recbole_llm`` line of
    the README's bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if re.match(r"(\.venv/bin/)?python (run_recbole_llm\.py|-m recbole_llm)\b", line):
                split = re.match(r"(.*?)\s+#\s*(.*)$", line)
                command, comment = split.groups() if split else (line, "")
                commands.append((command.strip().rstrip(" &"), comment.strip()))
    return commands


def stated_seconds(comment: str) -> float | None:
    """The time a README comment states: ``~2 min``, ``(3 s)``, ``~1 h`` (a number right after ``~`` or ``(``);
    ``seconds`` / ``hours`` alone."""
    match = re.search(r"[~(]\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|min|minutes?|h|hours?)\b", comment)
    if match:
        unit = match.group(2)
        return float(match.group(1)) * (3600 if unit.startswith("h") else 60 if unit.startswith("min") else 1)
    if re.search(r"\bseconds\b", comment):
        return 30.0
    if re.search(r"\bhours\b", comment):
        return 3 * 3600.0
    return None


def _is_run(command: str) -> bool:
    return "run_recbole_llm.py" in command or re.search(r"-m recbole_llm (tune|run)\b", command) is not None


def test_the_readme_shows_commands_and_every_one_has_a_time_or_a_rule():
    commands = readme_commands()
    assert len(commands) >= 15
    for command, comment in commands:
        if any(phrase in command for phrase in NOT_RUN):
            continue
        seconds = stated_seconds(comment)
        assert seconds is not None, f"the README states no time for: {command}  (add '# ~N min' after it)"
        assert seconds <= RUN_UP_TO or _is_run(command), \
            f"{command}: stated at {seconds:.0f} s, too long to run in the suite and no --check to run instead"
    assert sum(1 for c, m in commands if not any(p in c for p in NOT_RUN)
               and (stated_seconds(m) or 0) <= RUN_UP_TO and _is_run(c)) >= 6, "the quick examples run for real"


def _argv(command: str, data: Path) -> list[str]:
    command = re.sub(r"\[[^\]]*\]", "", command)  # optional parts shown in brackets
    command = command.replace("../shared/", f"{SHARED}/")
    words = shlex.split(command)[1:]
    if words[0] == "run_recbole_llm.py":
        words[0] = str(ROOT / "run_recbole_llm.py")
    return [sys.executable] + words


def _label(item) -> str:
    command, _ = item
    words = [w for w in shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]
             if w not in ("-m", "recbole_llm", "run_recbole_llm.py") and not w.startswith("saved/")]
    return "-".join(w.lstrip("-").split("=")[-1] for w in words[:4])[:60]


@pytest.mark.parametrize("command, comment", readme_commands(), ids=[_label(c) for c in readme_commands()])
def test_a_readme_command_runs_as_written(command, comment, tmp_path):
    skip = next((reason for phrase, reason in NOT_RUN.items() if phrase in command), None)
    if skip:
        return  # the reason is in NOT_RUN; test_the_readme_shows_commands_... keeps the list honest
    if "beauty" in command and not (SHARED / "data" / "amazon-beauty").is_dir():
        pytest.fail("../shared/data/amazon-beauty is missing: the README's Beauty commands need it")
    argv = _argv(command, tmp_path)
    if "beauty" in command and "convert" not in command:  # the README converts Beauty first
        subprocess.run([sys.executable, "-m", "recbole_llm", "convert", "--paper_beauty",
                        str(SHARED / "data" / "amazon-beauty")], cwd=tmp_path, check=True, capture_output=True)
    stated = stated_seconds(comment)
    if stated is None:
        pytest.fail(f"the README states no time for: {command}")
    checked = stated > RUN_UP_TO
    if checked:
        argv.append("--check")
    budget = 120 if checked else 2 * stated + 60
    try:
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=budget,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command}: still running after {budget:.0f} s; the README says {comment!r}")
    assert done.returncode == 0, f"{command}\n{done.stderr[-1500:]}"
    if checked:
        assert "ok:" in done.stdout
