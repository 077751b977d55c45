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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.sequential_recommender import SASRec
from recbole.utils import InputType
from tqdm.auto import tqdm

from ..checkpoints import load_checkpoint
from ..embeddings.store import catalog_titles
from ..errors import MissingFileError
from ..llm.local import resolve_local_llm
from ..llm.precision import precision_context, quantize_int8, resolve_precision
from ..llm.states import LLMStateStore, llm_identity, parse_shard
from ..registry import register_model
from ..settings import ModelSettings
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


def load_frozen_llm(model_setting, precision: str = "fp32"):
    """(tokenizer with the user/item tokens, frozen causal LM, its folder) of ``llm_model``. The two added
    tokens' input vectors are the mean token vector (transformers would draw them at random, and a state
    store keyed by prompt must not depend on a random draw); ``precision: int8`` quantises the Linear layers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_local_llm(model_setting)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": [USER_TOKEN, ITEM_TOKEN]})
    tokenizer.padding_side = "left"  # the user token is always the last position
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    before = llm.get_input_embeddings().weight.shape[0]
    llm.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        table = llm.get_input_embeddings().weight
        table[before:] = table[:before].mean(0)
    llm.requires_grad_(False)
    llm.eval()
    if precision == "int8":
        llm = quantize_int8(llm)
    return tokenizer, llm, path


def teacher_weights(path) -> dict:
    """The teacher's state dict from ``llmsrec_teacher_checkpoint``: a weights-only file (``torch.save`` of a
    state dict) or a checkpoint of a SASRec run; read with ``weights_only=True`` (``checkpoints.load_checkpoint``),
    so a file from elsewhere cannot run code."""
    if not Path(path).is_file():
        raise MissingFileError(f"llmsrec_teacher_checkpoint: no file {path}")
    saved = load_checkpoint(path)
    return saved["state_dict"] if "state_dict" in saved else saved


def item_prompt(title: str) -> str:
    return f"Item: {title} {ITEM_TOKEN}"


def user_prompt(titles: list[str], items: list[int], max_items: int) -> str:
    """The session's last ``max_items`` items as a numbered list of titles, ending in the user token."""
    listed = "; ".join(f"{i + 1}. {titles[item]}" for i, item in enumerate(items[-max_items:]))
    return f"A user interacted with, in this order: {listed}. The user is {USER_TOKEN}"


@dataclass(frozen=True)
class LLMSRecSettings(ModelSettings):
    """LLMSRec's settings (defaults: ``properties/model/LLMSRec.yaml``, where each is explained; the teacher's
    architecture: its ``llmsrec_teacher_model``'s yaml)."""

    llm_model: str | None
    llm_state_precision: str | None
    llm_state_shard: list | None  # set by `llm-states --shard`
    llmsrec_teacher_model: str
    llmsrec_teacher_checkpoint: str | None
    llmsrec_teacher_epochs: int
    llmsrec_teacher_batch_size: int
    llmsrec_dim: int
    llmsrec_distill_weight: float
    llmsrec_uniformity_weight: float
    llmsrec_max_prompt_items: int
    llmsrec_state_batch_size: int
    llmsrec_user_token: Literal["fixed", "learned"]
    llmsrec_train_rows: Literal["last", "all"]
    llmsrec_train_prompts: int | None
    seed: int


def state_precision(config) -> str:
    """``llm_state_precision`` resolved on this machine (``auto``: bf16 where it is native, else fp32)."""
    return resolve_precision(LLMSRecSettings.read(config).llm_state_precision, config["device"])


def state_store(path, precision: str) -> LLMStateStore:
    """The shared store of the states of the LLM in ``path`` run in ``precision``."""
    return LLMStateStore(llm_identity(path, precision))


