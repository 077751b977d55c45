"""Recommendations for one session, with titles (the paper code's ``predict(session)``).

    python -m recbole_llm recommend --dataset ml-100k --model LLMSeqSim --session "toy story" "goldeneye" -k 10
    python -m recbole_llm recommend --checkpoint saved/SASRec-....pth --session 50 181 --json

    from recbole_llm import recommend
    recommend("saved/SASRec-....pth", ["Toy Story", "GoldenEye"], k=10)
    recommend((model, dataset), ["i1", "i7"], k=5)        # a built model and its RecBole dataset

A session item is an item id (as in the atomic files) or a title (case and
spacing ignored). Unknown entries raise :class:`UnknownItemError`, which names
the nearest catalog titles. Scores are the model's own ``full_sort_predict``;
the session's items and padding are never recommended.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .prompts.mapping import normalise


@dataclass(frozen=True)
class Recommendation:
    rank: int
    item_id: str
    title: str
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


class UnknownItemError(ValueError):
    """Session entries that are neither an item id nor a catalog title."""

    def __init__(self, unknown: dict[str, list[str]]):
        self.unknown = unknown
        parts = [f"'{entry}'" + (f" (did you mean: {', '.join(repr(s) for s in near)}?)" if near else "")
                 for entry, near in unknown.items()]
        super().__init__(f"not an item id or title of this catalog: {'; '.join(parts)}")


def resolve_session(session, dataset, titles: list[str]) -> list[int]:
    """Internal item ids of ``session`` entries (ids first, then titles)."""
    field = dataset.iid_field
    token_to_id = dataset.field2token_id[field]
    by_title = {}
    for internal, title in enumerate(titles):
        if internal and title:
            by_title.setdefault(normalise(title), internal)
    ids, unknown = [], {}
    for entry in session:
        entry = str(entry)
        if entry in token_to_id and token_to_id[entry] != 0:
            ids.append(token_to_id[entry])
        elif normalise(entry) in by_title:
            ids.append(by_title[normalise(entry)])
        else:
            near = difflib.get_close_matches(normalise(entry), list(by_title), n=3, cutoff=0.4)
            unknown[entry] = [titles[by_title[n]] for n in near]
    if unknown:
        raise UnknownItemError(unknown)
    return ids


def session_interaction(model, dataset, item_ids: list[int]):
    """A one-row batch holding the session as RecBole's sequential (or general) models read it."""
    from recbole.data.interaction import Interaction

    config = dataset.config
    width = int(config["MAX_ITEM_LIST_LENGTH"] or len(item_ids))
    items = item_ids[-width:]
    seq = torch.zeros(1, width, dtype=torch.long)
    seq[0, : len(items)] = torch.as_tensor(items)
    return Interaction({
        config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: seq,
        config["ITEM_LIST_LENGTH_FIELD"]: torch.tensor([len(items)]),
        config["USER_ID_FIELD"]: torch.tensor([0]),  # general models (Pop) score every session alike
    })


def _titles(dataset) -> list[str]:
    from .data.catalog import catalog_titles

    try:
        return catalog_titles(dataset.config, dataset)
    except (FileNotFoundError, ValueError):  # no .item file or no title column: ids only
        return [""] * dataset.item_num


def recommend(model_or_checkpoint, session, k: int = 10, trusted: bool = False) -> list[Recommendation]:
    """The top ``k`` items for ``session`` (ids or titles), with titles and scores.
    ``model_or_checkpoint``: a checkpoint path (read with ``weights_only=True``; ``trusted=True`` also reads a
    pickled one, which could run code), or a ``(model, dataset)`` pair."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of items, 1 or more; got {k!r}")
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        from .quick_start import load_data_and_model

        _, model, dataset, *_ = load_data_and_model(Path(model_or_checkpoint), trusted=trusted)
    else:
        model, dataset = model_or_checkpoint
    titles = _titles(dataset)
    ids = resolve_session(session, dataset, titles)
    if not ids:
        raise ValueError("the session is empty: give at least one item id or title")
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(session_interaction(model, dataset, ids).to(model.device))
    scores = scores.reshape(-1).detach().cpu().float().clone()
    scores[0] = -torch.inf
    scores[torch.as_tensor(ids)] = -torch.inf
    k = min(int(k), int(torch.isfinite(scores).sum()))
    top = scores.topk(k)
    tokens = dataset.field2id_token[dataset.iid_field]
    return [Recommendation(rank + 1, str(tokens[i]), titles[i], float(s))
            for rank, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]


def build_fitted_model(model_name: str, dataset_name: str, config_file_list=None, config_dict=None):
    """A model that needs no training (LLMSeqSim, the kNN family, Pop, hybrids over a checkpoint),
    fitted on the training sessions of the paper preset; returns (model, dataset)."""
    from . import pipeline
    from .registry import fits_in_one_pass

    def learns_in_one_pass(config) -> None:
        if not fits_in_one_pass(config):
            raise ValueError(
                f"{model_name} learns by training: train it first (python run_recbole_llm.py --model={model_name} "
                f"--dataset={dataset_name}) and pass the checkpoint it saves (--checkpoint saved/{model_name}-....pth)."
            )

    settings = {"show_progress": False, "state": "ERROR", **(config_dict or {})}
    run = pipeline.load_data(model_name, dataset_name, config_file_list, settings, check=learns_in_one_pass)
    counts_in_one_pass = run.config["MODEL_TYPE"].name != "SEQUENTIAL"  # Pop / MostPopular
    run = pipeline.build_model(run, with_trainer=counts_in_one_pass)
    if counts_in_one_pass:
        run.trainer._train_epoch(run.train_data, 0)
    return run.model, run.dataset
