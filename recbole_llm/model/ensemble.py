"""ScoreEnsemble: a weighted sum of independently trained models' normalised scores.

Collins et al. ("EnsRec", arXiv 2512.17820) found on this very Beauty catalog that fusing the scores of an ID
model and an LLM-initialised model at inference beat every more complex fusion they tried. Members are any
models of this package or RecBole: trained ones from their checkpoints (read with ``weights_only=True``, each
rebuilt under the settings it was trained with), one-pass ones (LLMSeqSim, SKNN-Emb, ...) fitted on the spot.

Each member's scores are normalised per session over the items it ranks (``ensemble_normalize``: ``zscore``,
``minmax``, ``softmax`` with ``ensemble_temperature``, or ``none``), then summed with ``ensemble_weights``;
``auto`` tunes the weights on the validation sessions (a grid over the simplex, ``ensemble_weight_step``), never on
test. An item a member refuses (-inf: the prompt's own items, a hybrid's removals) stays refused. The weights are
saved with the model, so ``recommend`` and ``recommend_many`` use the ensemble as tuned.

    ensemble_members:
      - {model: LLM2SASRec, checkpoint: saved/LLM2SASRec-....pth}
      - {model: SASRec, checkpoint: saved/SASRec-....pth}
      - {model: LLMSeqSim}
    ensemble_weights: auto
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from ..checkpoints import load_checkpoint
from ..errors import MissingFileError, SettingError
from ..registry import fits_in_one_pass, get_model, register_model
from ..settings import ModelSettings
from ..trainer import FitOnceTrainer
from .common import ScoresFromFullSort

logger = logging.getLogger(__name__)
NORMALIZERS = ("zscore", "minmax", "softmax", "none")


@dataclass(frozen=True)
class ScoreEnsembleSettings(ModelSettings):
    """ScoreEnsemble's settings (defaults: ``properties/model/ScoreEnsemble.yaml``)."""

    ensemble_members: list | None
    ensemble_weights: Any  # "auto" or one non-negative number per member (checked in check_settings)
    ensemble_normalize: Literal["zscore", "minmax", "softmax", "none"]  # NORMALIZERS
    ensemble_temperature: float
    ensemble_weight_step: float
    ensemble_train_members: bool
    seed: int


def resolve_checkpoint(checkpoint, seed, number: int) -> str | None:
    """A member's checkpoint: a file, or a finished run's result JSON (its ``checkpoint``, relative to where the
    run was made), ``{seed}`` standing for the ensemble's seed so that each seed fuses members of the same seed."""
    import json

    if not checkpoint:
        return None
    checkpoint = str(checkpoint).replace("{seed}", str(seed))
    if checkpoint.endswith(".json"):
        if not Path(checkpoint).is_file():
            raise MissingFileError(f"ensemble_members, member {number}: no run file {checkpoint}")
        named = json.loads(Path(checkpoint).read_text()).get("checkpoint")
        if not named or not Path(named).is_file():
            raise MissingFileError(f"ensemble_members, member {number}: the run {checkpoint} names the checkpoint "
                                    f"{named!r}, which is not on this machine: run that experiment row again here "
                                    "(its seed makes it the same model)")
        return named
    return checkpoint


