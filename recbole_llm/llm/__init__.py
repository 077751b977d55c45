"""Fine-tunable LLMs behind LLMSeqPrompt (``llm_provider``): local, openai, vertex."""
from __future__ import annotations

from ..errors import SettingError
from .base import PromptLLM


def make_prompt_llm(provider: str, workdir, **options) -> PromptLLM:
    if provider == "local":
        from .local import LocalPromptLLM

        keys = ("model", "lora_rank", "learning_rate", "max_train_steps", "batch_size", "max_seq_len", "seed",
                "show_progress", "cache", "precision", "eval_steps", "device",
                "gradient_checkpointing")
        return LocalPromptLLM(workdir, **{k: v for k, v in options.items() if k in keys and v is not None})
    if provider == "openai":
        from .openai_ft import OpenAIPromptLLM

        keys = ("model", "api_key", "base_url", "poll_seconds", "dry_run", "cache")
        return OpenAIPromptLLM(workdir, **{k: v for k, v in options.items() if k in keys and v is not None})
    if provider == "vertex":
        from .vertex_ft import VertexPromptLLM

        keys = ("model", "project", "location", "api_endpoint", "staging_uri", "poll_seconds", "dry_run", "credentials",
                "storage_endpoint", "cache")
        return VertexPromptLLM(workdir, **{k: v for k, v in options.items() if k in keys and v is not None})
    raise SettingError(f"Unknown llm_provider '{provider}': choose local, openai or vertex")


__all__ = ["PromptLLM", "make_prompt_llm"]
