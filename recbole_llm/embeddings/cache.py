"""Disk cache of text embeddings keyed by (provider, model, text).

One SQLite file; every provider batch is committed on its own, so a crash loses
at most the batch in flight and a rerun calls the provider only for what is
missing. Each vector is stored with its dimension and a CRC32: an entry whose
bytes do not match is reported, dropped and recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("RECBOLE_LLM_CACHE", Path.home() / ".cache" / "recbole_llm"))


def text_key(provider: str, model: str, text: str) -> str:
    return hashlib.sha256(f"{provider}\x1f{model}\x1f{text}".encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, path: os.PathLike | None = None):
        self.path = Path(path) if path else default_cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, crc INTEGER, vec BLOB)"
            )
            db.execute("SELECT count(*) FROM emb").fetchone()
            return db
        except sqlite3.DatabaseError as error:
            broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.warning("embedding cache %s is unreadable (%s); moved to %s", self.path, error, broken)
            os.replace(self.path, broken)
            return self._open()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found, bad = {}, []
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            rows = self._db.execute(
                f"SELECT key, dim, crc, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, dim, crc, blob in rows:
                if blob is None or len(blob) != 4 * dim or zlib.crc32(blob) != crc:
                    bad.append(key)
                    continue
                found[key] = np.frombuffer(blob, dtype=np.float32)
        if bad:
            logger.warning("dropping %d corrupt embedding cache entries; they will be recomputed", len(bad))
            self._db.executemany("DELETE FROM emb WHERE key = ?", [(k,) for k in bad])
            self._db.commit()
        return found

    def put_many(self, keys: list[str], vectors: np.ndarray) -> None:
        """Store one batch atomically (one transaction)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = []
        for key, vector in zip(keys, vectors):
            blob = vector.tobytes()
            rows.append((key, vector.shape[0], zlib.crc32(blob), blob))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        self._db.close()
