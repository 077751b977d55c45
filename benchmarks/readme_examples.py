"""Wall time and peak memory of the README's LLM examples (the run_recbole_llm.py commands for LLMSeqPrompt and
LLMSRec), each exactly as the README writes it, with its own empty cache (so the local LLM is unpacked and the
titles embedded as on a fresh machine), one thread, through /usr/bin/time -v; one after another.

    python -m benchmarks.readme_examples --out benchmarks/results/profile/readme_examples_time.md
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT

MODELS = ("--model=LLMSeqPrompt", "--model=LLMSRec")


def llm_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line.startswith("python run_recbole_llm.py") and any(m in line for m in MODELS):
                commands.append(line)
    return commands


def measure(command: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "RECBOLE_LLM_CACHE": f"{work}/cache", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        argv = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "run_recbole_llm.py"), *shlex.split(command)[2:]]
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    stats = dict(re.findall(r"^\s*(.+?): (.+)$", done.stderr, re.M))
    return {"command": command, "exit": done.returncode, "wall": stats.get("Elapsed (wall clock) time (h:mm:ss or m:ss)"),
            "peak_gb": round(int(stats.get("Maximum resident set size (kbytes)", 0)) / 2**20, 1),
            "tail": done.stdout.strip().splitlines()[-2:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "recbole_llm", "properties", "README.md"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip())
    rows = []
    for command in llm_examples():
        rows.append(measure(command))
        print(rows[-1], flush=True)
    lines = ["# Time and memory of the README's LLM examples on a fresh cache", "",
             f"`python -m benchmarks.readme_examples` at commit {commit} ({'dirty' if dirty else 'clean'} tree), one "
             "thread each, one after another, each with its own empty cache, through `/usr/bin/time -v`.", "",
             "| command | exit | wall | peak resident |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['exit']} | {r['wall']} | {r['peak_gb']} GB |" for r in rows]
    lines += ["", "Last lines of each run:", ""] + [f"- `{r['command'][:60]}...`: {' / '.join(r['tail'])}" for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
