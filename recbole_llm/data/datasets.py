"""Where datasets come from, and one clear message when one is missing."""
from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

from ..errors import MissingFileError, SettingError
from .convert import convert_amazon2014

logger = logging.getLogger(__name__)

AMAZON2014_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/{file}"
AMAZON_CATEGORIES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}


class DatasetNotFoundError(MissingFileError):
    pass


def recbole_builtin_path(name: str) -> Path | None:
    """RecBole ships ml-100k inside its wheel; Config always reads it from there."""
    import recbole

    folder = Path(recbole.__file__).parent / "dataset_example" / name
    return folder if (folder / f"{name}.inter").exists() else None


def dataset_dir(name: str, data_path: os.PathLike = "dataset") -> Path:
    """The folder holding ``name``'s atomic files (RecBole's built-in copy for ml-100k)."""
    return recbole_builtin_path(name) or Path(data_path) / name


def artifact_dir(name: str, data_path: os.PathLike = "dataset") -> Path:
    """A writable folder for files derived from ``name`` (embeddings, ...): the
    dataset folder itself, or ``<data_path>/<name>`` for RecBole's built-in sets."""
    folder = Path(data_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _download(url: str, target: Path) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)
    os.replace(tmp, target)


def recbole_download_url(name: str) -> str | None:
    """The address RecBole downloads ``name`` from (its ``properties/dataset/url.yaml``), if it knows one."""
    import recbole
    import yaml

    table = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    return (yaml.safe_load(table.read_text()) or {}).get(name) if table.is_file() else None


def recbole_download(name: str, url: str, folder: Path) -> Path:
    """RecBole's own download of a dataset it knows (its url helpers, as ``Dataset._download``), with one clear
    error when it cannot (no network, a refused prompt) instead of RecBole's exit."""
    import socket

    from recbole.utils.url import decide_download, download_url, extract_zip, rename_atomic_files

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # RecBole's urlopen has no timeout: a silent network would hang forever
    try:
        if not decide_download(url):  # RecBole asks before more than 1 GB
            raise OSError("the download was declined")
        folder.mkdir(parents=True, exist_ok=True)
        archive = download_url(url, str(folder))
        extract_zip(archive, str(folder))
        os.unlink(archive)
        rename_atomic_files(str(folder), os.path.splitext(os.path.basename(archive))[0], name)
    except (OSError, EOFError, RuntimeError) as error:
        socket.setdefaulttimeout(previous)
        raise DatasetNotFoundError(
            f"Dataset '{name}' is not in {folder} and RecBole could not download it from {url} ({error}). "
            f"Download that zip yourself and unpack its atomic files ({name}.inter, ...) into {folder}."
        ) from None
    socket.setdefaulttimeout(previous)
    if not (folder / f"{name}.inter").exists():
        raise DatasetNotFoundError(f"RecBole's download of '{name}' from {url} did not give {folder / (name + '.inter')}")
    return folder