def state_functions(tokenizer, llm, precision: str, device="cpu") -> tuple:
    """(prompts -> last-position states of one forward pass in ``precision``, prompts -> token lengths): what
    ``LLMStateStore.compute`` / ``tensor(fill_with=...)`` run."""
    def last_states(chunk: list[str]) -> torch.Tensor:
        encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
        with precision_context(precision, device):
            return llm.model(**encoded).last_hidden_state[:, -1]

    def lengths(chunk: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(chunk)["input_ids"]]

    return last_states, lengths


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
    settings_class = LLMSRecSettings

    @classmethod
    def prepare_resources(cls, config, dataset) -> None:
        """The frozen LLM's state of every item's "title + item token", computed once into the shared state
        store."""
        settings, precision = cls.settings_class.read(config), state_precision(config)
        store = state_store(resolve_local_llm(settings.llm_model), precision)
        prompts = [item_prompt(t) for t in catalog_titles(config, dataset)[1:]]
        shard = parse_shard(settings.llm_state_shard or [1, 1])  # set by `llm-states --shard`
        todo = store.missing(prompts, shard)
        if todo:  # the LLM is loaded only when some state is missing
            tokenizer, llm, _ = load_frozen_llm(settings.llm_model, precision)
            store.compute(todo, *state_functions(tokenizer, llm.to(config["device"]), precision, config["device"]),
                          settings.llmsrec_state_batch_size, "LLM item states")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.settings = settings = self.settings_class.read(config)
        self.dim = settings.llmsrec_dim
        self.llmsrec_distill_weight = settings.llmsrec_distill_weight
        self.llmsrec_uniformity_weight = settings.llmsrec_uniformity_weight
        self.max_prompt_items = settings.llmsrec_max_prompt_items
        self.show_progress = bool(config["show_progress"])
        self.state_batch_size = settings.llmsrec_state_batch_size
        self.titles = dataset.item_texts(config)
        self.teacher = self._teacher(config, dataset)
        self.precision = state_precision(config)
        self.tokenizer, llm, path = load_frozen_llm(settings.llm_model, self.precision)
        object.__setattr__(self, "llm", llm)  # frozen and reloadable from its folder: not in our state_dict
        width = llm.config.hidden_size
        embeddings = llm.get_input_embeddings().weight
        self.user_token_id = self.tokenizer.convert_tokens_to_ids(USER_TOKEN)
        self.token_mode = settings.llmsrec_user_token
        token = embeddings[self.user_token_id].clone()  # the mean token vector (load_frozen_llm)
        if self.token_mode == "learned":  # every step runs the LLM: ~8 s per 16 prompts on 2 CPU cores
            self.user_token = torch.nn.Parameter(token)
        else:  # fixed: a prompt's LLM state never changes, so it is computed once and cached on disk
            self.register_buffer("user_token", token)
        self.store = state_store(path, self.precision)
        # the catalog and the LLM are fixed: the item states (made by the prepare stage) are standardised
        # once, by the catalog's exact statistics; row 0 is padding, its score is masked
        catalog = self.store.tensor([item_prompt(t) for t in self.titles[1:]])
        states = torch.cat([torch.zeros(1, width), (catalog - catalog.mean(0)) / catalog.std(0).clamp_min(1e-6)])
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
        checkpoint = self.settings.llmsrec_teacher_checkpoint
        if checkpoint:
            teacher.load_state_dict(teacher_weights(checkpoint))
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
        sub_config["epochs"] = self.settings.llmsrec_teacher_epochs
        sub_config["train_batch_size"] = self.settings.llmsrec_teacher_batch_size
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
        return [user_prompt(self.titles, row[:n], self.max_prompt_items)
                for row, n in zip(item_seq.tolist(), lengths.tolist())]

    def llm_user_states(self, interaction) -> torch.Tensor:
        prompts = self.user_prompts(interaction[self.ITEM_SEQ].cpu(), interaction[self.ITEM_SEQ_LEN].cpu())
        if self.token_mode == "learned":
            return self._prompt_states(prompts)
        return self.cached_user_states(prompts)

    def cached_user_states(self, prompts: list[str]) -> torch.Tensor:
        """Fixed user token: each prompt's frozen-LLM state from the shared store, read once; those it lacks are
        computed first (stored batch by batch, so an interrupted run resumes)."""
        _, lengths = state_functions(self.tokenizer, self.llm, self.precision)
        return self.store.tensor(prompts, (self._prompt_states, lengths), self.state_batch_size,
                                 "LLM user states").to(self.user_token.device)

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
        with torch.no_grad(), precision_context(self.precision, ids.device):
            prefix = self.llm.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
        user = self.user_token.expand(len(prompts), 1, -1)
        with precision_context(self.precision, ids.device):
            hidden = self.llm.model(inputs_embeds=user, attention_mask=mask, past_key_values=prefix.past_key_values)
        return hidden.last_hidden_state[:, -1].float()

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
        return training_sample(self.config, train_data)


