"""The paper's two popularity hybrids around LLMSeqSim.

An item's popularity is the share of training sessions holding it (the paper's
``main/hybrids/properties.py``, which counts over the whole data set; we count
training sessions only, so the test sessions never inform a model).

LLMSeqSimSeqHybrid: sessions whose last item is unpopular (below a popularity
quantile) get LLMSeqSim's semantic neighbours, the others a sequential model's
recommendations (any model: LLM2BERT4Rec, LLM2SASRec, SKNNEmb, ...; loaded from
a checkpoint or trained in the same run by RecBole's trainer).

LLMSeqSimPopHybrid (``hybrid_pop_rule: paper``): LLMSeqSim's top
``hybrid_diversity_pool`` (100) list; its items below the popularity quantile are
removed, best-ranked first, while more than ``topk`` (20) items remain; the
list keeps its order. ``mask``: every item below the quantile is removed from the
whole catalog (the earlier variant). Either may also drop any item whose embedding
similarity to a higher-ranked item exceeds ``hybrid_diversity_threshold``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..checkpoints import load_checkpoint
from ..data.sessions import item_popularity
from ..errors import MissingFileError
from ..registry import get_model, register_model
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort
from .llmseqsim import LLMSeqSim, LLMSeqSimSettings


def popularity_cutoff(pop: torch.Tensor, quantile: float) -> float:
    """The popularity value at ``quantile`` (0..1 or 0..100) over catalog items."""
    quantile = quantile / 100 if quantile > 1 else quantile
    return float(torch.quantile(pop[1:].double(), quantile))




@dataclass(frozen=True)
class LLMSeqSimPopHybridSettings(LLMSeqSimSettings):
    """LLMSeqSim&Popularity (defaults: ``properties/model/LLMSeqSim.yaml``, then ``LLMSeqSimPopHybrid.yaml``)."""

    hybrid_popularity_quantile: float
    hybrid_diversity_threshold: float | None  # ~: no diversity filter
    hybrid_diversity_pool: int
    hybrid_pop_rule: Literal["paper", "mask"]
    hybrid_popularity_source: Literal["train", "all"]


@dataclass(frozen=True)
class LLMSeqSimSeqHybridSettings(LLMSeqSimSettings):
    """LLMSeqSim&Sequential (defaults: ``properties/model/LLMSeqSimSeqHybrid.yaml``)."""

    hybrid_popularity_quantile: float
    hybrid_sequential_model: str
    hybrid_sequential_config: dict | None
    hybrid_checkpoint: str | None  # ~: the partner trains in this run
    hybrid_popularity_source: Literal["train", "all"]


def published_config(config, model: str) -> dict:
    """``model``'s configuration on this dataset under the run's preset (the paper's published file, and under
    ``best`` the best preset's file over it); empty outside the presets."""
    from ..presets import best_config_file, paper_config_file

    preset = str(config["preset"] or "")
    if not preset.startswith(("paper", "best")):
        return {}
    settings = {}
    for path in [paper_config_file(model, config["dataset"])] + (
            [best_config_file(model, config["dataset"])] if preset.startswith("best") else []):
        if path is not None:
            with open(path, encoding="utf-8") as file:
                settings.update(yaml.load(file, Loader=config.yaml_loader) or {})
    settings.pop("preset", None)
    return settings


def partner_config(config):
    """The sequential partner's config, later layers winning: the hybrid's, the partner's published
    configuration (paper preset), the settings the run was given as arguments (``config_dict``, command line:
    an experiment's grid reaches both models), ``hybrid_sequential_config``.

    The hybrid's *published* ``hybrid_sequential_config`` undoes LLMSeqSim's embedding settings for the
    published partner; it only fills in what the partner's own published file leaves open, so a run that names
    another partner keeps that partner's published settings. One given to the run always wins (a value in a
    user's own yaml equal to the published one cannot be told apart and is read as the published one)."""
    settings = LLMSeqSimSeqHybridSettings.read(config)
    partner = settings.hybrid_sequential_model
    sub_config = copy.deepcopy(config)
    sub_config["model"] = partner
    given = {*(getattr(config, "variable_config_dict", None) or {}), *(getattr(config, "cmd_config_dict", None) or {})}
    partner_published = published_config(config, partner)
    published = {k: v for k, v in partner_published.items() if k not in given and k != "model"}
    extra = settings.hybrid_sequential_config or {}
    own = published_config(config, config["model"]).get("hybrid_sequential_config")
    if "hybrid_sequential_config" not in given and own and extra == own:
        extra = {k: v for k, v in extra.items() if k not in partner_published}
    for key, value in {**published, **extra}.items():
        sub_config[key] = value
    return sub_config


@register_model
class LLMSeqSimSeqHybrid(ScoresFromFullSort, SequentialRecommender):
    input_type = InputType.POINTWISE
    trainer_class = FitOnceTrainer
    companion_model_key = "hybrid_sequential_model"
    settings_class = LLMSeqSimSeqHybridSettings

    @classmethod
    def fits_in_one_pass(cls, config) -> bool:
        """No training here when the partner comes from a checkpoint or is itself fitted in one pass."""
        from ..registry import fits_in_one_pass

        return bool(config["hybrid_checkpoint"]) or fits_in_one_pass({"model": config["hybrid_sequential_model"]})

    @classmethod
    def check_settings(cls, config) -> None:
        LLMSeqSim.check_settings(config)
        settings = cls.settings_class.read(config)
        checkpoint = settings.hybrid_checkpoint
        if checkpoint and not Path(checkpoint).is_file():
            raise MissingFileError(f"hybrid_checkpoint {checkpoint} does not exist: give the .pth file a trained "
                                    f"{settings.hybrid_sequential_model} run saved (its result JSON names it under "
                                    "'checkpoint'), or leave hybrid_checkpoint unset to train the partner here")
        partner, partner_settings = get_model(settings.hybrid_sequential_model), partner_config(config)
        if getattr(partner, "settings_class", None) is not None:  # the partner's settings, before anything is paid
            partner.settings_class.read(partner_settings)
        if hasattr(partner, "check_settings"):
            partner.check_settings(partner_settings)

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        LLMSeqSim.prepare_resources(config, dataset)
        partner = get_model(cls.settings_class.read(config).hybrid_sequential_model)
        if hasattr(partner, "prepare_resources"):
            partner.prepare_resources(partner_config(config), dataset)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.settings = settings = self.settings_class.read(config)
        self.semantic = LLMSeqSim(config, dataset)
        self.sequential = get_model(settings.hybrid_sequential_model)(partner_config(config), dataset)
        checkpoint = settings.hybrid_checkpoint
        if checkpoint:
            state = load_checkpoint(checkpoint)["state_dict"]
            self.sequential.load_state_dict(state)
            self.needs_training = False
        else:
            self.needs_training = getattr(self.sequential, "needs_training", True)
        pop = item_popularity(dataset, self.n_items, settings.hybrid_popularity_source)
        self.register_buffer("popularity", pop)
        self.cutoff = popularity_cutoff(pop, settings.hybrid_popularity_quantile)

    def calculate_loss(self, interaction):
        return self.sequential.calculate_loss(interaction)

    def use_semantic(self, interaction) -> torch.Tensor:
        seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        last = seq.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        return self.popularity[last] < self.cutoff

    def full_sort_predict(self, interaction):
        semantic = self.use_semantic(interaction)
        scores = self.sequential.full_sort_predict(interaction).clone()
        if semantic.any():
            scores[semantic] = self.semantic.full_sort_predict(interaction)[semantic].to(scores.dtype)
        return scores


@register_model
class LLMSeqSimPopHybrid(LLMSeqSim):
    settings_class = LLMSeqSimPopHybridSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        settings = self.settings
        pop = item_popularity(dataset, self.n_items, settings.hybrid_popularity_source)
        cutoff = popularity_cutoff(pop, settings.hybrid_popularity_quantile)
        self.register_buffer("allowed", pop >= cutoff)
        self.rule = settings.hybrid_pop_rule
        self.list_length = max(config["topk"])
        self.diversity_threshold = settings.hybrid_diversity_threshold
        self.diversity_pool = settings.hybrid_diversity_pool

    def full_sort_predict(self, interaction):
        scores = super().full_sort_predict(interaction)
        if self.rule == "mask":
            scores = scores.masked_fill(~self.allowed, -torch.inf)
        else:
            scores = self.drop_unpopular(scores)
        if self.diversity_threshold is None:
            return scores
        return self.diversify(scores, float(self.diversity_threshold))

    def drop_unpopular(self, scores: torch.Tensor) -> torch.Tensor:
        """The paper's rule on the top-``diversity_pool`` list: remove unpopular items,
        best-ranked first, while the list is longer than ``list_length``; everything
        else scores -inf."""
        pool = min(self.diversity_pool, scores.shape[1])
        top, candidates = scores.topk(pool, dim=1)
        unpopular = ~self.allowed[candidates] & torch.isfinite(top)
        removable = (torch.isfinite(top).sum(1, keepdim=True) - self.list_length).clamp_min(0)
        removed = unpopular & (unpopular.cumsum(1) <= removable)
        kept = torch.where(removed, torch.full_like(top, -torch.inf), top)
        return torch.full_like(scores, -torch.inf).scatter(1, candidates, kept)

    def diversify(self, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        """Greedy: walk each list best-first and drop an item more similar than
        ``threshold`` (cosine) to an item already kept. Items beyond the pool
        and dropped items score -inf; kept items keep their order."""
        pool = min(self.diversity_pool, scores.shape[1])
        top, candidates = scores.topk(pool, dim=1)
        vectors = torch.nn.functional.normalize(self.item_table[candidates], dim=2)
        similar = (vectors @ vectors.transpose(1, 2)) > threshold
        kept = torch.zeros_like(top, dtype=torch.bool)
        for j in range(pool):
            clash = (similar[:, j, :j] & kept[:, :j]).any(dim=1)
            kept[:, j] = ~clash & torch.isfinite(top[:, j])
        rank_score = torch.arange(pool, 0, -1, dtype=scores.dtype, device=scores.device).expand_as(top)
        out = torch.full_like(scores, -torch.inf)
        return out.scatter(1, candidates, torch.where(kept, rank_score, torch.full_like(rank_score, -torch.inf)))
