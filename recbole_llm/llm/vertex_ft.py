"""Vertex AI supervised tuning of a Gemini model for LLMSeqPrompt.

JSONL in Gemini's tuning format -> Cloud Storage (a ``gs://`` URI the user gives is used
as is; otherwise the local files are uploaded under ``vertex_staging_uri``) -> a tuning job
through ``GenAiTuningServiceClient`` (its name persisted before any waiting, so a rerun
reattaches instead of paying again) -> ``generateContent`` on the tuned endpoint.
The aiplatform v1 clients are used directly, like the Vertex embedding provider, so
project, location and endpoint come from our config and tests can point them at 127.0.0.1.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..costs import estimate_tokens
from ..errors import RecboleLLMError
from .base import PromptLLM
from .openai_ft import FineTuningFailed, write_jsonl

logger = logging.getLogger(__name__)
# USD per 1M training tokens (Vertex AI price list, 2025); the estimate assumes DEFAULT_EPOCHS passes.
TRAINING_PRICES = {"gemini-2.0-flash-001": 3.0, "gemini-2.0-flash-lite-001": 1.0, "gemini-2.5-flash": 5.0,
                   "gemini-2.5-pro": 25.0}
DEFAULT_EPOCHS = 4
MAX_CANDIDATES = 8  # Gemini's limit on candidate_count per request


class MissingVertexSetting(RecboleLLMError, RuntimeError):
    pass


def to_gemini(messages: list[dict]) -> dict:
    """Chat messages (system/user/assistant) -> one line of Gemini's tuning JSONL."""
    line = {"contents": [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                         for m in messages if m["role"] != "system"]}
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        line["systemInstruction"] = {"role": "system", "parts": [{"text": "\n".join(system)}]}
    return line


