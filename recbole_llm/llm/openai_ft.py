"""OpenAI fine-tuning for LLMSeqPrompt: JSONL (chat format) -> files API ->
fine-tuning job (persisted, so a rerun reattaches instead of paying again) ->
sampling from the fine-tuned model."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..costs import estimate_tokens
from ..errors import MissingAPIKeyError, RecboleLLMError
from .base import PromptLLM

logger = logging.getLogger(__name__)
# USD per 1M training tokens (OpenAI price list, 2025); default epochs when the API picks "auto".
TRAINING_PRICES = {"gpt-4o-mini-2024-07-18": 3.0, "gpt-4o-2024-08-06": 25.0, "gpt-3.5-turbo": 8.0}
DEFAULT_EPOCHS = 3


class FineTuningFailed(RecboleLLMError, RuntimeError):
    pass


def write_jsonl(path: Path, examples: list[list[dict]], line=lambda messages: {"messages": messages}) -> None:
    """One training example per line (OpenAI chat format unless ``line`` converts it), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for messages in examples:
            f.write(json.dumps(line(messages)) + "\n")
    os.replace(tmp, path)


class OpenAIPromptLLM(PromptLLM):
    name = "openai"

    def __init__(self, workdir, model: str = "gpt-4o-mini-2024-07-18", api_key: str | None = None,
                 base_url: str | None = None, poll_seconds: float = 30.0, dry_run: bool = False,
                 max_retries: int = 6, suffix: str = "recbole-llm", cache=None):
        super().__init__(workdir, cache)
        self.model, self.poll_seconds, self.dry_run, self.suffix = model, poll_seconds, dry_run, suffix
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key and not dry_run:
            raise MissingAPIKeyError("llm_provider=openai needs OPENAI_API_KEY (or use --llm_dry_run=True to only "
                                     "write the files and see the cost estimate).")
        from openai import OpenAI

        self.client = OpenAI(api_key=api_key or "dry-run", base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                             max_retries=max_retries)

    def base_model(self) -> str:
        return self.model

    def estimate(self, train: list[list[dict]]) -> tuple[int, float]:
        tokens = sum(estimate_tokens(m["content"]) for ex in train for m in ex)
        price = TRAINING_PRICES.get(self.model, 25.0)
        return tokens, tokens * DEFAULT_EPOCHS * price / 1e6

    def fine_tune(self, train, valid) -> str | None:
        folder, _, state = self.job_folder(self.model, train, valid)
        if state.get("fine_tuned_model"):
            return state["fine_tuned_model"]
        train_path, valid_path = folder / "train.jsonl", folder / "valid.jsonl"
        write_jsonl(train_path, train)
        write_jsonl(valid_path, valid)
        tokens, cost = self.estimate(train)
        print(f"[recbole-llm] OpenAI fine-tuning {self.model}: {len(train)} training / {len(valid)} validation "
              f"examples, ~{tokens} tokens, ~${cost:.2f} for {DEFAULT_EPOCHS} epochs; files in {folder}")
        if self.dry_run:
            return None
        if not state.get("job_id"):
            state["job_id"] = self._create_job_once(folder, state, train_path, valid_path)
            self.save_job_state(folder, state)  # persisted before any waiting: a rerun reattaches
        else:
            logger.info("reattaching to fine-tuning job %s", state["job_id"])
        model = self._wait(state["job_id"])
        state["fine_tuned_model"] = model
        self.save_job_state(folder, state)
        return model

    def _create_job_once(self, folder: Path, state: dict, train_path: Path, valid_path: Path) -> str:
        """Upload and create so that a process killed at any point never leads to a second paid job: each
        upload id is saved as it returns, the create carries an idempotency key and our job key in its
        metadata, and a rerun that finds a create in flight looks the job up before creating one."""
        state.setdefault("job_key", f"recbole-llm-{folder.name}")
        for path, key in ((train_path, "training_file"), (valid_path, "validation_file")):
            if not state.get(key):
                with open(path, "rb") as f:
                    state[key] = self.client.files.create(file=f, purpose="fine-tune").id
                self.save_job_state(folder, state)
        if state.get("creating"):
            found = self._find_job(state)
            if found:
                logger.info("found the job created before an interruption: %s", found)
                state.pop("creating")
                return found
        state["creating"] = True
        self.save_job_state(folder, state)
        job = self.client.fine_tuning.jobs.create(
            training_file=state["training_file"], validation_file=state["validation_file"], model=self.model,
            suffix=self.suffix, metadata={"recbole_llm_job": state["job_key"]},
            extra_headers={"Idempotency-Key": state["job_key"]})
        state.pop("creating")
        return job.id

    def _find_job(self, state: dict) -> str | None:
        """A job of ours (by metadata, or by its training file) already on the account."""
        for job in self.client.fine_tuning.jobs.list(limit=100):
            metadata = getattr(job, "metadata", None) or {}
            if metadata.get("recbole_llm_job") == state["job_key"] or job.training_file == state["training_file"]:
                return job.id
        return None

    def _wait(self, job_id: str) -> str:
        bar = tqdm(desc=f"fine-tuning job {job_id}", unit="poll")
        while True:
            job = self.client.fine_tuning.jobs.retrieve(job_id)
            bar.set_postfix_str(job.status)
            bar.update(1)
            if job.status == "succeeded":
                bar.close()
                return job.fine_tuned_model
            if job.status in ("failed", "cancelled"):
                bar.close()
                message = getattr(getattr(job, "error", None), "message", None) or job.status
                raise FineTuningFailed(f"OpenAI fine-tuning job {job_id} {job.status}: {message}")
            time.sleep(self.poll_seconds)

    def _generate(self, model, messages, n, settings):
        response = self.client.chat.completions.create(
            model=model, messages=messages, n=n, temperature=settings.get("temperature", 1.0),
            top_p=settings.get("top_p", 1.0), max_tokens=settings.get("max_new_tokens", 64))
        return [(choice.message.content or "") for choice in response.choices]
