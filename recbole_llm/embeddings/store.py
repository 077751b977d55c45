"""Item embeddings as RecBole atomic feature files, and the table models read.

Data flows one way: catalog text -> provider (cached) -> reducer -> a file
``<dataset>.itememb_<provider>_<model>_<reduction>_<dim>`` (``iid:token``,
``item_emb:float_seq``) with a ``.json`` sidecar saying how it was made. RecBole
can load the file itself (``additional_feat_suffix`` + ``preload_weight``); our
models read it with :func:`item_embedding_table`, aligned to RecBole's internal
item ids and checked against the catalog.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.catalog import item_classes, item_texts, read_catalog
from ..data.datasets import artifact_dir, dataset_dir, recbole_builtin_path
from ..errors import MissingFileError, SettingError
from ..settings import config_value
from .cache import EmbeddingCache
from .embed import embed_texts
from .providers import DEFAULT_MODELS, make_provider
from .reduction import REDUCTIONS, make_reducer

PROVIDERS = ("local", "openai", "vertex", "file")

logger = logging.getLogger(__name__)


class EmbeddingMismatchError(SettingError):
    """An embedding file that does not fit the catalog or the model."""


@dataclass(frozen=True)
class EmbeddingSpec:
    provider: str = "local"
    model: str | None = None
    reduction: str = "none"
    dim: int | None = None
    text_fields: tuple = ("title",)
    template: str | None = None
    class_field: str = "class"
    seed: int = 42
    empty_text: str = "unknown item"
    normalize: bool = False  # L2-normalise rows after reduction (the original DimReducer's normalize=True)
    options: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.provider not in PROVIDERS:
            raise SettingError(f"embedding_provider must be one of {', '.join(PROVIDERS)}; got {self.provider!r}")
        if self.reduction not in REDUCTIONS + (None, "None"):
            raise SettingError(f"embedding_reduction must be one of {', '.join(REDUCTIONS)}; got {self.reduction!r}")
        if self.reduction not in (None, "none", "None") and self.dim is not None and int(self.dim) < 1:
            raise SettingError(f"embedding_dim must be a positive integer; got {self.dim!r}")
        if self.provider == "file" and not self.model:
            raise SettingError("embedding_provider: file needs embedding_model: the path of the embedding file")
        object.__setattr__(self, "model", self.model or DEFAULT_MODELS.get(self.provider))
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        if self.reduction in (None, "none", "None"):
            object.__setattr__(self, "reduction", "none")
            object.__setattr__(self, "dim", None)  # the provider's own size

    @classmethod
    def from_config(cls, config, dim: int | None = None) -> "EmbeddingSpec":
        """Read ``embedding_*`` keys; ``dim`` is the size the model needs (None: any)."""
        get = lambda key, default=None: config_value(config, key, default)  # noqa: E731
        requested = get("embedding_dim")
        if dim is not None and requested is not None and int(requested) != dim:
            raise EmbeddingMismatchError(
                f"embedding_dim={requested} but the model's item embedding size is {dim}; "
                "drop embedding_dim (it follows the model) or change the model's size."
            )
        reduction = get("embedding_reduction", "none")
        target = dim if dim is not None else requested
        options = {
            "base_url": get("openai_base_url"),
            "max_retries": get("embedding_max_retries", 3),
            "timeout": get("embedding_timeout", 30.0),  # seconds per request (OpenAI)
            "project": get("vertex_project"),
            "location": get("vertex_location"),
            "api_endpoint": get("vertex_api_endpoint"),
            "max_cost_usd": get("embedding_max_cost_usd", 1.0),
            "confirm_cost": bool(get("embedding_confirm_cost", False)),
            "cache_path": get("embedding_cache_path"),
            "show_progress": bool(get("show_progress", True)),
            "id_map": get("embedding_id_map"),
            "batch_api": get("embedding_batch_api", "auto"),
            "batch_min_texts": get("embedding_batch_min_texts", 10_000),
            "batch_poll_seconds": get("embedding_batch_poll_seconds", 30.0),
        }
        return cls(
            provider=get("embedding_provider", "local"),
            model=get("embedding_model"),
            reduction=reduction,
            dim=None if target is None else int(target),
            text_fields=tuple(get("embedding_text_fields", ["title"])),
            template=get("embedding_text_template"),
            class_field=get("embedding_class_field", "class"),
            seed=int(get("embedding_seed", 42)),
            empty_text=get("embedding_empty_text", "unknown item"),
            normalize=bool(get("embedding_normalize", False)),
            options=options,
        )

    @property
    def suffix(self) -> str:
        model = re.sub(r"[^a-z0-9]+", "-", Path(str(self.model)).name.lower()).strip("-")
        dim = "full" if self.reduction == "none" else str(self.dim)
        return f"itememb_{self.provider}_{model}_{self.reduction}_{dim}" + ("_l2" if self.normalize else "")

    def describe(self) -> str:
        """The recipe in one phrase, for the run log."""
        size = "" if self.reduction == "none" else f" {self.dim}"
        return (f"{self.provider}/{Path(str(self.model)).name} -> {self.reduction}{size}"
                + (" + L2" if self.normalize else ""))

    def recipe(self) -> dict:
        recipe = asdict(self)
        recipe.pop("options")
        recipe["text_fields"] = list(self.text_fields)
        if self.provider == "file":  # the external file's identity: another file under the same name rebuilds
            path = Path(str(self.model))
            recipe["source"] = {"path": str(path.resolve()), "bytes": path.stat().st_size if path.exists() else None,
                                "id_map": self.options.get("id_map")}
        return recipe


def write_itememb(path: Path, ids, vectors: np.ndarray, recipe: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent builders never share a temp file
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("iid:token\titem_emb:float_seq\n")
        for item, vector in zip(ids, vectors):
            f.write(f"{item}\t{' '.join(f'{x:.7g}' for x in vector)}\n")
    os.replace(tmp, path)
    # "dim" stays the recipe's (what was asked, e.g. PCA 512); "size" is what was made (384 when capped)
    sidecar = dict(recipe, items=len(ids), size=int(vectors.shape[1]), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar, indent=2))


def read_itememb(path: os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Ids and vectors of an ``.itememb`` file, checked: one row per item, rows of one
    length, finite values (a NaN would otherwise reach training or scores silently)."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    ids = frame.iloc[:, 0].to_numpy()
    rows = [np.array(v.split(), dtype=np.float32) for v in frame.iloc[:, 1]]
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        short = next(i for i, r in zip(ids, rows) if len(r) != max(lengths))
        raise EmbeddingMismatchError(f"{path}: rows have different lengths {lengths[:4]} (e.g. item {short}); "
                                     "rebuild it with `python -m recbole_llm embed --force`")
    vectors = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise EmbeddingMismatchError(f"{path}: {int(bad.sum())} rows hold NaN or inf (e.g. item {ids[bad][0]})")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise EmbeddingMismatchError(f"{path}: item ids repeated (e.g. {unique[counts > 1][0]}): one row per item")
    return ids, vectors


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero (as the original: norm 0 -> 1)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def text_embedder(spec: EmbeddingSpec, show_progress: bool | None = None):
    """texts -> vectors with ``spec``'s provider and its options (endpoint, retries, timeout), through the cache
    and the cost gate: the one way texts reach an embedding provider (item files, LLMSeqPrompt's mapping of
    generated titles)."""
    options = dict(spec.options)
    cache = EmbeddingCache(options.pop("cache_path", None))
    gate = {k: options.pop(k) for k in ("max_cost_usd", "confirm_cost", "show_progress", "batch_api",
                                        "batch_min_texts", "batch_poll_seconds") if k in options}
    if show_progress is not None:
        gate["show_progress"] = show_progress
    options.pop("id_map", None)
    provider = make_provider(spec.provider, spec.model, **{k: v for k, v in options.items() if v is not None})
    return lambda texts: embed_texts(provider, texts, cache, **gate)


def made_for(path: Path, spec: EmbeddingSpec, extra: dict | None = None) -> bool:
    """Whether ``path`` exists and its sidecar says it was made by ``spec``'s recipe (and ``extra``)."""
    sidecar = path.with_name(path.name + ".json")
    if not (path.exists() and sidecar.exists()):
        return False
    made = json.loads(sidecar.read_text())
    expected = {**spec.recipe(), **(extra or {})}
    return {k: made.get(k) for k in expected} == expected