def member_specs(config) -> list[dict]:
    """The members as configured, checked: a model name, and a checkpoint unless it is fitted in one pass."""
    settings = ScoreEnsembleSettings.read(config)
    members = settings.ensemble_members or []
    if not isinstance(members, list) or len(members) < 2:
        raise SettingError("ensemble_members must list at least two members, e.g. [{model: LLM2SASRec, checkpoint: "
                         "saved/LLM2SASRec-....pth}, {model: LLMSeqSim}]")
    specs = []
    for number, member in enumerate(members, 1):
        if isinstance(member, str):
            member = {"model": member}
        if not isinstance(member, dict) or "model" not in member:
            raise SettingError(f"ensemble_members, member {number}: a mapping with 'model' (and 'checkpoint', "
                             f"'settings'); got {member!r}")
        get_model(member["model"])  # an unknown name fails here, naming the known ones
        checkpoint = resolve_checkpoint(member.get("checkpoint"), settings.seed, number)
        if checkpoint and not Path(checkpoint).is_file():
            raise MissingFileError(f"ensemble_members, member {number} ({member['model']}): no checkpoint "
                                    f"{checkpoint}")
        spec = {"model": member["model"], "checkpoint": checkpoint, "settings": member.get("settings") or {},
                "train": False}
        if not checkpoint and not fits_in_one_pass({**spec["settings"], "model": member["model"]}):
            if not settings.ensemble_train_members:
                raise SettingError(f"ensemble_members, member {number}: {member['model']} learns by training; give "
                                   "the checkpoint of a trained run ('checkpoint: saved/....pth'), or set "
                                   "ensemble_train_members: True to train it first, in this run")
            spec.update(checkpoint=str(member_checkpoint(config, spec)), train=True)
        specs.append(spec)
    return specs


def member_checkpoint(config, spec: dict) -> Path:
    """Where a member trained for the ensemble (``ensemble_train_members``) is kept: named by its model, seed and
    resolved settings, so that it is trained once and found again by every run that asks for the same member."""
    from ..checkpoints import config_hashes

    member = member_config(config, spec)
    folder = Path(config["checkpoint_dir"]) / "ensemble_members" / str(config["dataset"])
    named = [folder / f"{spec['model']}-seed{member['seed']}-{digest[:12]}.pth" for digest in config_hashes(member)]
    return next((path for path in named if path.is_file()), named[0])  # one trained before a default moved to yaml


def member_config(config, spec: dict, record: dict | None = None):
    """The Config a member runs under: its own preset and defaults, the settings it was trained with (from its
    checkpoint) or given in ``settings``, on the ensemble's data."""
    from recbole.config import Config

    files, settings = member_files_and_settings(config, spec, record)
    return Config(model=spec["model"], dataset=config["dataset"], config_file_list=files, config_dict=settings)


# the ensemble's data: which sessions are trained on, validated and tested, and how; a member fitted or trained here
# must see the same (a member from a checkpoint keeps the settings it was trained with)
DATA_SETTINGS = ("eval_args", "temporal_fold", "session_valid_holdout", "session_unseen_targets", "session_tie_order",
                 "data_seed", "exclude_session_items", "metric_popularity")


def member_files_and_settings(config, spec: dict, record: dict | None = None) -> tuple[list[str], dict]:
    """The preset files and settings a member runs (or is trained) under; its seed is the ensemble's unless its
    checkpoint recorded one; a member without a checkpoint takes the ensemble's data settings (``DATA_SETTINGS``),
    so that a member trained for a fold or a shuffled order is trained on that split, and named by it."""
    from ..presets import config_files

    settings = dict((record or {}).get("settings") or {})
    if record is None:
        settings.update({key: config[key] for key in DATA_SETTINGS if config[key] is not None})
    settings.update(spec["settings"])
    # RecBole's data_path ends in the dataset's folder; a Config is given the folder above it
    settings.update({"data_path": str(Path(config["data_path"]).parent), "show_progress": False,
                     "state": config["state"]})
    if record and record.get("seed") is not None:
        settings.setdefault("seed", record["seed"])
    settings.setdefault("seed", config["seed"])
    preset = config["preset"]  # our protocol's (overall.yaml); a member of a plain RecBole run gets no preset files
    return (config_files(None, spec["model"], config["dataset"], preset) if preset else []), settings


