"""LLMSRec: distilling a trained SASRec's user representation into a frozen LLM
(Kim et al., "Lost in Sequence", KDD 2025).

The prompt lists the session's item titles in order and ends with a user token;
the frozen LLM's last hidden state there, through a small MLP, represents the
user. Items are represented by the LLM's hidden state for "title + item token"
through a second MLP; the LLM is frozen, so those states are computed once and
cached on disk. Both kinds of state are standardised per dimension before their
MLP (see ``RunningStandardize``). Only the MLPs, two projections and the user-token embedding
learn, from: next-item retrieval (softmax over the catalog) + distillation (MSE
between the projected LLM user representation and the projected, frozen SASRec
user representation) + a uniformity term that keeps both from collapsing.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.sequential_recommender import SASRec
from recbole.utils import InputType
from tqdm.auto import tqdm

from ..data.catalog import catalog_titles
from ..llm.local import resolve_local_llm
from ..patches import load_checkpoint
from ..registry import register_model
from ..settings import config_value
from ..trainer import StepBudgetTrainer
from .common import ScoresFromFullSort, SharesHelpersOnCopy

logger = logging.getLogger(__name__)
USER_TOKEN, ITEM_TOKEN = "[UserRep]", "[ItemRep]"


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020): log E exp(-t ||x_i - x_j||^2) over normalised rows."""
    x = torch.nn.functional.normalize(x, dim=1)
    if len(x) < 2:
        return x.new_zeros(())
    return torch.pdist(x).pow(2).mul(-t).exp().mean().clamp_min(1e-12).log()


def mlp(d_in: int, d_hidden: int, d_out: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(d_in, d_hidden), torch.nn.GELU(), torch.nn.Linear(d_hidden, d_out))


class RunningStandardize(torch.nn.BatchNorm1d):
    """Per-dimension standardisation by running statistics, nothing learned. A causal LM's last hidden states
    share one large direction (SmolLM2-135M: mean pairwise cosine 0.95 over ml-100k's item states, 0.98 over
    user prompts) that would drown what tells sessions apart; users get their own statistics because the user
    token's common direction differs from the items'. A lone training row is scaled by the running values."""

    def __init__(self, width: int):
        super().__init__(width, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) < 2:
            return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, eps=self.eps)
        return super().forward(x)


