"""Converters from the public raw formats to RecBole atomic files.

Output, under ``<out_dir>/<name>/``:
``<name>.inter`` (``user_id:token item_id:token timestamp:float``) and
``<name>.item`` (``item_id:token title:token_seq [class:token]``). Titles are
kept as whitespace-separated text so they stay readable and RecBole can still
load them as a token sequence.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import logging
import os
import re
from pathlib import Path

import pandas as pd

from ..errors import MissingFileError, SettingError

logger = logging.getLogger(__name__)

_SPECIAL = re.compile(r"[^\w\s\-\.,'/&+()%!]")
_SPACE = re.compile(r"\s+")


def clean_title(title: str) -> str:
    """The paper's light cleaning: unescape HTML, '&' -> ' and ', drop special
    characters, collapse whitespace."""
    title = html.unescape(str(title))
    title = title.replace("&", " and ")
    title = _SPECIAL.sub(" ", title)
    return _SPACE.sub(" ", title).strip()


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", str(text)).strip()


def p_core(inter: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively keep users and items with at least ``k`` interactions."""
    if k <= 1:
        return inter
    while True:
        user_ok = inter.groupby("user_id")["item_id"].transform("size") >= k
        item_ok = inter.groupby("item_id")["user_id"].transform("size") >= k
        keep = user_ok & item_ok
        if keep.all():
            return inter
        inter = inter[keep]


def write_atomic(
    inter: pd.DataFrame,
    items: pd.DataFrame,
    out_dir: os.PathLike,
    name: str,
    *,
    core: int = 0,
    clean_titles: bool = False,
    source: dict | None = None,
    text_cols: list[str] | None = None,
) -> dict:
    """Write ``.inter``/``.item`` for ``name``. ``inter`` needs user_id, item_id,
    timestamp; ``items`` needs item_id, title and optionally class. Returns counts. ``SOURCE.json`` beside
    them says which builder made the folder from what (``built_from``), so two builders never share one
    dataset name unnoticed."""
    inter = inter[["user_id", "item_id", "timestamp"]].copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)
    inter = inter.drop_duplicates(["user_id", "item_id"], keep="first")
    inter = p_core(inter, core)
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str)
    items = items.drop_duplicates("item_id")
    items = items[items["item_id"].isin(set(inter["item_id"]))]
    missing = set(inter["item_id"]) - set(items["item_id"])
    if missing:
        logger.warning("%d items have no metadata; they get an empty title", len(missing))
        items = pd.concat([items, pd.DataFrame({"item_id": sorted(missing), "title": ""})])
    items["title"] = items["title"].fillna("").map(clean_title if clean_titles else _one_line)
    text_cols = [c for c in (text_cols or []) if c not in ("item_id", "title", "class")]
    for column in text_cols:  # more item text (brand, description, categories) for embedding_text_template
        items[column] = items[column].fillna("").map(_one_line) if column in items else ""
    columns = ["item_id", "title"] + (["class"] if "class" in items else []) + text_cols
    items = items[columns].sort_values("item_id")
    if "class" in items:
        items["class"] = items["class"].fillna("").map(lambda c: _one_line(c).replace(" ", "_"))

    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    header_inter = ["user_id:token", "item_id:token", "timestamp:float"]
    header_item = (["item_id:token", "title:token_seq"] + (["class:token"] if "class" in items else [])
                   + [f"{c}:token_seq" for c in text_cols])
    _write_tsv(inter, header_inter, folder / f"{name}.inter")
    _write_tsv(items, header_item, folder / f"{name}.item")
    stats = {
        "users": int(inter["user_id"].nunique()),
        "items": int(inter["item_id"].nunique()),
        "interactions": int(len(inter)),
        "empty_titles": int((items["title"] == "").sum()),
    }
    (folder / "SOURCE.json").write_text(json.dumps({**(source or {}), "core": core, "clean_titles": clean_titles,
                                                    "stats": stats}, indent=2))
    logger.info("wrote %s: %s", folder, stats)
    return stats


def built_from(folder: os.PathLike) -> dict | None:
    """What ``write_atomic`` recorded about the dataset in ``folder`` (None for folders made otherwise)."""
    path = Path(folder) / "SOURCE.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_tsv(frame: pd.DataFrame, header: list[str], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        frame.to_csv(f, sep="\t", header=False, index=False)
    os.replace(tmp, path)


