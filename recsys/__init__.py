"""recsys: a batch recommender on Spark (prepare -> train -> evaluate -> score)."""
