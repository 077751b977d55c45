"""A tiny HTTP server on 127.0.0.1 that speaks a provider's REST wire format.

Tests register a handler per (method, path regex); each request is recorded, and
a queue of injected failures (status, body, headers) is served first.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dim: int = 8) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=dim).round(6).tolist()


class Loopback:
    def __init__(self):
        self.routes = []
        self.requests = []
        self.failures = []  # (status, body, headers) served before the real handler
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                is_json = "json" in (self.headers.get("Content-Type") or "")
                body = json.loads(raw) if raw and is_json else raw
                loopback.requests.append({"method": method, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body})
                if loopback.failures:
                    status, payload, headers = loopback.failures.pop(0)
                else:
                    for m, pattern, handler in loopback.routes:
                        match = re.fullmatch(pattern, self.path.split("?")[0])
                        if m == method and match:
                            status, payload, headers = handler(body, match, self.headers)
                            break
                    else:
                        status, payload, headers = 404, {"error": {"message": f"no route {self.path}"}}, {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, pattern: str, handler) -> None:
        self.routes.append((method, pattern, handler))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def openai_embeddings(body, match, headers):
    """POST /v1/embeddings as OpenAI answers it."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
    data.reverse()  # the API does not promise order; clients must use `index`
    tokens = sum(len(t.split()) for t in inputs)
    return 200, {"object": "list", "data": data, "model": body["model"],
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, {}


def vertex_predict(body, match, headers):
    """POST /v1/projects/*/locations/*/publishers/google/models/*:predict for text embeddings."""
    predictions = [
        {"embeddings": {"values": fake_vector(i["content"]),
                        "statistics": {"token_count": len(i["content"].split()), "truncated": False}}}
        for i in body["instances"]
    ]
    return 200, {"predictions": predictions, "deployedModelId": "", "model": match.group(3)}, {}


VERTEX_PREDICT = r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):predict"


class OpenAIFineTuning:
    """Files, fine-tuning jobs (status moves on with each poll) and chat completions."""

    def __init__(self, server: Loopback, final_status: str = "succeeded", polls_until_done: int = 2, answer=None):
        self.files, self.jobs, self.polls = {}, {}, {}
        self.final_status, self.polls_until_done = final_status, polls_until_done
        self.answer = answer or (lambda body, i: "Glossy Pink Lipstick")
        server.route("POST", r"/v1/files", self.upload)
        server.route("POST", r"/v1/fine_tuning/jobs", self.create)
        server.route("GET", r"/v1/fine_tuning/jobs", self.list)
        server.route("GET", r"/v1/fine_tuning/jobs/([\w-]+)", self.retrieve)
        server.route("POST", r"/v1/chat/completions", self.chat)

    def upload(self, body, match, headers):
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = body
        return 200, {"id": file_id, "object": "file", "bytes": len(body), "created_at": 0,
                     "filename": "data.jsonl", "purpose": "fine-tune", "status": "processed"}, {}

    def _job(self, job_id, status, model=None):
        job = self.jobs[job_id]
        return {"id": job_id, "object": "fine_tuning.job", "created_at": 0, "model": job["model"],
                "status": status, "fine_tuned_model": model, "training_file": job["training_file"],
                "validation_file": job.get("validation_file"), "organization_id": "org-test", "result_files": [],
                "seed": 0, "hyperparameters": {"n_epochs": "auto"}, "trained_tokens": None,
                "error": {"code": "invalid_training_file", "message": "bad data", "param": None}
                if status == "failed" else None, "finished_at": None, "metadata": job.get("metadata")}

    def list(self, body, match, headers):
        data = [self._job(job_id, "running") for job_id in reversed(list(self.jobs))]
        return 200, {"object": "list", "data": data, "has_more": False}, {}

    def create(self, body, match, headers):
        job_id = f"ftjob-{len(self.jobs) + 1}"
        self.jobs[job_id] = body
        self.polls[job_id] = 0
        return 200, self._job(job_id, "validating_files"), {}

    def retrieve(self, body, match, headers):
        job_id = match.group(1)
        if job_id not in self.jobs:
            return 404, {"error": {"message": f"no job {job_id}", "type": "invalid_request_error"}}, {}
        self.polls[job_id] += 1
        if self.polls[job_id] < self.polls_until_done:
            return 200, self._job(job_id, "running"), {}
        model = "ft:gpt-4o-mini-2024-07-18:org::abc123" if self.final_status == "succeeded" else None
        return 200, self._job(job_id, self.final_status, model), {}

    def chat(self, body, match, headers):
        choices = [{"index": i, "finish_reason": "stop", "logprobs": None,
                    "message": {"role": "assistant", "content": self.answer(body, i)}} for i in range(body.get("n", 1))]
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}, {}


