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

from .errors import MissingFileError, SettingError
from .prompts.mapping import normalise


@dataclass(frozen=True)
class Recommendation:
    rank: int
    item_id: str
    title: str
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


class UnknownItemError(SettingError):
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
    return sessions_interaction(dataset, [item_ids])


def sessions_interaction(dataset, sessions: list[list[int]]):
    """One batch holding every session (each cut to its last ``MAX_ITEM_LIST_LENGTH`` items), as RecBole's
    sequential (or general) models read it."""
    from recbole.data.interaction import Interaction

    config = dataset.config
    width = int(config["MAX_ITEM_LIST_LENGTH"] or max(len(s) for s in sessions))
    seq = torch.zeros(len(sessions), width, dtype=torch.long)
    lengths = torch.zeros(len(sessions), dtype=torch.long)
    for row, item_ids in enumerate(sessions):
        items = item_ids[-width:]
        seq[row, : len(items)] = torch.as_tensor(items)
        lengths[row] = len(items)
    return Interaction({
        config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: seq,
        config["ITEM_LIST_LENGTH_FIELD"]: lengths,
        config["USER_ID_FIELD"]: torch.zeros(len(sessions), dtype=torch.long),  # general models (Pop) score alike
    })


def _titles(dataset) -> list[str]:
    from .embeddings.store import catalog_titles

    try:
        return catalog_titles(dataset.config, dataset)
    except (FileNotFoundError, ValueError):  # no .item file or no title column: ids only
        return [""] * dataset.item_num


def recommend(model_or_checkpoint, session, k: int = 10, trusted: bool = False) -> list[Recommendation]:
    """The top ``k`` items for ``session`` (ids or titles), with titles and scores.
    ``model_or_checkpoint``: a checkpoint path (read with ``weights_only=True``; ``trusted=True`` also reads a
    pickled one, which could run code), or a ``(model, dataset)`` pair. ``recommend_many`` for one session."""
    if not list(session):
        raise SettingError("the session is empty: give at least one item id or title")
    top = recommend_many(model_or_checkpoint, {"session": list(session)}, k, trusted=trusted)
    return [Recommendation(int(r.rank), r.item_id, r.title, r.score) for r in top.itertuples(index=False)]


def _load(model_or_checkpoint, trusted: bool):
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        from .quick_start import load_data_and_model

        _, model, dataset, *_ = load_data_and_model(Path(model_or_checkpoint), trusted=trusted)
        return model, dataset
    return model_or_checkpoint


def recommend_many(model_or_checkpoint, sessions, k: int = 10, batch_size: int = 256, skip_unknown: bool = False,
                   trusted: bool = False):
    """Top ``k`` items for many sessions at once, as a DataFrame (session_id, rank, item_id, title, score).

    ``sessions``: a DataFrame in long form (``session_id``, ``item_id``, and ``timestamp`` when rows are not in
    order), a mapping session id -> items (ids or titles), or a path to such a table (.csv, .tsv) or to JSON lines
    (``{"session_id": ..., "items": [...]}``). Sessions are scored ``batch_size`` at a time. An entry that is
    neither an id nor a title fails the call (naming it), or with ``skip_unknown`` is left out of its session."""
    import pandas as pd

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SettingError(f"k must be a whole number of items, 1 or more; got {k!r}")
    sessions = read_sessions(sessions)
    model, dataset = _load(model_or_checkpoint, trusted)
    titles = _titles(dataset)
    resolved, dropped = {}, 0
    for session_id, entries in sessions.items():
        if skip_unknown:
            ids = []
            for entry in entries:
                try:
                    ids += resolve_session([entry], dataset, titles)
                except UnknownItemError:
                    dropped += 1
        else:
            ids = resolve_session(entries, dataset, titles)
        if not ids:
            raise SettingError(f"session {session_id!r} has no known item left")
        resolved[session_id] = ids
    tokens = dataset.field2id_token[dataset.iid_field]
    rows = []
    model.eval()
    names = list(resolved)
    for start in range(0, len(names), batch_size):
        chunk = names[start : start + batch_size]
        with torch.no_grad():
            scores = model.full_sort_predict(sessions_interaction(dataset, [resolved[n] for n in chunk]).to(
                model.device)).reshape(len(chunk), -1).detach().cpu().float().clone()
        scores[:, 0] = -torch.inf
        for row, name in enumerate(chunk):
            scores[row, torch.as_tensor(resolved[name])] = -torch.inf
        top = scores.topk(min(k, scores.shape[1] - 1), dim=1)
        for row, name in enumerate(chunk):
            for rank, (score, item) in enumerate(zip(top.values[row].tolist(), top.indices[row].tolist())):
                if score == -torch.inf:
                    break
                rows.append((name, rank + 1, str(tokens[item]), titles[item], float(score)))
    frame = pd.DataFrame(rows, columns=["session_id", "rank", "item_id", "title", "score"])
    frame.attrs["unknown_entries_skipped"] = dropped
    return frame


