"""Every command the README shows still runs as written: ``run_recbole_llm.py`` commands are checked with
``--check`` (the model, settings, preset files and dataset, in seconds, as a long run would refuse them), the quick
``python -m recbole_llm`` commands run for real, and each one that cannot run here says why below. A command added
to the README without a rule here fails the suite."""
import re
import shlex
import subprocess
import sys
import time
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
SECONDS = 120  # a README command that takes longer here is a README that lies about "minutes"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if re.match(r"(\.venv/bin/)?python (run_recbole_llm\.py|-m recbole_llm)\b", line):
                commands.append(re.sub(r"\s+#.*$", "", line).rstrip(" &"))
    return commands


def test_the_readme_shows_commands_and_every_one_has_a_rule():
    commands = readme_commands()
    assert len(commands) >= 15
    for command in commands:
        assert "run_recbole_llm.py" in command or any(p in command for p in NOT_RUN) or \
            re.search(r"-m recbole_llm (recommend --dataset|convert --paper_beauty|tune|run)\b", command), command


def _argv(command: str, data: Path) -> list[str]:
    command = re.sub(r"\[[^\]]*\]", "", command)  # optional parts shown in brackets
    command = command.replace("../shared/", f"{SHARED}/")
    words = shlex.split(command)[1:]
    if words[0] == "run_recbole_llm.py":
        words[0] = str(ROOT / "run_recbole_llm.py")
    return [sys.executable] + words


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_as_written(command, tmp_path):
    skip = next((reason for phrase, reason in NOT_RUN.items() if phrase in command), None)
    if skip:
        return  # the reason is in NOT_RUN; test_the_readme_shows_commands_and_every_one_has_a_rule keeps the list honest
    if "beauty" in command and not (SHARED / "data" / "amazon-beauty").is_dir():
        pytest.fail("../shared/data/amazon-beauty is missing: the README's Beauty commands need it")
    argv = _argv(command, tmp_path)
    if "beauty" in command and "convert" not in command:  # the README converts Beauty first
        subprocess.run([sys.executable, "-m", "recbole_llm", "convert", "--paper_beauty",
                        str(SHARED / "data" / "amazon-beauty")], cwd=tmp_path, check=True, capture_output=True)
    is_run = argv[1].endswith("run_recbole_llm.py") or argv[2:4] in (["recbole_llm", "tune"], ["recbole_llm", "run"])
    if is_run:
        argv.append("--check")
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"{command}\n{done.stderr[-1500:]}"
    if is_run:
        assert "ok:" in done.stdout
    assert time.perf_counter() - started < SECONDS