class VertexPromptLLM(PromptLLM):
    name = "vertex"

    def __init__(self, workdir, model: str = "gemini-2.0-flash-001", project: str | None = None,
                 location: str | None = None, api_endpoint: str | None = None, staging_uri: str | None = None,
                 poll_seconds: float = 60.0, dry_run: bool = False, credentials=None, storage_endpoint: str | None = None,
                 max_retry_seconds: float = 120.0, cache=None):
        super().__init__(workdir, cache)
        self.model, self.poll_seconds, self.dry_run = model, poll_seconds, dry_run
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION", "us-central1")
        self.staging_uri = staging_uri
        if not self.project and not dry_run:
            raise MissingVertexSetting(
                "llm_provider=vertex needs a Google Cloud project: set vertex_project (or GOOGLE_CLOUD_PROJECT) and "
                "authenticate with `gcloud auth application-default login`; --llm_dry_run=True only writes the files.")
        self.credentials, self.storage_endpoint = credentials, storage_endpoint
        if dry_run:
            return
        from google.api_core import exceptions, retry
        from google.cloud.aiplatform_v1 import GenAiTuningServiceClient, PredictionServiceClient

        endpoint = api_endpoint or f"{self.location}-aiplatform.googleapis.com"
        options = {"credentials": credentials, "client_options": {"api_endpoint": endpoint},
                   "transport": "rest" if endpoint.startswith("http://") else None}
        self.tuning = GenAiTuningServiceClient(**options)
        self.prediction = PredictionServiceClient(**options)
        self.retry = retry.Retry(
            predicate=retry.if_exception_type(exceptions.TooManyRequests, exceptions.ResourceExhausted,
                                              exceptions.ServiceUnavailable, exceptions.InternalServerError,
                                              exceptions.DeadlineExceeded),
            initial=0.5, maximum=30.0, multiplier=2.0, timeout=max_retry_seconds)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def base_model(self) -> str:
        return self.model

    def estimate(self, train: list[list[dict]]) -> tuple[int, float]:
        tokens = sum(estimate_tokens(m["content"]) for ex in train for m in ex)
        return tokens, tokens * DEFAULT_EPOCHS * TRAINING_PRICES.get(self.model, 25.0) / 1e6

    def fine_tune(self, train, valid) -> str | None:
        folder, digest, state = self.job_folder(self.model, train, valid)
        if state.get("endpoint"):
            return state["endpoint"]
        train_path, valid_path = folder / "train.jsonl", folder / "valid.jsonl"
        write_jsonl(train_path, train, to_gemini)
        write_jsonl(valid_path, valid, to_gemini)
        tokens, cost = self.estimate(train)
        print(f"[recbole-llm] Vertex AI tuning {self.model}: {len(train)} training / {len(valid)} validation examples, "
              f"~{tokens} tokens, ~${cost:.2f} for {DEFAULT_EPOCHS} epochs; files in {folder}")
        if self.dry_run:
            return None
        if not state.get("job"):
            state["job"] = self._create_job_once(folder, state, digest, train_path, valid_path)
            self.save_job_state(folder, state)  # persisted before any waiting: a rerun reattaches
        else:
            logger.info("reattaching to Vertex tuning job %s", state["job"])
        state["endpoint"] = self._wait(state["job"])
        self.save_job_state(folder, state)
        return state["endpoint"]

    def _create_job_once(self, folder: Path, state: dict, digest: str, train_path: Path, valid_path: Path) -> str:
        """Upload and create so that a killed process never leads to a second paid job: the staged URIs are
        saved as they are written, and a rerun that finds a create in flight looks for the job by its tuned
        model's display name (``recbole-llm-<digest>``) before creating one. The create itself is not retried:
        a retried create after a lost answer is the very way to pay twice."""
        from google.cloud.aiplatform_v1 import SupervisedTuningSpec, TuningJob

        display_name = f"recbole-llm-{digest}"
        for path, key in ((train_path, "training_dataset_uri"), (valid_path, "validation_dataset_uri")):
            if not state.get(key):
                state[key] = self._upload(path, digest)
                self.save_job_state(folder, state)
        if state.get("creating"):
            for job in self.tuning.list_tuning_jobs(parent=self.parent, retry=self.retry):
                if job.tuned_model_display_name == display_name:
                    logger.info("found the tuning job created before an interruption: %s", job.name)
                    state.pop("creating")
                    return job.name
        state["creating"] = True
        self.save_job_state(folder, state)
        job = self.tuning.create_tuning_job(parent=self.parent, tuning_job=TuningJob(
            base_model=self.model, tuned_model_display_name=display_name,
            supervised_tuning_spec=SupervisedTuningSpec(training_dataset_uri=state["training_dataset_uri"],
                                                        validation_dataset_uri=state["validation_dataset_uri"])))
        state.pop("creating")
        return job.name

    def _upload(self, path: Path, digest: str) -> str:
        if not self.staging_uri or not self.staging_uri.startswith("gs://"):
            raise MissingVertexSetting(
                "Vertex AI tunes from Cloud Storage: set vertex_staging_uri to a gs://bucket/prefix you can write to.")
        from google.cloud import storage

        bucket, _, prefix = self.staging_uri[len("gs://"):].partition("/")
        name = "/".join(p for p in (prefix.strip("/"), f"recbole-llm-{digest}", path.name) if p)
        options = {"api_endpoint": self.storage_endpoint} if self.storage_endpoint else None
        client = storage.Client(project=self.project, credentials=self.credentials, client_options=options)
        client.bucket(bucket).blob(name).upload_from_filename(str(path), content_type="application/jsonl")
        return f"gs://{bucket}/{name}"

    def _wait(self, job_name: str) -> str:
        from google.cloud.aiplatform_v1 import JobState

        done = {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED,
                JobState.JOB_STATE_EXPIRED}
        bar = tqdm(desc=f"Vertex tuning job {job_name.rsplit('/', 1)[-1]}", unit="poll")
        while True:
            job = self.tuning.get_tuning_job(name=job_name, retry=self.retry)
            bar.set_postfix_str(job.state.name)
            bar.update(1)
            if job.state in done:
                bar.close()
                if job.state == JobState.JOB_STATE_SUCCEEDED and job.tuned_model.endpoint:
                    return job.tuned_model.endpoint
                message = job.error.message or job.state.name
                raise FineTuningFailed(f"Vertex AI tuning job {job_name} ended {job.state.name}: {message}")
            time.sleep(self.poll_seconds)

    def _model_path(self, model: str) -> str:
        """A tuned endpoint is already a resource name; a base model lives under publishers/google."""
        return model if model.startswith("projects/") else f"{self.parent}/publishers/google/models/{model}"

    def _generate(self, model, messages, n, settings):
        from google.cloud.aiplatform_v1 import Content, GenerateContentRequest, GenerationConfig, Part

        line = to_gemini(messages)
        system = line.get("systemInstruction")
        answers: list[str] = []
        while len(answers) < n:
            request = GenerateContentRequest(
                model=self._model_path(model),
                contents=[Content(role=c["role"], parts=[Part(text=p["text"]) for p in c["parts"]])
                          for c in line["contents"]],
                system_instruction=Content(role="system", parts=[Part(text=system["parts"][0]["text"])]) if system else None,
                generation_config=GenerationConfig(
                    temperature=settings.get("temperature", 1.0), top_p=settings.get("top_p", 1.0),
                    candidate_count=min(n - len(answers), MAX_CANDIDATES),
                    max_output_tokens=settings.get("max_new_tokens", 64)))
            response = self.prediction.generate_content(request=request, retry=self.retry)
            if not response.candidates:
                answers.append("")  # blocked or empty: counted as a parse failure downstream, never fatal
                continue
            for candidate in response.candidates:
                answers.append("".join(part.text for part in candidate.content.parts))
        return answers[:n]
