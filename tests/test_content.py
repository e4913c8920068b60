"""Side data as catalogues ship it (delimited values, free text, tag tables) and new items placed
by the content item encoder: vocabularies in Spark, fixed-length lists, two_tower end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.models import build_model
from recsys.models.content import SideFeatures, TextCNN, kept_ids
from recsys.models.features import FeatureTable
from recsys.prep import vocab
from recsys.prep.pipeline import prepare
from recsys.score.job import score
from recsys.snapshot import snapshot_path
from recsys.train.job import train

from conftest import NOW, make_config, write_csv

DS = "2026-11-24"


def test_values_and_words_become_fixed_length_ids_through_a_vocabulary(spark):
    df = spark.createDataFrame([("i1", "A|B", "The Big Sleep"), ("i2", "B| A |A", "big fish"),
                                ("i3", "A|C|D", None), ("i4", None, "Sleep, big!")],
                               "item_id string, genres string, title string")
    genres = df.select("item_id", vocab.split_values(F.col("genres"), "|").alias("genres"))
    words = vocab.vocabulary(genres, "genres", min_count=2, max_size=10)
    assert sorted((r.value, r.code) for r in words.collect()) == [("A", 2), ("B", 3)]  # 3 rows, 2 rows
    coded = {r.item_id: r.genres for r in vocab.encode(genres, "item_id", "genres", words, 3).collect()}
    assert coded == {"i1": [2, 3, 0], "i2": [3, 2, 0], "i3": [2, 1, 1], "i4": [0, 0, 0]}  # C, D unknown
    titles = df.select("item_id", vocab.tokens(F.col("title")).alias("title"))
    assert {r.item_id: r.title for r in titles.collect()}["i4"] == ["sleep", "big"]
    top = vocab.vocabulary(titles, "title", min_count=1, max_size=2)  # the two most frequent
    assert sorted(r.value for r in top.collect()) == ["big", "sleep"]
    tags = spark.createDataFrame([("u1", "i1", "Noir"), ("u2", "i1", "noir "), ("u3", "i1", "classic"),
                                  ("u1", "i2", "fish"), ("u1", "i1", "")], "user string, item string, tag string")
    per_item = {r.item_id: r.tags for r in vocab.top_tags(tags, "item", "tag", "item_id", 2).collect()}
    assert per_item == {"i1": ["noir", "classic"], "i2": ["fish"]}


def test_text_cnn_ignores_padding_and_reads_word_order():
    torch.manual_seed(0)
    cnn = TextCNN(10)
    a = cnn(torch.tensor([[2, 3, 4, 0, 0]]))
    torch.testing.assert_close(a, cnn(torch.tensor([[2, 3, 4, 0, 0, 0, 0]])))  # more padding: the same
    assert not torch.equal(a, cnn(torch.tensor([[4, 3, 2, 0, 0]])))  # another order: another vector
    assert torch.equal(cnn(torch.tensor([[0, 0, 0]])), torch.zeros(1, 32))


def test_a_sequence_models_items_read_their_content_and_new_ones_read_nothing_else():
    torch.manual_seed(0)
    n = 6
    items = FeatureTable(categorical=torch.tensor([[1], [2], [1], [2], [1], [2]]), cardinalities=[3],
                         numeric=torch.randn(n, 2), multi_hot=torch.zeros(n, 0),
                         history=torch.tensor([True, True, True, True, False, False]), activity=1,
                         lists=[torch.tensor([[2, 3], [4, 0], [2, 0], [5, 3], [2, 3], [0, 0]])],
                         list_specs=[{"name": "title", "kind": "text", "cardinality": 6, "length": 2}])
    spec = {"model": "gru4rec", "n_items": n, "dim": 8, "max_len": 4, "blocks": 1, "dropout": 0.0,
            "id_dropout": 0.5, "item_features": items.shapes()}
    model = build_model(spec, None, items).eval()
    before = model.item_vectors(torch.arange(n))
    with torch.no_grad():
        model.item.weight.add_(1.0)  # every id row moves: only items with history follow
    after = model.item_vectors(torch.arange(n))
    assert not torch.equal(before[:4], after[:4]) and torch.equal(before[4:], after[4:])
    assert torch.equal(model.embed(torch.tensor([n])), torch.zeros(1, 8))  # the padding item
    # The side table is saved with the weights: the scoring job's copy needs no feature files.
    loaded = build_model(spec).eval()
    loaded.load_state_dict(model.state_dict())
    seq = torch.tensor([[-1, 0, 2, 4]])
    torch.testing.assert_close(loaded.score_histories(seq), model.score_histories(seq))


def test_an_id_without_history_reads_its_count_as_zero_and_what_it_lacks_as_the_mean():
    """Standardised activity columns (count, recency) then a side attribute: a new item keeps its
    count (the lowest: it has no interactions, so it ranks as the unpopular item it is) and
    reads the recency it does not have as the mean (0); so does a trained item whose id is
    dropped in training, except that its count is its own."""
    numeric = torch.tensor([[1.5, 2.0, 0.3], [0.5, -0.7, 0.3], [-2.0, 0.9, 0.1]])
    items = FeatureTable(categorical=torch.zeros(3, 0, dtype=torch.long), cardinalities=[], numeric=numeric,
                         multi_hot=torch.zeros(3, 0), history=torch.tensor([True, True, False]), activity=2)
    side = SideFeatures(items)
    ids = torch.arange(3)
    torch.testing.assert_close(side(ids, kept_ids(items.history, 0.0, False)),
                               torch.tensor([[1.5, 2.0, 0.3], [0.5, -0.7, 0.3], [-2.0, 0.0, 0.1]]))
    dropped = torch.zeros(3, 1)  # id dropout drew every row
    torch.testing.assert_close(side(ids, dropped), torch.tensor([[1.5, 0.0, 0.3], [0.5, 0.0, 0.3], [-2.0, 0.0, 0.1]]))


N_USERS = 24


@pytest.fixture(scope="module")
def catalogue(spark, tmp_path_factory):
    """Two taste groups over 20 items whose titles and genres say which group they belong to,
    and 4 new items in the catalogue that nobody has interacted with yet."""
    root = tmp_path_factory.mktemp("content")
    rows = [f"u{u},i{(u // 12) * 10 + (u + j) % 10},{1000 + 10 * j + u}" for u in range(N_USERS) for j in range(7)]
    log = write_csv(root / "log.csv", "user_id,item_id,ts", rows)
    words = {0: ("space laser robot", "SciFi|Action"), 1: ("love letter wedding", "Romance|Drama")}
    items = [f"i{i},{words[i // 10][0]} {i},{words[i // 10][1]}" for i in range(20)]
    items += ["n0,robot laser war,SciFi|Action", "n1,space robot,Action|SciFi",
              "n2,wedding love,Drama|Romance", "n3,letter love story,Romance"]
    side = write_csv(root / "items.csv", "item_id,title,genres", items)
    tags = write_csv(root / "tags.csv", "user,movie,tag", [f"u{u},{i},{t}" for u, i, t in
                     [(0, "i0", "future"), (1, "i0", "future"), (2, "i0", "robots"), (3, "n0", "future")]])
    overrides = [
        "input.format=csv", f"input.path={log}", "dataset=toy", "prepare.min_user_interactions=1",
        "prepare.min_item_interactions=1", "prepare.split.method=leave_last", "prepare.split.valid_n=1",
        "prepare.min_row_groups=2", "train.per_model={}", "train.num_processes=2", "train.batch_size=16",
        "train.dim=16", "train.hidden=[32, 16]", "train.lr=0.02", "train.epochs=30", "train.patience=100",
        "train.dropout=0.0", "train.id_dropout=0.5", "train.refit=false", "train.model=two_tower", "train.min_epochs=20",
        "score.top_n=5", "score.gate.enabled=false",
        f"items={{path: {side}, format: csv, key: item_id, text: [title], multi_valued: {{genres: '|'}}, "
        f"min_count: 1, tags: {{path: {tags}, format: csv, item: movie, tag: tag}}}}"]
    # min_epochs: one validation item per user picks an epoch by chance; the first ones are
    # before the towers have learnt the two kinds.
    cfg = make_config(root, *overrides)
    prepare(spark, cfg, DS, now=NOW)
    train(spark, cfg, DS, model="two_tower")
    return root, overrides


def assert_own_kind_first(new):
    """The content encoder puts each group's own new items first: sci-fi for users 0-11."""
    group = new["user_id"].str[1:].astype(int) // 12
    own = np.where(group == 0, new["item_id"].isin(["n0", "n1"]), new["item_id"].isin(["n2", "n3"]))
    assert own.mean() >= 0.9, f"{own.mean():.0%} of the new items shown are of the user's own kind"


