"""Prompts of LLMSeqPrompt: task construction, parsing and mapping answers to the catalog."""
from .mapping import TitleMapper
from .tasks import TASKS, PromptBuilder, parse_titles

__all__ = ["TASKS", "PromptBuilder", "TitleMapper", "parse_titles"]