def class_digest(labels: np.ndarray) -> dict:
    """What an LDA file was supervised by: the number of classes and a hash of the labels in catalog order,
    so a dataset whose classes change rebuilds its LDA files instead of reusing them."""
    digest = hashlib.sha256("\n".join(map(str, labels)).encode()).hexdigest()[:16]
    return {"classes": {"count": int(len(np.unique(labels))), "sha256": digest}}


def texts_digest(ids: list, texts: list[str]) -> str:
    """A digest of the catalog's item ids and the texts embedded for them (after the template): a file made from
    other titles is rebuilt, not reused."""
    digest = hashlib.sha256()
    for item, text in zip(ids, texts):
        digest.update(f"{item}\x1f{text}\x1e".encode())
    return digest.hexdigest()[:16]


def build_item_embeddings(name: str, spec: EmbeddingSpec, data_path: os.PathLike = "dataset",
                          exact_dim: bool = False) -> Path:
    """Compute (or reuse) the embedding file of dataset ``name`` for ``spec``: the only place a provider is
    called for item embeddings (from the prepare stage and ``python -m recbole_llm embed``). ``exact_dim``:
    a model table needs exactly ``spec.dim`` columns, so a size LDA cannot give is refused before any call."""
    out = artifact_dir(name, data_path) / f"{name}.{spec.suffix}"
    catalog = read_catalog(dataset_dir(name, data_path), name)
    labels = item_classes(catalog, spec) if spec.reduction == "lda" else None
    supervision = class_digest(labels) if labels is not None else {}
    if exact_dim and labels is not None and spec.dim > supervision["classes"]["count"] - 1:
        cap = supervision["classes"]["count"] - 1
        raise EmbeddingMismatchError(
            f"LDA gives at most classes - 1 = {cap} dimensions on {name} ({cap + 1} values of "
            f"'{spec.class_field}'), but the model's item table needs {spec.dim}: set its embedding size "
            f"(hidden_size; GRU4Rec: embedding_size) to at most {cap}, or use another embedding_reduction."
        )
    texts, empty = item_texts(catalog, spec)
    supervision["texts"] = texts_digest(catalog["item_id"].tolist(), texts)  # items and their texts as embedded
    if made_for(out, spec, supervision):
        logger.info("embeddings %s: reused %s", spec.describe(), out)
        return out
    sidecar = out.with_name(out.name + ".json")
    if sidecar.exists():
        logger.info("%s was made differently (its items, texts or recipe changed); rebuilding", out)
    started = time.perf_counter()
    if spec.provider == "file":  # embeddings made elsewhere (e.g. the paper's ada/PaLM files)
        from .external import read_external_embeddings

        vectors = read_external_embeddings(spec.model, catalog["item_id"].tolist(), spec.options.get("id_map"))
    else:
        vectors = text_embedder(spec)(texts)
    seconds = time.perf_counter() - started
    if spec.reduction != "none":
        if spec.dim is None:
            raise SettingError(f"reduction '{spec.reduction}' needs a target dimension (embedding_dim)")
        vectors = make_reducer(spec.reduction, spec.dim, random_state=spec.seed).fit_transform(vectors, labels)
    if spec.normalize:
        vectors = l2_normalize(vectors)
    recipe = dict(spec.recipe(), **supervision, empty_texts=empty, embed_seconds=round(seconds, 2))
    write_itememb(out, catalog["item_id"].to_numpy(), vectors, recipe)
    logger.info("embeddings %s: wrote %s (%d items x %d)", spec.describe(), out, len(catalog), vectors.shape[1])
    return out


