"""The item catalog (``<dataset>.item``): item texts as the embeddings, prompts and titles read them."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MissingFileError, SettingError

logger = logging.getLogger(__name__)


def read_catalog(folder: os.PathLike, name: str) -> pd.DataFrame:
    """The ``.item`` atomic file as strings, columns named without their types."""
    path = Path(folder) / f"{name}.item"
    if not path.exists():
        raise MissingFileError(f"{path} does not exist: item texts are needed to compute embeddings")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SettingError(f"{path} is not UTF-8 (byte {error.start}): re-save it as UTF-8") from None
    frame.columns = [c.split(":")[0] for c in frame.columns]
    if "item_id" in frame:
        repeated = frame["item_id"][frame["item_id"].duplicated()]
        if len(repeated):
            raise SettingError(f"{path}: item ids repeated ({len(repeated)}, e.g. {repeated.iloc[0]!r}): one row per item")
    return frame


def item_texts(catalog: pd.DataFrame, spec) -> tuple[list[str], int]:
    """One text per item from the configured fields/template; empty texts get
    ``spec.empty_text``. Returns the texts and how many were empty."""
    missing = [f for f in spec.text_fields if f not in catalog]
    if missing:
        raise SettingError(f"item file has no column(s) {missing}; columns are {list(catalog)} (embedding_text_fields)")
    if spec.template:
        try:
            texts = [spec.template.format(**row) for row in catalog.to_dict("records")]
        except KeyError as error:
            raise SettingError(f"embedding_text_template {spec.template!r} names {{{error.args[0]}}}, which is not a "
                             f"column of the item file; its columns are {list(catalog)}") from None
        except (ValueError, IndexError) as error:
            raise SettingError(f"embedding_text_template {spec.template!r} is not a valid template ({error}): "
                             "name item columns in braces, e.g. '{title} ({class})'") from None
    else:
        texts = catalog[list(spec.text_fields)].agg(" | ".join, axis=1).tolist()
    texts = [" ".join(t.split()).strip(" |") for t in texts]
    empty = sum(1 for t in texts if not t)
    if empty:
        logger.warning("%d items have empty text; they are embedded as %r", empty, spec.empty_text)
    return [t or spec.empty_text for t in texts], empty


def item_classes(catalog: pd.DataFrame, spec) -> np.ndarray:
    """LDA labels: the item's sorted class keywords joined by '_' (as the paper)."""
    if spec.class_field not in catalog:
        raise SettingError(f"LDA needs an item class column '{spec.class_field}' (embedding_class_field)")
    return np.array(["_".join(sorted(str(v).split())) for v in catalog[spec.class_field]])