def ensure_dataset(name: str, data_path: os.PathLike = "dataset", *, download: bool = True) -> Path:
    """Make sure ``name``'s atomic files exist, building Amazon categories from
    their raw files (downloading them when online). Raises one clear error otherwise."""
    folder = dataset_dir(name, data_path)
    if (folder / f"{name}.inter").exists():
        return folder
    category = AMAZON_CATEGORIES.get(name)
    url = recbole_download_url(name) if category is None else None
    if url is not None and download:
        return recbole_download(name, url, folder)
    if category is None:
        raise DatasetNotFoundError(
            f"Dataset '{name}' not found: expected {folder / (name + '.inter')}. "
            f"Build it from your own tables with `python -m recbole_llm convert --name {name} "
            "--interactions FILE --items FILE`, or pass --data_path pointing at the folder holding it."
        )
    raw = Path(data_path) / "raw"
    files = [f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"]
    have_ratings = (raw / f"ratings_{category}.csv").exists()
    if download and not all((raw / f).exists() for f in files) and not have_ratings:
        raw.mkdir(parents=True, exist_ok=True)
        try:
            for file in files:
                if not (raw / file).exists():
                    _download(AMAZON2014_URL.format(file=file), raw / file)
        except OSError as error:
            logger.info("download failed: %s", error)
    if not (raw / files[1]).exists() or not ((raw / files[0]).exists() or have_ratings):
        paper = (" The paper's own Beauty (its tables, staged as joined/ and raw/) is built with `python -m "
                 "recbole_llm convert --paper_beauty FOLDER`." if name == "beauty" else "")
        raise DatasetNotFoundError(
            f"Dataset '{name}' needs the Amazon 2014 files {files[0]} (or ratings_{category}.csv) and "
            f"{files[1]} in {raw.resolve()}; they could not be downloaded from "
            f"{AMAZON2014_URL.format(file='')}. Put them there and rerun.{paper}"
        )
    convert_amazon2014(raw, category, data_path, name)
    return folder


BEAUTY_ITEM_CLASS = "s3rec-categories"  # what the class column of the paper's Beauty build holds (SOURCE.json)


def s3rec_category_classes(attributes: dict[str, list[int]]) -> dict[str, str]:
    """Item class from S3-Rec's Beauty attributes: the item's sorted *category* ids joined by '_'.

    S3-Rec lists an item's brand first (when it has one), then its category paths without the main category
    (``get_attribute_Amazon`` in its ``data/data_process.py``; names are not published). A brand therefore never
    appears after the first place, and a category does (behind a brand) unless every item holding it is
    brandless. On Beauty this splits the 637 attributes into 435 brands and 202 categories, giving 225
    classes (13 of one item). With brands in the key there are 3,120 classes, 1,648 of one item: LDA's
    within-class scatter is then estimated from a handful of items per class and the reduction amplifies
    noise. The paper's classes are categories, and few: its ``class`` column counts up from 0 in file order
    and its last rows hold 168, 77, 14, 44, 11 (``beauty/attach_embeddings.ipynb``), and its LLM2BERT4Rec
    takes ``classes - 1`` dimensions from LDA."""
    later = {a for values in attributes.values() for a in values[1:]}
    brands = {values[0] for values in attributes.values() if values} - later
    return {item: "_".join(str(a) for a in sorted(set(values) - brands)) for item, values in attributes.items()}


def build_paper_beauty(source: os.PathLike, data_path: os.PathLike = "dataset", force: bool = False) -> dict | None:
    """The paper's Amazon Beauty as ``<data_path>/beauty``: the tables the paper's code read, staged as
    ``<source>/joined/beauty_{interactions,items}.tsv.gz`` (day timestamps, titles), with the item's
    categories from S3-Rec's attributes (``<source>/raw/s3rec_Beauty_item2attributes.json.gz``,
    ``s3rec_category_classes``) as the item class that LDA reduction is supervised by. Returns the counts,
    or None when the folder already holds this build; a build whose class column was made otherwise is
    rebuilt (only that column differs). A folder built by another builder (the Amazon 2014 route of
    ``ensure_dataset``) is refused unless ``force``: both would be called "beauty"."""
    import gzip
    import json

    import pandas as pd

    from .convert import built_from, convert_tables

    source, data_path = Path(source), Path(data_path)
    folder = data_path / "beauty"
    if (folder / "beauty.inter").exists() and not force:
        made = built_from(folder) or {}
        if made.get("builder") not in ("tables", None):  # None: a folder from before SOURCE.json
            raise SettingError(f"{folder} holds another build of Beauty ({made.get('builder')}); remove it or pass "
                             "force=True (`convert --paper_beauty FOLDER --force`) to replace it with the paper's")
        if made.get("item_class") == BEAUTY_ITEM_CLASS:
            return None
        logger.info("%s: item classes were made otherwise (%s); rebuilding with %s", folder,
                    made.get("item_class", "attributes with brands"), BEAUTY_ITEM_CLASS)
    joined = source / "joined"
    items = pd.read_csv(joined / "beauty_items.tsv.gz", sep="\t", keep_default_na=False, dtype=str)
    with gzip.open(source / "raw" / "s3rec_Beauty_item2attributes.json.gz", "rt") as f:
        classes = s3rec_category_classes(json.load(f))
    items["class"] = items["p5_item_int"].map(lambda i: classes.get(i, ""))
    data_path.mkdir(parents=True, exist_ok=True)
    tmp = data_path / "beauty_items_with_class.tsv"
    items.to_csv(tmp, sep="\t", index=False)
    try:
        return convert_tables(joined / "beauty_interactions.tsv.gz", tmp, data_path, "beauty", class_col="class",
                              source={"item_class": BEAUTY_ITEM_CLASS})
    finally:
        tmp.unlink()