def align_to_dataset(ids: np.ndarray, vectors: np.ndarray, dataset, source: str = "embedding file") -> torch.Tensor:
    """Rows ordered by RecBole's internal item id; row 0 (padding) is zero."""
    tokens = dataset.field2id_token[dataset.iid_field]
    index = {item: row for row, item in enumerate(ids)}
    missing = [str(t) for t in tokens[1:] if t not in index]
    if missing:
        raise EmbeddingMismatchError(
            f"{source} does not match the catalog: {len(missing)} of {len(tokens) - 1} items have no "
            f"embedding (e.g. {missing[:3]}). Rebuild it with `python -m recbole_llm embed`."
        )
    table = np.zeros((len(tokens), vectors.shape[1]), dtype=np.float32)
    table[1:] = vectors[[index[t] for t in tokens[1:]]]
    return torch.from_numpy(table)


def _data_root(config) -> Path:
    """The folder above the dataset's folder, where its embedding files go (never RecBole's site-packages)."""
    name, data_path = config["dataset"], Path(config["data_path"])
    builtin = recbole_builtin_path(name)
    if builtin is not None and data_path.resolve() == builtin.resolve():
        return Path(config_value(config, "embedding_data_path", "dataset"))
    return data_path.parent


def embedding_file(config, spec: EmbeddingSpec) -> tuple[Path, bool]:
    """Where the table a model reads lives: the user's ``embedding_file`` (made elsewhere, read as it is;
    second value True) or the file the prepare stage makes for ``spec``."""
    path = config_value(config, "embedding_file")
    if path is not None:
        return Path(path), True
    return artifact_dir(config["dataset"], _data_root(config)) / f"{config['dataset']}.{spec.suffix}", False


