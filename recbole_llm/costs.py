"""Cost estimates for paid calls (embedding requests, fine-tuning jobs), made before any call."""
from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """~4 characters per token for English (OpenAI's rule of thumb); an upper
    bound is good enough for a cost estimate."""
    return max(1, (len(text) + 3) // 4)