def training_sample(config, train_data):
    """``llmsrec_train_rows: last`` keeps one row per training session, its newest prefix (as LLM-SRec's own
    code trains: one sample per user, the last item the target); ``all`` every prefix. Then
    ``llmsrec_train_prompts`` caps the rows at a seeded sample (the same rows every epoch)."""
    import numpy as np
    from recbole.data.dataloader import TrainDataLoader

    dataset = train_data._dataset
    inter = dataset.inter_feat
    rows = np.arange(len(inter))
    settings = LLMSRecSettings.read(config)
    mode = settings.llmsrec_train_rows
    if mode == "last":
        users = inter[dataset.uid_field].numpy()
        order = np.lexsort((rows, users))  # a session's prefix rows are in time order: its last row is the newest
        last = np.r_[users[order][1:] != users[order][:-1], True]
        rows = np.sort(order[last])
    cap = settings.llmsrec_train_prompts
    if cap and len(rows) > cap:
        rows = np.sort(np.random.default_rng(settings.seed).choice(rows, cap, replace=False))
    if len(rows) == len(inter):
        return train_data
    logger.info("LLMSRec trains on %d of %d training rows (llmsrec_train_rows: %s, llmsrec_train_prompts: %s)",
                len(rows), len(inter), mode, cap)
    sample = dataset.copy(inter[torch.as_tensor(rows)])
    return TrainDataLoader(config, sample, train_data._sampler, shuffle=True)


LLMSRec.trainer_class = LLMSRecTrainer


def run_prompts(config, train_data, valid_data, test_data, order_test: bool = True) -> dict[str, list[str]]:
    """Every prompt whose frozen-LLM state a fixed-token LLMSRec run reads, by part: the catalog's items, the
    training rows (``training_sample``), the validation and test sessions and, for the order test, the test
    sessions with their items shuffled exactly as ``analysis.shuffled_prompts`` will shuffle them."""
    from ..analysis import shuffle_items

    dataset = train_data._dataset
    titles = catalog_titles(config, dataset)
    width = LLMSRecSettings.read(config).llmsrec_max_prompt_items
    seq_field, len_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]

    def prompts(seq, lengths):
        return [user_prompt(titles, row[:n], width) for row, n in zip(seq.tolist(), lengths.tolist())]

    train = training_sample(config, train_data)._dataset.inter_feat
    parts = {"items": [item_prompt(t) for t in titles[1:]], "train": prompts(train[seq_field], train[len_field])}
    for name, loader in (("valid", valid_data), ("test", test_data)):
        parts[name] = [p for batch in loader for p in prompts(batch[0][seq_field], batch[0][len_field])]
    if order_test:
        generator = torch.Generator().manual_seed(0)  # analysis.shuffled_prompts(model, seed=0), batch by batch
        parts["test_shuffled"] = [
            p for batch in test_data
            for p in prompts(shuffle_items(batch[0][seq_field], batch[0][len_field], generator), batch[0][len_field])]
    return parts