def item_table(model_or_checkpoint, trusted: bool = False):
    """A trained model's item vectors as (item ids, [n_items, d] array), padding (and BERT4Rec's mask row) left
    out: what an LLM2X model made of the LLM embeddings it started from. Models without an item table (kNN,
    LLMSeqSim) are refused: their vectors are the embedding file itself (``python -m recbole_llm embed``)."""
    model, dataset = _load(model_or_checkpoint, trusted)
    table = getattr(model, "item_embedding", None)
    if not isinstance(table, torch.nn.Embedding):
        raise SettingError(f"{type(model).__name__} has no trained item table (item_embedding); its item vectors are "
                         "the embedding file the prepare stage made (python -m recbole_llm embed)")
    tokens = dataset.field2id_token[dataset.iid_field]
    vectors = table.weight.detach().cpu().float().numpy()[1 : len(tokens)]
    return [str(t) for t in tokens[1:]], vectors


def read_sessions(sessions) -> dict:
    """session id -> its entries in order, from any of ``recommend_many``'s input forms."""
    import json

    import pandas as pd

    if isinstance(sessions, dict):
        return {key: [str(e) for e in value] for key, value in sessions.items()}
    if isinstance(sessions, (str, os.PathLike)):
        path = Path(sessions)
        if not path.is_file():
            raise MissingFileError(f"sessions file {path}: no such file")
        if path.suffix in (".jsonl", ".json"):
            out = {}
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                        out[str(record["session_id"])] = [str(e) for e in record["items"]]
                    except (ValueError, KeyError, TypeError):
                        raise SettingError(f"{path}, line {number}: expected {{\"session_id\": ..., \"items\": "
                                         "[...]}}") from None
            return out
        sessions = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".tab") else ",", dtype=str,
                               keep_default_na=False)
    frame = sessions
    missing = {"session_id", "item_id"} - set(frame.columns)
    if missing:
        raise SettingError(f"sessions table needs columns session_id and item_id (missing {sorted(missing)}; "
                         f"columns: {list(frame.columns)})")
    if "timestamp" in frame:
        frame = frame.assign(_t=pd.to_numeric(frame["timestamp"], errors="coerce")).sort_values(
            ["_t"], kind="stable")
    return {str(key): group["item_id"].astype(str).tolist() for key, group in frame.groupby("session_id", sort=False)}


def build_fitted_model(model_name: str, dataset_name: str, config_file_list=None, config_dict=None):
    """A model that needs no training (LLMSeqSim, the kNN family, Pop, hybrids over a checkpoint),
    fitted on the training sessions of the paper preset; returns (model, dataset)."""
    from . import pipeline
    from .registry import fits_in_one_pass

    def learns_in_one_pass(config) -> None:
        if not fits_in_one_pass(config):
            raise SettingError(
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
