"""The one-command GPU experiment of #42 (benchmarks/experiments/beauty_llm_gpu.yaml) runs end to end: on tiny
data, on CPU, with tiny budgets given on the command line as a user would override it, so the file is known to
work the day a GPU is at hand."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "benchmarks" / "experiments" / "beauty_llm_gpu.yaml"


def test_the_gpu_experiment_runs_every_row_on_cpu_with_tiny_budgets(tiny, tmp_path, tiny_llm):
    out = tmp_path / "gpu"
    settings = {k: v for k, v in tiny["config"].items() if k not in ("data_path", "checkpoint_dir")}
    settings.update(use_gpu=False, llm_model=str(tiny_llm), llm_precision="fp32", llm_state_precision="fp32",
                    llm_max_train_steps=2, llm_eval_steps=1, llm_batch_size=2, max_test_sessions=4, prompt_beams=3,
                    prompt_slate_size=3, llmsrec_teacher_epochs=1, epochs=1, llmsrec_dim=8, llmsrec_state_batch_size=8,
                    hidden_size=16, inner_size=16, n_layers=1, n_heads=1, checkpoint_dir=str(tmp_path / "saved"))
    command = [sys.executable, "-m", "recbole_llm", "report", "--experiment", str(EXPERIMENT), "--dataset", "tiny",
               "--data_path", str(tiny["path"]), "--out", str(out), "--set"]
    command += [f"{key}={json.dumps(value)}" for key, value in settings.items()]
    env = {"RECBOLE_LLM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    labels = ["MostPopular", "LLMSeqSim", "LLMSRec", "LLMSeqPrompt-rank", "LLMSeqPrompt-constrained"]
    runs = {label: json.loads((out / f"{label}__seed1.json").read_text()) for label in labels}
    for label, run in runs.items():
        assert run["test_sessions"] == 4, label  # every row on the same seeded sample
        assert run["overrides"]["use_gpu"] is False and run["overrides"]["llm_model"] == str(tiny_llm), label
    assert "| LLMSeqPrompt-constrained | 1 | 4 |" in (out / "leaderboard.md").read_text()
    folder = next((tmp_path / "saved" / "llmseqprompt" / "tiny" / "genitem").glob("local-*"))
    assert len((folder / "curve.jsonl").read_text().splitlines()) == 2, "the validation curve of the fine-tuning"