def published(spark, table):
    return spark.sql(f"SELECT * FROM {table} WHERE ds = '{DS}'").toPandas()


def test_new_items_are_blocked_unless_asked_for_then_placed_by_their_content(spark, catalogue):
    root, overrides = catalogue
    items = spark.read.parquet(f"{snapshot_path(str(root), 'toy', DS)}/{S.ITEMS}").toPandas()
    assert len(items) == 24 and (items["popularity"] == 0).sum() == 4
    assert {len(x) for x in items["title"]} == {16} and {len(x) for x in items["genres"]} == {8}
    tagged = items.set_index(S.ITEM_IDX)["tags"]
    assert sum(t > 0 for t in tagged.loc[0]) == 2 and {len(x) for x in tagged} == {8}  # i0: future, robots

    cfg = make_config(root, *overrides, "score.table=test.content_off")
    m = score(spark, cfg, DS)
    off = published(spark, "test.content_off")
    assert not off["item_id"].str.startswith("n").any()  # never interacted with: not recommended
    assert m["counts"]["new_items"] == {"in_catalogue": 4, "recommendable": False, "reserved_slots": 0}

    cfg = make_config(root, *overrides, "score.table=test.content_on", "score.new_items=true",
                      "score.new_item_share=0.4")
    score(spark, cfg, DS)
    on = published(spark, "test.content_on")
    new = on[on["item_id"].str.startswith("n")]
    assert (new.groupby("user_id").size() == 2).all() and new["user_id"].nunique() == N_USERS
    assert_own_kind_first(new)


def test_a_sequence_model_with_item_content_places_new_items(spark, catalogue):
    root, overrides = catalogue
    cfg = make_config(root, *overrides, "train.item_content=true", "train.max_len=8",
                      "train.history_batch_size=4", "score.table=test.content_gru",
                      "score.new_items=true", "score.new_item_share=0.4")
    m = train(spark, cfg, DS, model="gru4rec")
    assert m["counts"]["epochs"] >= 1
    score(spark, cfg, DS)
    on = published(spark, "test.content_gru")
    new = on[on["item_id"].str.startswith("n")]
    assert (new.groupby("user_id").size() == 2).all() and new["user_id"].nunique() == N_USERS
    assert_own_kind_first(new)