class EmbeddingsNotPrepared(MissingFileError):
    """A model was built before the prepare stage made the embedding file it reads."""


def prepare_item_embeddings(config, dim: int | None = None) -> Path:
    """The prepare stage's embedding step: make (or reuse) the file ``item_embedding_table`` will read."""
    spec = EmbeddingSpec.from_config(config, dim)
    path, external = embedding_file(config, spec)
    if external:
        return path
    return build_item_embeddings(config["dataset"], spec, _data_root(config), exact_dim=dim is not None)


def item_embedding_table(config, dataset, dim: int | None = None) -> torch.Tensor:
    """The (item_num, d) embedding table for ``dataset`` as configured, read from the file the prepare stage
    made (nothing is computed here). ``dim`` forces the reduced size."""
    spec = EmbeddingSpec.from_config(config, dim)
    path, external = embedding_file(config, spec)
    if not external and not made_for(path, spec):
        raise EmbeddingsNotPrepared(
            f"{path} is not made yet for {spec.describe()}: the prepare stage makes it before a model is built "
            "(recbole_llm.prepare.prepare(config, train_dataset); RecBole's data_preparation does it once "
            "recbole_llm is imported) or `python -m recbole_llm embed`."
        )
    ids, vectors = read_itememb(path)
    if dim is not None and vectors.shape[1] != dim:
        raise EmbeddingMismatchError(
            f"{path} has {vectors.shape[1]}-d embeddings but the model needs {dim}; set embedding_reduction "
            f"(pca, lda, autoencoder, random) or make the model's embedding size {vectors.shape[1]}."
        )
    return align_to_dataset(ids, vectors, dataset, source=str(path))


def catalog_titles(config, dataset) -> list[str]:
    """Item text by RecBole internal id (row 0: padding), built like the embeddings' text."""
    spec = EmbeddingSpec.from_config(config)
    name = config["dataset"]
    catalog = read_catalog(dataset_dir(name, Path(config["data_path"]).parent), name)
    by_id = dict(zip(catalog["item_id"], item_texts(catalog, spec)[0]))
    return [""] + [by_id.get(str(t), spec.empty_text) for t in dataset.field2id_token[dataset.iid_field][1:]]
