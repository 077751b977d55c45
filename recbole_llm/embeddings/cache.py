"""Disk cache of text embeddings keyed by (provider, model, text).

One SQLite file; every provider batch is committed on its own, so a crash loses
at most the batch in flight and a rerun calls the provider only for what is
missing. Each vector is stored with its dimension and a CRC32: an entry whose
bytes do not match is reported, dropped and recomputed, never trusted.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path

import numpy as np

from ..settings import default_cache_dir

logger = logging.getLogger(__name__)


def text_key(provider: str, model: str, text: str) -> str:
    return hashlib.sha256(f"{provider}\x1f{model}\x1f{text}".encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, path: os.PathLike | None = None):
        self.path = Path(path) if path else default_cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            if self.path.exists() and self.path.stat().st_size == 0:
                if wal.exists() and wal.stat().st_size > 32:  # SQLite would start afresh over the WAL's rows
                    raise sqlite3.DatabaseError("the file is empty but its WAL holds rows")
                logger.warning("embedding cache %s is empty (0 bytes): every text will be embedded again", self.path)
            db = self._connect(self.path)
            db.execute("SELECT count(*) FROM emb").fetchone()
            db.execute("SELECT key, dim, crc, vec FROM emb").fetchall()  # every page readable
            return db
        except sqlite3.DatabaseError as error:
            broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, broken)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, broken.with_name(broken.name + suffix))
            db = self._connect(self.path)
            saved = self._salvage(broken, db)
            logger.warning("embedding cache %s was damaged (%s): %d entries salvaged, the rest will be embedded "
                           "again; the damaged file is kept as %s", self.path, error, saved, broken)
            return db

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, crc INTEGER, vec BLOB)")
        db.execute("CREATE TABLE IF NOT EXISTS batch_jobs (job TEXT PRIMARY KEY, batch_id TEXT, created REAL)")
        return db

    @staticmethod
    def _salvage(broken: Path, db: sqlite3.Connection) -> int:
        """Copy every checksum-valid row of a damaged cache (and its Batch API job records), read from its leaf
        pages directly (``salvage.table_rows``): a damaged page, a cut-off end or a damaged header loses the rows
        of those pages, not the file's."""
        from .salvage import table_rows

        vectors, jobs = {}, {}
        for row in table_rows(broken):
            if (len(row) == 4 and isinstance(row[0], str) and isinstance(row[1], int) and isinstance(row[2], int)
                    and isinstance(row[3], bytes) and len(row[3]) == 4 * row[1] and zlib.crc32(row[3]) == row[2]):
                vectors[row[0]] = tuple(row)
            elif len(row) == 3 and all(isinstance(v, str) for v in row[:2]) and isinstance(row[2], (int, float)):
                jobs[row[0]] = tuple(row)
        with db:
            db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", list(vectors.values()))
            db.executemany("INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?)", list(jobs.values()))
        return len(vectors)

    @contextlib.contextmanager
    def claim(self):
        """An exclusive lock shared by every process using this cache file, held while one paid batch is
        embedded and stored, so that two processes never pay for the same texts."""
        from ..locks import exclusive

        with exclusive(self.path):
            yield

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
                vector = np.frombuffer(blob, dtype=np.float32)
                if not np.isfinite(vector).all():  # cached before vectors were checked: never served
                    bad.append(key)
                    continue
                found[key] = vector
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

    def batch_job(self, job: str) -> str | None:
        """The provider's batch id of a paid batch job created for ``job`` (a set of texts), if one was."""
        row = self._db.execute("SELECT batch_id FROM batch_jobs WHERE job = ?", (job,)).fetchone()
        return row[0] if row else None

    def put_batch_job(self, job: str, batch_id: str) -> None:
        import time

        with self._db:
            self._db.execute("INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?)", (job, batch_id, time.time()))

    def drop_batch_job(self, job: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM batch_jobs WHERE job = ?", (job,))

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def checked_vectors(provider, vectors, count: int) -> np.ndarray:
    """A provider's answer, refused before it is cached when it is not ``count`` finite vectors of one size: a
    NaN cached once would break every later run."""
    from ..errors import ProviderError

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != count:
        raise ProviderError(f"{provider.name}/{provider.model} returned {vectors.shape} for {count} texts; "
                            "nothing of this batch was cached")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise ProviderError(f"{provider.name}/{provider.model} returned {int(bad.sum())} of {count} vectors with NaN "
                            "or inf; nothing of this batch was cached (a rerun asks again)")
    return vectors
