"""A frozen LLM's read-out states, computed once per (LLM, read-out, precision, prompt) and shared on disk.

LLM-SRec reads the frozen LLM's last hidden state of each prompt. On CPU that pass, not training, is the
cost (~0.3 s per Beauty prompt on one thread in bf16), so every state is kept in one SQLite file
(``llm_states.sqlite`` in the cache folder; the embedding cache's format: CRC-checked rows, salvage of a
damaged file, WAL so that several processes read and write it at once). A rerun computes nothing; a killed
fill loses at most one batch; two processes fill disjoint shards of the same prompts side by side
(``python -m recbole_llm llm-states --shard 1/2`` and ``--shard 2/2``).

The key holds everything a state depends on: the LLM folder, its config, the read-out version and the
precision the LLM ran in, so a bf16 state never answers for an fp32 one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..embeddings.cache import EmbeddingCache, text_key
from ..errors import SettingError
from ..settings import default_cache_dir

logger = logging.getLogger(__name__)
READOUT_VERSION = "last-hidden-v2"  # v2: the added special tokens' input vectors are the mean token vector


def llm_identity(path: os.PathLike, precision: str) -> str:
    """What a state depends on besides its prompt: the model folder and its config, the read-out, the precision."""
    path = Path(path)
    config = (path / "config.json").read_bytes() if (path / "config.json").exists() else b""
    digest = hashlib.sha256(config).hexdigest()[:12]
    return f"{path.resolve()}|{digest}|{READOUT_VERSION}|{precision}"


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    return int(key[:8], 16) % count == index


def parse_shard(text) -> tuple[int, int]:
    """``"i/n"`` or ``[i, n]`` (1-based, as users count) -> (i - 1, n)."""
    try:
        index, count = (int(part) for part in (text.split("/") if isinstance(text, str) else text))
    except ValueError:
        raise SettingError(f"--shard takes i/n, e.g. 1/2; got {text!r}") from None
    if not 1 <= index <= count:
        raise SettingError(f"--shard {text}: i must be between 1 and n")
    return index - 1, count


class LLMStateStore:
    """``get`` the stored states of prompts; ``fill`` computes the missing ones (of this process's shard),
    shortest prompts first in batches, stores every batch as it finishes and logs progress with an ETA."""

    def __init__(self, identity: str, path: os.PathLike | None = None):
        self.identity = identity
        self.cache = EmbeddingCache(path or default_cache_dir() / "llm_states.sqlite")

    def key(self, prompt: str) -> str:
        return text_key("llm-state", self.identity, prompt)

    def get(self, prompts: list[str]) -> dict[str, np.ndarray]:
        keys = {self.key(p): p for p in dict.fromkeys(prompts)}
        return {keys[k]: v for k, v in self.cache.get_many(list(keys)).items()}

    def missing(self, prompts: list[str], shard: tuple[int, int] = (0, 1)) -> list[str]:
        unique = [p for p in dict.fromkeys(prompts) if in_shard(self.key(p), shard)]
        found = self.get(unique)
        return [p for p in unique if p not in found]

    def fill(self, prompts: list[str], compute: Callable[[list[str]], torch.Tensor], lengths: Callable[[list[str]], list[int]],
             batch_size: int, shard: tuple[int, int] = (0, 1), desc: str = "LLM states", log_every: float = 60.0) -> int:
        """Compute and store the states this shard lacks; returns how many were computed."""
        return self.compute(self.missing(prompts, shard), compute, lengths, batch_size, desc, log_every)

    def compute(self, todo: list[str], compute: Callable[[list[str]], torch.Tensor],
                lengths: Callable[[list[str]], list[int]], batch_size: int, desc: str = "LLM states",
                log_every: float = 60.0) -> int:
        """Compute and store the states of ``todo`` (prompts found missing), shortest first; returns how many."""
        if not todo:
            return 0
        pairs = sorted(zip(lengths(todo), todo), key=lambda pair: pair[0])
        sizes, todo = [n for n, _ in pairs], [p for _, p in pairs]
        logger.info("%s: %d prompts to compute (%d tokens)", desc, len(todo), sum(sizes))
        started = last_log = time.perf_counter()
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with torch.no_grad():
                states = compute(chunk).float().cpu().numpy()
            if not np.isfinite(states).all():
                raise RuntimeError(f"{desc}: the LLM returned a non-finite state; nothing of this batch was stored")
            self.cache.put_many([self.key(p) for p in chunk], states)
            now, done = time.perf_counter(), start + len(chunk)
            if now - last_log >= log_every or done == len(todo):
                token_rate = sum(sizes[:done]) / (now - started)
                logger.info("%s: %d/%d prompts, %.1f prompts/s, ETA %.0f min", desc, done, len(todo),
                            done / (now - started), sum(sizes[done:]) / max(token_rate, 1e-9) / 60)
                last_log = now
        return len(todo)

    def tensor(self, prompts: list[str], fill_with: tuple | None = None, batch_size: int = 32,
               desc: str = "LLM states") -> torch.Tensor:
        """The states of ``prompts`` in order, read once; ``fill_with`` = (compute, lengths) first computes those
        not stored (without it every one must be stored)."""
        found = self.get(prompts)
        absent = [p for p in dict.fromkeys(prompts) if p not in found]
        if absent and fill_with is not None:
            self.compute(absent, *fill_with, batch_size, desc)
            found.update(self.get(absent))
            absent = [p for p in absent if p not in found]
        if absent:
            raise KeyError(f"{len(absent)} LLM states are not in {self.cache.path} (first: {absent[0][:80]!r})")
        return torch.from_numpy(np.stack([found[p] for p in prompts]))