class VertexTuning:
    """Cloud Storage uploads, Gemini tuning jobs (state moves on with each poll) and generateContent."""

    PARENT = r"/v1/projects/([^/]+)/locations/([^/]+)"

    def __init__(self, server: Loopback, final_state: str = "JOB_STATE_SUCCEEDED", polls_until_done: int = 2,
                 answer=None):
        self.objects, self.jobs, self.polls = {}, {}, {}
        self.final_state, self.polls_until_done = final_state, polls_until_done
        self.answer = answer or (lambda body, i: "Glossy Pink Lipstick")
        server.route("POST", r"/upload/storage/v1/b/([^/]+)/o", self.upload)
        server.route("POST", self.PARENT + r"/tuningJobs", self.create)
        server.route("GET", self.PARENT + r"/tuningJobs", self.list)
        server.route("GET", self.PARENT + r"/tuningJobs/(\w+)", self.get)
        server.route("POST", self.PARENT + r"/(endpoints/[^/:]+|publishers/google/models/[^/:]+):generateContent",
                     self.generate)

    def upload(self, body, match, headers):
        """Multipart upload: a JSON metadata part (the object name), then the file."""
        metadata = json.loads(body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
        self.objects[f"gs://{match.group(1)}/{metadata['name']}"] = body
        return 200, {"kind": "storage#object", "bucket": match.group(1), "name": metadata["name"],
                     "size": str(len(body)), "generation": "1"}, {}

    def _job(self, name, state):
        job = {**self.jobs[name], "name": name, "state": state}
        if state == "JOB_STATE_SUCCEEDED":
            job["tunedModel"] = {"model": name.replace("tuningJobs", "models"),
                                 "endpoint": name.rsplit("/tuningJobs/", 1)[0] + "/endpoints/4242"}
        if state == "JOB_STATE_FAILED":
            job["error"] = {"code": 3, "message": "training data has invalid rows"}
        return job

    def create(self, body, match, headers):
        name = f"projects/{match.group(1)}/locations/{match.group(2)}/tuningJobs/{len(self.jobs) + 1}"
        self.jobs[name] = body
        self.polls[name] = 0
        return 200, self._job(name, "JOB_STATE_PENDING"), {}

    def list(self, body, match, headers):
        return 200, {"tuningJobs": [self._job(name, "JOB_STATE_RUNNING") for name in self.jobs]}, {}

    def get(self, body, match, headers):
        name = f"projects/{match.group(1)}/locations/{match.group(2)}/tuningJobs/{match.group(3)}"
        if name not in self.jobs:
            return 404, {"error": {"code": 404, "message": f"no job {name}", "status": "NOT_FOUND"}}, {}
        self.polls[name] += 1
        state = self.final_state if self.polls[name] >= self.polls_until_done else "JOB_STATE_RUNNING"
        return 200, self._job(name, state), {}

    def generate(self, body, match, headers):
        count = body.get("generationConfig", {}).get("candidateCount", 1)
        candidates = [{"index": i, "finishReason": "STOP",
                       "content": {"role": "model", "parts": [{"text": self.answer(body, i)}]}} for i in range(count)]
        return 200, {"candidates": candidates, "modelVersion": match.group(3),
                     "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": count, "totalTokenCount": 1 + count}}, {}


class OpenAIBatches:
    """Files and Batch API jobs for /v1/embeddings: a batch completes after ``polls_until_done`` polls, its output file
    holds each request's embeddings (``fail_requests``: endings of custom ids answered with an error)."""

    def __init__(self, server: Loopback, polls_until_done: int = 2, final_status: str = "completed",
                 fail_requests: tuple = ()):
        self.files, self.batches, self.polls = {}, {}, {}
        self.polls_until_done, self.final_status, self.fail_requests = polls_until_done, final_status, fail_requests
        server.route("POST", r"/v1/files", self.upload)
        server.route("GET", r"/v1/files/([\w-]+)/content", self.content)
        server.route("POST", r"/v1/batches", self.create)
        server.route("GET", r"/v1/batches", self.list)
        server.route("GET", r"/v1/batches/([\w-]+)", self.retrieve)

    def upload(self, body, match, headers):
        file_id = f"file-{len(self.files) + 1}"
        lines = [json.loads(line) for line in body.decode().splitlines() if line.startswith('{"custom_id"')]
        self.files[file_id] = lines
        return 200, {"id": file_id, "object": "file", "bytes": len(body), "created_at": 0,
                     "filename": "embeddings.jsonl", "purpose": "batch", "status": "processed"}, {}

    def _batch(self, batch_id, status):
        batch = self.batches[batch_id]
        total = len(self.files[batch["input_file_id"]])
        done = status == "completed"
        return {"id": batch_id, "object": "batch", "endpoint": "/v1/embeddings", "completion_window": "24h",
                "created_at": 0, "input_file_id": batch["input_file_id"], "status": status,
                "output_file_id": batch.get("output_file_id") if done else None, "error_file_id": None,
                "errors": None, "metadata": batch.get("metadata"),
                "request_counts": {"total": total, "completed": total if done else 0, "failed": 0}}

    def create(self, body, match, headers):
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = dict(body)
        self.polls[batch_id] = 0
        return 200, self._batch(batch_id, "validating"), {}

    def list(self, body, match, headers):
        data = [self._batch(b, "in_progress") for b in reversed(list(self.batches))]
        return 200, {"object": "list", "data": data, "has_more": False}, {}

    def retrieve(self, body, match, headers):
        batch_id = match.group(1)
        self.polls[batch_id] += 1
        if self.polls[batch_id] < self.polls_until_done:
            return 200, self._batch(batch_id, "in_progress"), {}
        batch = self.batches[batch_id]
        if self.final_status == "completed" and "output_file_id" not in batch:
            rows = []
            for line in self.files[batch["input_file_id"]]:
                if any(line["custom_id"].endswith(suffix) for suffix in self.fail_requests):
                    rows.append({"id": "r", "custom_id": line["custom_id"], "response": None,
                                 "error": {"code": "server_error", "message": "failed"}})
                    continue
                _, payload, _ = openai_embeddings(line["body"], None, {})
                rows.append({"id": "r", "custom_id": line["custom_id"], "error": None,
                             "response": {"status_code": 200, "request_id": "q", "body": payload}})
            output = f"file-{len(self.files) + 1}"
            self.files[output] = rows
            batch["output_file_id"] = output
        return 200, self._batch(batch_id, self.final_status), {}

    def content(self, body, match, headers):
        return 200, "".join(json.dumps(row) + "\n" for row in self.files[match.group(1)]).encode(), {}
