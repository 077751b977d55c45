"""Prompt/completion construction for LLMSeqPrompt's four tasks, and parsing of answers.

All item ids are RecBole internal ids; ``titles[i]`` is the text of item i.
A training example is built from a training session S = (s_1 .. s_n): the prompt
holds s_1 .. s_{n-1}, the truth is s_n. Test sessions never reach these builders
for training.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..errors import SettingError
from ..registry import PROPERTIES_DIR

TASKS = ("genitem", "genlist", "classify", "rank")
Ranker = Callable[[list[int], int], list[int]]  # (prompt items, k) -> ranked item ids
_NUMBERED = re.compile(r"^\s*(?:\d+[\.\):]|[-*•])\s*")


def load_templates(path: str | Path | None = None) -> dict:
    with open(path or PROPERTIES_DIR / "prompts" / "llmseqprompt.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def numbered(titles: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, 1))


def parse_titles(text: str, task: str) -> list[str]:
    """Titles in an answer: the first line for genitem, every (numbered) line otherwise."""
    lines = [_NUMBERED.sub("", line).strip() for line in (text or "").strip().splitlines()]
    lines = [line.strip(' "\'') for line in lines if line.strip()]
    return lines[:1] if task == "genitem" else lines


@dataclass
class PromptBuilder:
    task: str
    titles: list[str]
    k: int = 20
    templates: dict = field(default_factory=load_templates)
    ranker: Ranker | None = None  # genlist / rank: an existing model of ours
    class_items: list[int] | None = None  # classify: representative item of each class
    class_of_truth: Callable[[int, int], list[int]] | None = None  # classify: truth -> k nearest classes
    slate_size: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise SettingError(f"Unknown prompt_task '{self.task}': choose one of {', '.join(TASKS)}")
        if self.task in ("genlist", "rank") and self.ranker is None:
            raise SettingError(f"prompt_task '{self.task}' needs a ranking model")
        if self.task == "classify" and (self.class_items is None or self.class_of_truth is None):
            raise SettingError("prompt_task 'classify' needs item classes")
        self.rng = np.random.default_rng(self.seed)

    def _messages(self, user: str, completion: str | None) -> list[dict]:
        spec = self.templates[self.task]
        messages = [{"role": "system", "content": self.templates["system"].strip()},
                    {"role": "user", "content": user}]
        if completion is not None:
            messages.append({"role": "assistant", "content": spec["assistant"].format(completion=completion)})
        return messages

    def _slate(self, prompt: list[int], truth: int | None) -> list[int]:
        slate = [i for i in self.ranker(prompt, self.slate_size) if i != truth][: self.slate_size]
        if truth is not None:
            slate = [truth] + slate[: self.slate_size - 1]  # the model's order, truth on top
        return slate

    def example(self, prompt: list[int], truth: int | None = None) -> tuple[list[dict], list[int]]:
        """Chat messages (with the assistant's completion when ``truth`` is given)
        and the candidate items the answer refers to (slate or classes; [] if free)."""
        spec = self.templates[self.task]
        session = numbered([self.titles[i] for i in prompt])
        fields = {"session": session, "k": self.k}
        completion, candidates = None, []
        if self.task == "genitem":
            completion = None if truth is None else self.titles[truth]
        elif self.task == "genlist":
            if truth is not None:
                ranked = [truth] + [i for i in self.ranker(prompt, self.k) if i != truth][: self.k - 1]
                completion = numbered([self.titles[i] for i in ranked])
        elif self.task == "classify":
            candidates = list(self.class_items)
            fields["classes"] = numbered([self.titles[i] for i in candidates])
            if truth is not None:
                completion = numbered([self.titles[candidates[c]] for c in self.class_of_truth(truth, self.k)])
        else:  # rank
            ordered = self._slate(prompt, truth)
            candidates = list(ordered)
            shown = list(ordered)
            self.rng.shuffle(shown)
            fields["slate"] = numbered([self.titles[i] for i in shown])
            if truth is not None:
                completion = numbered([self.titles[i] for i in ordered])
        return self._messages(spec["user"].format(**fields), completion), candidates

    def training_examples(self, sessions: list[np.ndarray], max_prompt: int = 20) -> list[list[dict]]:
        """One example per training session of length >= 2: its last item is the truth."""
        examples = []
        for session in sessions:
            if len(session) < 2:
                continue
            prompt = [int(i) for i in session[:-1]][-max_prompt:]
            examples.append(self.example(prompt, int(session[-1]))[0])
        return examples
