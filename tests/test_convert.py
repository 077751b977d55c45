import gzip
import json

import pandas as pd
import pytest

from recbole_llm.data.convert import clean_title, convert_amazon2014, convert_tables, p_core
from recbole_llm.data.datasets import DatasetNotFoundError, ensure_dataset


def _read(path):
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return frame


def test_amazon2014_raw_files(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    reviews = []
    for u in range(3):
        for i in range(3):
            reviews.append({"reviewerID": f"U{u}", "asin": f"A{i}", "overall": 5.0, "unixReviewTime": 100 + u + i})
    reviews.append({"reviewerID": "U9", "asin": "A9", "overall": 1.0, "unixReviewTime": 1})  # removed by 2-core
    with gzip.open(raw / "reviews_Beauty_5.json.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in reviews)
    meta = [
        {"asin": "A0", "title": "Rose &amp; Oud Perfume", "categories": [["Beauty", "Fragrance"]]},
        {"asin": "A1", "title": "Red  Lipstick\t", "categories": [["Beauty", "Makeup Lips"]]},
        {"asin": "A2", "categories": [["Beauty"]]},
    ]
    with gzip.open(raw / "meta_Beauty.json.gz", "wt") as f:
        f.writelines(repr(m) + "\n" for m in meta)  # the 2014 meta files are Python literals
    stats = convert_amazon2014(raw, "Beauty", tmp_path / "out", "beauty", core=2)
    assert stats == {"users": 3, "items": 3, "interactions": 9, "empty_titles": 1}
    items = _read(tmp_path / "out" / "beauty" / "beauty.item")
    assert list(items.columns) == ["item_id:token", "title:token_seq", "class:token"]
    assert items.iloc[0, 1] == "Rose and Oud Perfume"
    assert items.iloc[1, 1] == "Red Lipstick"
    assert items.iloc[1, 2] == "Beauty_Lips_Makeup"
    inter = _read(tmp_path / "out" / "beauty" / "beauty.inter")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]


def test_generic_tables_and_pcore(tmp_path):
    pd.DataFrame({"u": ["a", "a", "b", "b", "c"], "i": ["x", "y", "x", "y", "z"], "t": [1, 2, 3, 4, 5]}).to_csv(
        tmp_path / "inter.csv", index=False
    )
    pd.DataFrame({"i": ["x", "y", "z"], "name": ["X thing", "", "Z thing"], "cat": ["c1", "c2", "c1"]}).to_csv(
        tmp_path / "items.tsv", sep="\t", index=False
    )
    stats = convert_tables(tmp_path / "inter.csv", tmp_path / "items.tsv", tmp_path, "mine", user_col="u",
                           item_col="i", time_col="t", title_col="name", class_col="cat", core=2)
    assert stats == {"users": 2, "items": 2, "interactions": 4, "empty_titles": 1}
    with pytest.raises(ValueError, match="no column 'when'"):
        convert_tables(tmp_path / "inter.csv", tmp_path / "items.tsv", tmp_path, "m", user_col="u", item_col="i", time_col="when")


def test_p_core_is_iterative():
    inter = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "x"]})
    assert set(p_core(inter, 2)["user_id"]) == set()
    assert len(p_core(inter, 1)) == 4


def test_clean_title():
    assert clean_title("L&#39;Oreal &amp; Co  <b>") == "L'Oreal and Co b"


def test_missing_dataset_says_where(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="expected .*nope.inter"):
        ensure_dataset("nope", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="reviews_Beauty_5.json.gz(.|\n)*convert --paper_beauty"):
        ensure_dataset("beauty", tmp_path, download=False)


def test_the_papers_beauty_is_built_by_one_builder_that_records_its_source(tmp_path):
    import gzip
    import json

    import pandas as pd

    from recbole_llm.data.convert import built_from
    from recbole_llm.data.datasets import build_paper_beauty

    source = tmp_path / "amazon-beauty"
    (source / "joined").mkdir(parents=True)
    (source / "raw").mkdir()
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["A", "B", "A", "C"],
                          "timestamp": [1, 2, 1, 3]})
    items = pd.DataFrame({"item_id": ["A", "B", "C"], "title": ["Red Lipstick", "Shampoo", "Nail Polish"],
                          "p5_item_int": ["1", "2", "3"]})
    inter.to_csv(source / "joined" / "beauty_interactions.tsv.gz", sep="\t", index=False)
    items.to_csv(source / "joined" / "beauty_items.tsv.gz", sep="\t", index=False)
    with gzip.open(source / "raw" / "s3rec_Beauty_item2attributes.json.gz", "wt") as f:
        json.dump({"1": [7, 3, 4], "2": [3, 5]}, f)  # S3-Rec's order: the brand (7) first, then categories
    stats = build_paper_beauty(source, tmp_path / "dataset")
    assert stats["interactions"] == 4 and stats["items"] == 3
    item_file = (tmp_path / "dataset" / "beauty" / "beauty.item").read_text().splitlines()
    assert item_file[0] == "item_id:token\ttitle:token_seq\tclass:token"
    assert item_file[1].endswith("\t3_4"), "sorted category ids; the brand is not part of the class"
    assert item_file[2].endswith("\t3_5") and item_file[3].endswith("\t"), "no attributes: empty"
    assert built_from(tmp_path / "dataset" / "beauty")["builder"] == "tables"
    assert build_paper_beauty(source, tmp_path / "dataset") is None, "already built: kept"
    source_file = tmp_path / "dataset" / "beauty" / "SOURCE.json"
    made = json.loads(source_file.read_text())
    source_file.write_text(json.dumps({k: v for k, v in made.items() if k != "item_class"}))
    assert build_paper_beauty(source, tmp_path / "dataset")["items"] == 3, "classes made with brands: rebuilt"
    assert built_from(tmp_path / "dataset" / "beauty")["item_class"] == "s3rec-categories"
    (tmp_path / "dataset" / "beauty" / "SOURCE.json").write_text(json.dumps({"builder": "amazon2014"}))
    with pytest.raises(ValueError, match="another build of Beauty \\(amazon2014\\)"):
        build_paper_beauty(source, tmp_path / "dataset")
    assert build_paper_beauty(source, tmp_path / "dataset", force=True)["interactions"] == 4


