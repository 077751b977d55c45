"""Disk cache of LLM answers: the same (model, messages, sampling settings) is never paid for twice."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from ..settings import default_cache_dir


def answer_key(model: str, messages: list[dict], settings: dict) -> str:
    payload = json.dumps({"model": model, "messages": messages, "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: os.PathLike | None = None):
        self.path = Path(path) if path else default_cache_dir() / "answers.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> list[str] | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None

    def put(self, key: str, answers: list[str]) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(answers)))
