"""Writes recsys/data/ml-100k/movies.tsv from u.item: the catalogue as many teams ship one.

item_id, title, genres ("Action|Comedy", one delimited column instead of 19 flag columns),
release_date. The demo (conf/movielens.yaml) reads the titles as free text and the genres as a
multi-valued column through it. Run once; the output is committed beside u.item.

    python tools/derive_movies.py
"""
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parent.parent / "recsys" / "data" / "ml-100k"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]

items = pd.read_csv(DATA / "u.item", sep="|", encoding="ISO-8859-1", header=None,
                    names=["item_id", "title", "release_date", "video", "url", *GENRES])
genres = items[GENRES].apply(lambda row: "|".join(g for g in GENRES if row[g] == 1), axis=1)
out = pd.DataFrame({"item_id": items["item_id"], "title": items["title"], "genres": genres,
                    "release_date": items["release_date"].fillna("")})
out.to_csv(DATA / "movies.tsv", sep="\t", index=False, encoding="utf-8")
print(f"{len(out)} movies -> {DATA / 'movies.tsv'}")