def test_the_papers_beauty_is_built_from_the_command_line(tmp_path, capsys):
    import gzip
    import json

    import pandas as pd

    from recbole_llm.__main__ import main

    source = tmp_path / "amazon-beauty"
    (source / "joined").mkdir(parents=True)
    (source / "raw").mkdir()
    pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["A", "B", "A"], "timestamp": [1, 2, 1]}).to_csv(
        source / "joined" / "beauty_interactions.tsv.gz", sep="\t", index=False)
    pd.DataFrame({"item_id": ["A", "B"], "title": ["Lipstick", "Shampoo"], "p5_item_int": ["1", "2"]}).to_csv(
        source / "joined" / "beauty_items.tsv.gz", sep="\t", index=False)
    with gzip.open(source / "raw" / "s3rec_Beauty_item2attributes.json.gz", "wt") as f:
        json.dump({"1": [7, 3], "2": [3]}, f)
    data = str(tmp_path / "dataset")
    assert main(["convert", "--paper_beauty", str(source), "--data_path", data]) == 0
    assert "'interactions': 3" in capsys.readouterr().out
    assert (tmp_path / "dataset" / "beauty" / "beauty.inter").exists()
    assert main(["convert", "--paper_beauty", str(source), "--data_path", data]) == 0
    assert "already holds the paper's Beauty" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="drop --name shop"):
        main(["convert", "--paper_beauty", str(source), "--data_path", data, "--name", "shop"])
    with pytest.raises(SystemExit, match="needs --name"):
        main(["convert", "--interactions", "x.csv", "--items", "y.csv"])
    with pytest.raises(SystemExit, match="--core would be ignored"):
        main(["convert", "--paper_beauty", str(source), "--data_path", data, "--core", "5"])
    (tmp_path / "dataset" / "beauty" / "SOURCE.json").write_text(json.dumps({"builder": "amazon2014"}))
    assert main(["convert", "--paper_beauty", str(source), "--data_path", data]) == 2
    assert "another build of Beauty (amazon2014)" in capsys.readouterr().err
    assert main(["convert", "--paper_beauty", str(source), "--data_path", data, "--force"]) == 0


def test_iso_timestamps_text_columns_and_repeated_item_ids(tmp_path):
    from recbole_llm.data.catalog import read_catalog
    from recbole_llm.data.convert import convert_tables

    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,when\nu1,a,2014-03-01\nu1,b,2014-03-02T12:00:00Z\nu2,a,2014-03-03 08:00\n")
    items = tmp_path / "items.csv"
    items.write_text("item,name,brand,description\na,Red Lipstick,Acme,Matte and long lasting\nb,Shampoo,Bee,\n")
    stats = convert_tables(inter, items, tmp_path / "out", "mine", user_col="user", item_col="item", time_col="when",
                           title_col="name", text_cols=["brand", "description"])
    assert stats["interactions"] == 3
    rows = (tmp_path / "out" / "mine" / "mine.inter").read_text().splitlines()[1:]
    times = sorted(float(r.split("\t")[2]) for r in rows)
    assert times[0] == 1393632000.0 and times[1] == 1393632000.0 + 86400 + 43200  # seconds since 1970, UTC
    catalog = read_catalog(tmp_path / "out" / "mine", "mine")
    assert list(catalog.columns) == ["item_id", "title", "brand", "description"]
    assert catalog.set_index("item_id").loc["a", "brand"] == "Acme"
    inter.write_text("user,item,when\nu1,a,yesterday\n")
    with pytest.raises(ValueError, match=r"'yesterday' \(row 2 of the file\).*ISO 8601"):
        convert_tables(inter, items, tmp_path / "out", "mine", user_col="user", item_col="item", time_col="when",
                       title_col="name")
    inter.write_text("user,item,when\nu1,a,1\n")
    items.write_text("item,name\na,Red Lipstick\na,Other title\n")
    with pytest.raises(ValueError, match="item id 'a' appears more than once"):
        convert_tables(inter, items, tmp_path / "out", "mine", user_col="user", item_col="item", time_col="when",
                       title_col="name")