def normalise(scores: torch.Tensor, how: str, temperature: float = 1.0) -> torch.Tensor:
    """Per row, over the finite scores (the items the member ranks); -inf stays -inf."""
    finite = torch.isfinite(scores)
    if how == "none":
        return scores
    values = torch.where(finite, scores, torch.zeros_like(scores))
    count = finite.sum(1, keepdim=True).clamp_min(1)
    if how == "zscore":
        mean = values.sum(1, keepdim=True) / count
        var = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(1, keepdim=True) / count
        out = (scores - mean) / var.sqrt().clamp_min(1e-12)
    elif how == "minmax":
        low = torch.where(finite, scores, torch.full_like(scores, torch.inf)).min(1, keepdim=True).values
        high = torch.where(finite, scores, torch.full_like(scores, -torch.inf)).max(1, keepdim=True).values
        out = (scores - low) / (high - low).clamp_min(1e-12)
    else:  # softmax: a distribution over the items the member ranks
        out = torch.log_softmax(scores / temperature, dim=1).exp()
    return torch.where(finite, out, torch.full_like(scores, -torch.inf))


def simplex_grid(members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex with entries in multiples of ``step`` (each member weight > 0 or not)."""
    units = round(1 / step)
    return [tuple(c / units for c in combo) for combo in itertools.product(range(units + 1), repeat=members)
            if sum(combo) == units]


@register_model
class ScoreEnsemble(ScoresFromFullSort, SequentialRecommender):
    input_type = InputType.POINTWISE
    trainer_class = None  # set below: EnsembleTrainer
    trains_members = True  # ensemble_train_members: recbole_llm/members.py trains them before the ensemble is built
    settings_class = ScoreEnsembleSettings

    @classmethod
    def fits_in_one_pass(cls, config) -> bool:
        """No: nothing trains, but the weights are tuned on the validation holdout, which must stay out of the
        training split (the members were trained without it, and a one-pass member must not have seen it)."""
        return False

    @classmethod
    def check_settings(cls, config) -> None:
        specs, settings = member_specs(config), cls.settings_class.read(config)
        weights = settings.ensemble_weights
        if weights != "auto":
            if not isinstance(weights, list) or len(weights) != len(specs) or any(float(w) < 0 for w in weights):
                raise SettingError(f"ensemble_weights: 'auto' or {len(specs)} non-negative numbers, one per member; "
                                 f"got {weights!r}")
        step = settings.ensemble_weight_step
        if not 0 < step <= 0.5 or abs(round(1 / step) * step - 1) > 1e-9:
            raise SettingError(f"ensemble_weight_step must divide 1 (0.05, 0.1, 0.25, 0.5); got {step}")
        from ..embeddings.providers.local import check_local_embedding_model

        for spec in specs:  # a member still to be trained or fitted embeds its texts: its model must be here now,
            if not (spec["checkpoint"] and Path(spec["checkpoint"]).is_file()):  # not after the members before it
                check_local_embedding_model(member_config(config, spec))

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        """Each one-pass member's files (embeddings) through its own prepare hook."""
        for spec in member_specs(config):
            if spec["checkpoint"]:
                continue
            hook = getattr(get_model(spec["model"]), "prepare_resources", None)
            if hook is not None:
                hook(member_config(config, spec), dataset)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.settings = settings = self.settings_class.read(config)
        self.normalize = settings.ensemble_normalize
        self.temperature = settings.ensemble_temperature
        self.weight_step = settings.ensemble_weight_step
        self.members = torch.nn.ModuleList()
        self.member_names = []
        for spec in member_specs(config):
            if spec["train"] and not Path(spec["checkpoint"]).is_file():
                raise MissingFileError(f"ensemble member {spec['model']} is not trained yet ({spec['checkpoint']}): "
                                       "run_recbole_llm.py and the report train it first "
                                       "(recbole_llm.pipeline.train_missing_members)")
            checkpoint = load_checkpoint(spec["checkpoint"]) if spec["checkpoint"] else None
            record = checkpoint.get("config") if isinstance(checkpoint, dict) else None
            sub_config = member_config(config, spec, record if isinstance(record, dict) else None)
            member = get_model(spec["model"])(sub_config, dataset)
            if checkpoint is not None:
                member.load_state_dict(checkpoint["state_dict"])
                member.load_other_parameter(checkpoint.get("other_parameter"))
            member.requires_grad_(False)
            member.eval()  # frozen: no dropout, in any mode of the ensemble (see train)
            self.members.append(member)
            self.member_names.append(spec["model"] + (f" ({Path(spec['checkpoint']).name})" if spec["checkpoint"]
                                                      else ""))
        weights = settings.ensemble_weights
        self.tune_weights = weights == "auto"
        initial = [1.0 / len(self.members)] * len(self.members) if self.tune_weights else [float(w) for w in weights]
        self.register_buffer("weights", torch.tensor(initial))
        self.needs_training = False

    def train(self, mode: bool = True):
        super().train(mode)
        for member in self.members:
            member.eval()  # frozen: no dropout, ever
        return self

    def calculate_loss(self, interaction):
        raise RuntimeError("ScoreEnsemble does not train: its members are trained runs, its weights are tuned on "
                           "validation by its trainer")

    def member_scores(self, interaction) -> torch.Tensor:
        """[members, sessions, items]: each member's normalised scores."""
        rows = []
        for member in self.members:
            scores = member.full_sort_predict(interaction).reshape(len(interaction), -1).float()
            rows.append(normalise(scores, self.normalize, self.temperature))
        return torch.stack(rows)

    @staticmethod
    def combine(member_scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(member_scores).all(0)
        used = weights > 0
        total = (weights[used].view(-1, 1, 1) * torch.where(torch.isfinite(member_scores[used]), member_scores[used],
                                                             torch.zeros_like(member_scores[used]))).sum(0)
        return torch.where(finite, total, torch.full_like(total, -torch.inf))

    def full_sort_predict(self, interaction):
        return self.combine(self.member_scores(interaction), self.weights.to(torch.float32))


class EnsembleTrainer(FitOnceTrainer):
    """Nothing trains; with ``ensemble_weights: auto`` the weights are chosen on the validation sessions (NDCG@20,
    the prompt's items masked as in evaluation), before RecBole's validation pass and checkpoint."""

    def fit(self, train_data, valid_data=None, *args, **kwargs):
        if self.model.tune_weights and valid_data is not None:
            self.model.weights.copy_(self.tuned_weights(valid_data))
        return super().fit(train_data, valid_data, *args, **kwargs)

    @torch.no_grad()
    def tuned_weights(self, valid_data) -> torch.Tensor:
        model = self.model
        model.eval()
        stacks, targets = [], []
        for interaction, _, _, positive_i in valid_data:
            interaction = interaction.to(model.device)
            scores = model.member_scores(interaction)
            seq = interaction[model.ITEM_SEQ]
            scores[:, :, 0] = -torch.inf
            scores.scatter_(2, seq.unsqueeze(0).expand(scores.shape[0], -1, -1), -torch.inf)  # the prompt's items
            stacks.append(scores)
            targets.append(interaction[model.ITEM_ID])
        scores, targets = torch.cat(stacks, 1), torch.cat(targets)
        best, best_ndcg = None, -1.0
        for weights in simplex_grid(len(model.members), model.weight_step):
            combined = model.combine(scores, torch.tensor(weights))
            target_scores = combined.gather(1, targets.view(-1, 1))
            rank = (combined > target_scores).sum(1)  # 0-based; ties count for the target
            ndcg = torch.where(rank < 20, 1.0 / torch.log2(rank.float() + 2), torch.zeros_like(rank, dtype=torch.float))
            value = float(ndcg.mean())
            if value > best_ndcg + 1e-12:
                best, best_ndcg = weights, value
        logger.info("ensemble weights tuned on %d validation sessions: %s -> NDCG@20 %.4f", len(targets),
                    dict(zip(model.member_names, best)), best_ndcg)
        return torch.tensor(best)


ScoreEnsemble.trainer_class = EnsembleTrainer