def read_table(path: os.PathLike) -> pd.DataFrame:
    """CSV or TSV, optionally gzipped, with a header row; empty strings stay strings."""
    path = str(path)
    sep = "\t" if ".tsv" in path or ".tab" in path else ","
    return pd.read_csv(path, sep=sep, keep_default_na=False, dtype=str)


def convert_tables(
    interactions: os.PathLike,
    items: os.PathLike,
    out_dir: os.PathLike,
    name: str,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    title_col: str = "title",
    class_col: str | None = None,
    text_cols: list[str] | None = None,
    core: int = 0,
    clean_titles: bool = False,
    source: dict | None = None,
) -> dict:
    """Generic pair of tables (interactions: user, item, timestamp; items: item,
    title[, class]) -> atomic files. ``source`` adds to what ``SOURCE.json`` records."""
    inter = read_table(interactions)
    for column in (user_col, item_col, time_col):
        if column not in inter:
            raise SettingError(f"{interactions}: no column '{column}' (columns: {list(inter)})")
    inter = inter.rename(columns={user_col: "user_id", item_col: "item_id", time_col: "timestamp"})
    inter["timestamp"] = parse_timestamps(inter["timestamp"], f"{interactions}, column '{time_col}'")
    meta = read_table(items)
    for column in (item_col, title_col, *(text_cols or [])):
        if column not in meta:
            raise SettingError(f"{items}: no column '{column}' (columns: {list(meta)})")
    repeated = meta[item_col][meta[item_col].duplicated()]
    if len(repeated):
        raise SettingError(f"{items}: item id {repeated.iloc[0]!r} appears more than once ({len(repeated)} repeated "
                         f"rows in column '{item_col}'): one row per item")
    renames = {item_col: "item_id", title_col: "title"}
    if class_col:
        renames[class_col] = "class"
    meta = meta.rename(columns=renames)
    return write_atomic(inter, meta, out_dir, name, core=core, clean_titles=clean_titles, text_cols=text_cols,
                        source={"builder": "tables", "interactions": str(interactions), "items": str(items),
                                **(source or {})})


def parse_timestamps(values: pd.Series, where: str) -> pd.Series:
    """Seconds as numbers, or dates and times in ISO 8601 (``2014-03-01``, ``2014-03-01T12:30:00Z``; without a
    zone read as UTC) turned into seconds since 1970; anything else is refused, naming the first bad value."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers
    dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    if dates.notna().all():
        return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    bad = values[numbers.isna() & dates.isna()]
    row = bad.index[0]
    raise SettingError(f"{where}: {bad.iloc[0]!r} (row {row + 2} of the file) is neither a number of seconds nor an "
                     "ISO 8601 date such as 2014-03-01 or 2014-03-01T12:30:00Z")


def _read_json_lines(path: os.PathLike):
    """Amazon 2014 files: strict JSON for reviews, Python literals for metadata."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield ast.literal_eval(line)


def category_class(categories) -> str:
    """The paper's item class: the item's sorted category keywords joined by '_'."""
    words = sorted({w for path in categories or [] for c in path for w in str(c).split()})
    return "_".join(words)


def convert_amazon2014(
    raw_dir: os.PathLike, category: str, out_dir: os.PathLike, name: str, *, core: int = 5, clean_titles: bool = True
) -> dict:
    """Amazon 2014 per-category files -> atomic files. Uses
    ``reviews_<Cat>_5.json.gz`` if present, else ``ratings_<Cat>.csv``, and
    ``meta_<Cat>.json.gz``."""
    raw_dir = Path(raw_dir)
    reviews = raw_dir / f"reviews_{category}_5.json.gz"
    ratings = raw_dir / f"ratings_{category}.csv"
    meta_path = raw_dir / f"meta_{category}.json.gz"
    if reviews.exists():
        rows = [(r["reviewerID"], r["asin"], r["unixReviewTime"]) for r in _read_json_lines(reviews)]
        inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    elif ratings.exists():
        inter = pd.read_csv(ratings, header=None, names=["user_id", "item_id", "rating", "timestamp"])
    else:
        raise MissingFileError(f"neither {reviews} nor {ratings} exists")
    if not meta_path.exists():
        raise MissingFileError(f"{meta_path} does not exist")
    meta = pd.DataFrame(
        [
            (m["asin"], m.get("title", ""), category_class(m.get("categories")))
            for m in _read_json_lines(meta_path)
        ],
        columns=["item_id", "title", "class"],
    )
    return write_atomic(inter, meta, out_dir, name, core=core, clean_titles=clean_titles,
                        source={"builder": "amazon2014", "category": category, "raw_dir": str(raw_dir)})
