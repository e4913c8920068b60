"""Evaluate: the model against popularity, ALS and EASE on the validation split, with an HTML report.

    spark-submit jobs/evaluate.py --conf conf/movielens.yaml --ds 2026-11-25 [--model two_tower]
    python jobs/evaluate.py --conf conf/movielens.yaml --ds 2026-11-25   # starts local Spark
    recsys evaluate --conf conf/movielens.yaml --ds 2026-11-25
"""
import sys

from recsys.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
