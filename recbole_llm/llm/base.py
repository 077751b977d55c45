"""What a fine-tunable LLM provider offers LLMSeqPrompt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from .cache import AnswerCache, answer_key


JOB_STATE = "job.json"  # in a job folder: the provider's job and, once done, the tuned model


class PromptLLM:
    """``fine_tune`` returns a model reference (resumable, never repeated for the
    same data); ``sample`` answers chat prompts n times, through the answer cache."""

    name = "base"

    def __init__(self, workdir: Path, cache: AnswerCache | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache = cache or AnswerCache()

    def fine_tune(self, train: list[list[dict]], valid: list[list[dict]]) -> str:
        raise NotImplementedError

    def base_model(self) -> str:
        raise NotImplementedError

    def job_folder(self, model: str, train: list[list[dict]], valid: list[list[dict]]) -> tuple[Path, str, dict]:
        """The folder of one paid fine-tuning (provider, model, data) and its saved job state: a rerun
        reads the state and reattaches to the job instead of paying for a new one."""
        digest = hashlib.sha256(json.dumps([model, train, valid]).encode()).hexdigest()[:16]
        folder = self.workdir / f"{self.name}-{digest}"
        folder.mkdir(parents=True, exist_ok=True)
        state_file = folder / JOB_STATE
        return folder, digest, json.loads(state_file.read_text()) if state_file.exists() else {}

    @staticmethod
    def save_job_state(folder: Path, state: dict) -> None:
        """What ``job_folder`` reads back on a rerun (job id, then the tuned model)."""
        tmp = folder / f"{JOB_STATE}.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(folder / JOB_STATE)  # atomic: a kill mid-write never leaves a state that reads as "no job"

    def _generate(self, model: str, messages: list[dict], n: int, settings: dict) -> list[str]:
        raise NotImplementedError

    def sample(self, model: str, prompts: list[list[dict]], n: int, settings: dict, show_progress=True) -> list[list[str]]:
        answers = []
        for messages in tqdm(prompts, desc=f"{self.name} answers", disable=not show_progress):
            key = answer_key(model, messages, {**settings, "n": n})
            cached = self.cache.get(key)
            if cached is None:
                cached = self._generate(model, messages, n, settings)
                self.cache.put(key, cached)
            answers.append(cached)
        return answers