def load_frozen_llm(model_setting):
    """(tokenizer with the user/item tokens, frozen causal LM, its folder) of ``llm_model``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_local_llm(model_setting)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": [USER_TOKEN, ITEM_TOKEN]})
    tokenizer.padding_side = "left"  # the user token is always the last position
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    llm.resize_token_embeddings(len(tokenizer))
    llm.requires_grad_(False)
    llm.eval()
    return tokenizer, llm, path


def item_states_file(config, path, titles: list[str]) -> Path:
    key = hashlib.sha256("\x1f".join([str(path)] + titles).encode()).hexdigest()[:16]
    return Path(config["checkpoint_dir"]) / "llmsrec" / f"item_states_{key}.pt"


def states_by_length(tokenizer, prompts: list[str], run, batch_size: int, width: int, desc: str | None = None,
                     show_progress: bool = True, device="cpu") -> torch.Tensor:
    """``run`` (prompts -> last-position LLM states) over chunks of ``batch_size`` prompts of similar token
    length, in the original order: padding is wasted LLM compute (Beauty titles run from 2 to 100+ tokens)."""
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    states = torch.empty(len(prompts), width, device=device)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=desc is None or not show_progress):
        rows = order[start : start + batch_size]
        states[rows] = run([prompts[i] for i in rows])
    return states


@register_model
class LLMSRec(SharesHelpersOnCopy, ScoresFromFullSort, SequentialRecommender):
    input_type = InputType.POINTWISE
    shared_on_copy = ("llm", "tokenizer")
    trainer_class = None  # set below: LLMSRecTrainer
    expensive_scoring = True  # every score is an LLM call: the report skips its re-scoring analyses
    companion_model_key = "llmsrec_teacher_model"

    @classmethod
    def check_settings(cls, config) -> None:
        mode = config["llmsrec_user_token"]
        if mode not in ("fixed", "learned"):
            raise ValueError(f"llmsrec_user_token must be fixed or learned; got {mode!r}")

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        """The frozen LLM's state of every item's "title + item token", computed once and cached on disk (the
        LLM is loaded only when the cache is missing)."""
        titles = catalog_titles(config, dataset)
        cache = item_states_file(config, resolve_local_llm(config["llm_model"]), titles)
        if cache.exists():
            return
        tokenizer, llm, _ = load_frozen_llm(config["llm_model"])
        prompts = [f"Item: {title} {ITEM_TOKEN}" for title in titles]

        def last_states(chunk: list[str]) -> torch.Tensor:
            encoded = tokenizer(chunk, return_tensors="pt", padding=True)
            return llm.model(**encoded).last_hidden_state[:, -1]

        with torch.no_grad():
            states = states_by_length(tokenizer, prompts, last_states, int(config["llmsrec_state_batch_size"]),
                                      llm.config.hidden_size, "LLM item states", bool(config["show_progress"]))
        states[0] = 0.0
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        torch.save(states, tmp)
        os.replace(tmp, cache)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_settings(config)
        self.dim = int(config["llmsrec_dim"])
        self.llmsrec_distill_weight = float(config["llmsrec_distill_weight"])
        self.llmsrec_uniformity_weight = float(config["llmsrec_uniformity_weight"])
        self.max_prompt_items = int(config["llmsrec_max_prompt_items"])
        self.show_progress = bool(config["show_progress"])
        self.state_batch_size = int(config["llmsrec_state_batch_size"])
        self.titles = catalog_titles(config, dataset)
        self.teacher = self._teacher(config, dataset)
        self.tokenizer, llm, path = load_frozen_llm(config["llm_model"])
        object.__setattr__(self, "llm", llm)  # frozen and reloadable from its folder: not in our state_dict
        width = llm.config.hidden_size
        embeddings = llm.get_input_embeddings().weight
        self.user_token_id = self.tokenizer.convert_tokens_to_ids(USER_TOKEN)
        self.token_mode = config["llmsrec_user_token"]
        token = embeddings[: len(self.tokenizer) - 2].mean(0).clone()
        if self.token_mode == "learned":  # every step runs the LLM: ~8 s per 16 prompts on 2 CPU cores
            self.user_token = torch.nn.Parameter(token)
        else:  # fixed: a prompt's LLM state never changes, so it is computed once and cached on disk
            self.register_buffer("user_token", token)
        self._state_file = Path(config["checkpoint_dir"]) / "llmsrec" / (
            "user_states_" + hashlib.sha256(f"{path}\x1f{self.max_prompt_items}".encode()).hexdigest()[:16] + ".pt")
        self._user_states: dict[str, torch.Tensor] = {}
        self._unsaved = 0
        cache = item_states_file(config, path, self.titles)
        if not cache.exists():
            raise FileNotFoundError(f"{cache}: the LLM item states are made by the prepare stage before the model "
                                    "is built (recbole_llm.prepare.prepare(config, train_dataset))")
        states = torch.load(cache, weights_only=True)
        catalog = states[1:]  # the catalog and the LLM are fixed: standardise once, by the catalog's exact statistics
        states = (states - catalog.mean(0)) / catalog.std(0).clamp_min(1e-6)
        states[0] = 0.0  # padding; its score is masked
        self.register_buffer("item_states", states)
        self.user_state_norm = RunningStandardize(width)
        self.user_mlp = mlp(width, 2 * self.dim, self.dim)
        self.item_mlp = mlp(width, 2 * self.dim, self.dim)
        self.project_llm = torch.nn.Linear(self.dim, self.dim)
        self.project_cf = torch.nn.Linear(self.teacher.hidden_size, self.dim)
        self.loss_fct = torch.nn.CrossEntropyLoss()
        self.last_losses: dict[str, float] = {}

    def _apply(self, fn, *args, **kwargs):
        self.llm._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def _teacher(self, config, dataset) -> SASRec:
        """The frozen collaborative model: read from ``llmsrec_teacher_checkpoint``, or trained by the trainer
        (``train_teacher``) before LLMSRec's own epochs. ``teacher_ready`` is saved with the model, so a
        resumed or reloaded model never trains its teacher again."""
        self._teacher_config = copy.deepcopy(config)
        self._teacher_config["model"] = "SASRec"
        teacher = SASRec(self._teacher_config, dataset)
        checkpoint = config_value(config, "llmsrec_teacher_checkpoint")
        if checkpoint:
            teacher.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
        self.register_buffer("teacher_ready", torch.tensor(bool(checkpoint)))
        teacher.requires_grad_(False)
        teacher.eval()
        return teacher

    def train_teacher(self, train_data) -> None:
        """``llmsrec_teacher_epochs`` of SASRec on the training split (its batches: ``llmsrec_teacher_batch_size``;
        LLMSRec's own are small because each prompt goes through the LLM)."""
        if bool(self.teacher_ready):
            return
        from recbole.data.dataloader import TrainDataLoader
        from recbole.trainer import Trainer

        sub_config = self._teacher_config
        sub_config["epochs"] = int(sub_config["llmsrec_teacher_epochs"])
        sub_config["train_batch_size"] = int(sub_config["llmsrec_teacher_batch_size"])
        loader = TrainDataLoader(sub_config, train_data._dataset, None, shuffle=True)
        self.teacher.requires_grad_(True)
        trainer = Trainer(sub_config, self.teacher)
        for epoch in range(sub_config["epochs"]):
            trainer._train_epoch(loader, epoch, show_progress=False)
        for parameter in self.teacher.parameters():
            parameter.grad = None
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.teacher_ready.fill_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout
        return self

    def user_prompts(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        prompts = []
        for row, n in zip(item_seq.tolist(), lengths.tolist()):
            items = row[:n][-self.max_prompt_items :]
            listed = "; ".join(f"{i + 1}. {self.titles[item]}" for i, item in enumerate(items))
            prompts.append(f"A user interacted with, in this order: {listed}. The user is {USER_TOKEN}")
        return prompts

    def llm_user_states(self, interaction) -> torch.Tensor:
        prompts = self.user_prompts(interaction[self.ITEM_SEQ].cpu(), interaction[self.ITEM_SEQ_LEN].cpu())
        if self.token_mode == "learned":
            return self._prompt_states(prompts)
        return self.cached_user_states(prompts)

    def cached_user_states(self, prompts: list[str], save_every: int = 512) -> torch.Tensor:
        """Fixed user token: each prompt's frozen-LLM state, computed once (by length, saved every
        ``save_every`` new states, so an interrupted run resumes) and read from the cache afterwards."""
        if not self._user_states and self._state_file.exists():
            saved = torch.load(self._state_file, weights_only=True)
            self._user_states = dict(zip(saved["prompts"], saved["states"]))
        missing = list(dict.fromkeys(p for p in prompts if p not in self._user_states))
        for start in range(0, len(missing), save_every):
            chunk = missing[start : start + save_every]
            with torch.no_grad():
                states = self._by_length(chunk, self._prompt_states,
                                         "LLM user states" if len(missing) > self.state_batch_size else None)
            self._user_states.update(zip(chunk, states.cpu()))
            self._unsaved += len(chunk)
            if self._unsaved >= save_every or start + save_every >= len(missing):
                self._save_user_states()
        return torch.stack([self._user_states[p] for p in prompts]).to(self.user_token.device)

    def _save_user_states(self) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        torch.save({"prompts": list(self._user_states), "states": torch.stack(list(self._user_states.values()))}, tmp)
        os.replace(tmp, self._state_file)
        self._unsaved = 0

    def prepare_user_states(self, train_data) -> None:
        """Every training prompt's state at once, sorted by length (less padding than batch by batch)."""
        if self.token_mode != "fixed":
            return
        inter = train_data._dataset.inter_feat
        self.cached_user_states(self.user_prompts(inter[self.ITEM_SEQ], inter[self.ITEM_SEQ_LEN]))

    def _prompt_states(self, prompts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.user_token.device)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if not bool((ids[:, -1] == self.user_token_id).all()):
            raise RuntimeError("the user token must end every prompt (left padding)")
        # Only the user token's embedding learns and it is the last position: the titles before it run once
        # without autograd into a KV cache, and only the last position is differentiated (3x cheaper steps).
        with torch.no_grad():
            prefix = self.llm.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
        user = self.user_token.expand(len(prompts), 1, -1)
        hidden = self.llm.model(inputs_embeds=user, attention_mask=mask, past_key_values=prefix.past_key_values)
        return hidden.last_hidden_state[:, -1]

    def user_representation(self, interaction) -> torch.Tensor:
        return self.user_mlp(self.user_state_norm(self.llm_user_states(interaction)))

    def item_representations(self) -> torch.Tensor:
        return self.item_mlp(self.item_states)

    def calculate_loss(self, interaction):
        user = self.user_representation(interaction)
        items = self.item_representations()
        logits = user @ items.T
        logits[:, 0] = -torch.inf
        retrieval = self.loss_fct(logits, interaction[self.POS_ITEM_ID])
        with torch.no_grad():
            teacher = self.teacher.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        student_z, teacher_z = self.project_llm(user), self.project_cf(teacher)
        distill = torch.nn.functional.mse_loss(student_z, teacher_z)
        uniform = uniformity(student_z) + uniformity(teacher_z)
        self.last_losses = {"retrieval": retrieval.item(), "distill": distill.item(), "uniformity": uniform.item()}
        return retrieval + self.llmsrec_distill_weight * distill + self.llmsrec_uniformity_weight * uniform

    def _by_length(self, prompts: list[str], run, desc: str | None = None) -> torch.Tensor:
        return states_by_length(self.tokenizer, prompts, run, self.state_batch_size, self.llm.config.hidden_size,
                                desc, self.show_progress, self.user_token.device)

    def full_sort_predict(self, interaction):
        # RecBole hands over every evaluated session at once: one padded batch would waste most of its compute
        prompts = self.user_prompts(interaction[self.ITEM_SEQ].cpu(), interaction[self.ITEM_SEQ_LEN].cpu())
        users = (self.cached_user_states(prompts) if self.token_mode == "fixed"
                 else self._by_length(prompts, self._prompt_states))
        scores = self.user_mlp(self.user_state_norm(users)) @ self.item_representations().T
        scores[:, 0] = -torch.inf
        return scores


class LLMSRecTrainer(StepBudgetTrainer):
    """With a fixed user token, every training prompt's LLM state is computed (and cached) before the first
    epoch; the epochs then train the MLPs on cached states, which is cheap. ``llmsrec_train_prompts`` caps the
    training prompts at a seeded sample (the same rows every epoch): on CPU the frozen LLM's pass over each
    prompt, not the epochs, is the cost (~0.4 s per prompt for SmolLM2-135M on one thread)."""

    def fit(self, train_data, *args, **kwargs):
        self.model.train_teacher(train_data)
        train_data = self.training_sample(train_data)
        self.model.prepare_user_states(train_data)
        return super().fit(train_data, *args, **kwargs)

    def training_sample(self, train_data):
        cap = config_value(self.config, "llmsrec_train_prompts")
        dataset = train_data._dataset
        if not cap or len(dataset.inter_feat) <= int(cap):
            return train_data
        import numpy as np
        from recbole.data.dataloader import TrainDataLoader

        rows = np.sort(np.random.default_rng(int(self.config["seed"])).choice(
            len(dataset.inter_feat), int(cap), replace=False))
        logger.info("llmsrec_train_prompts: %d of %d training prompts", len(rows), len(dataset.inter_feat))
        sample = dataset.copy(dataset.inter_feat[torch.as_tensor(rows)])
        return TrainDataLoader(self.config, sample, train_data._sampler, shuffle=True)


LLMSRec.trainer_class = LLMSRecTrainer
