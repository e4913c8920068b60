"""Score: a model artifact -> top-N per user, published as partition ds of the recommendations table.

    spark-submit jobs/score.py --conf conf/movielens.yaml --ds 2026-11-25 [--model-version V]
    python jobs/score.py --conf conf/movielens.yaml --ds 2026-11-25   # starts local Spark
    recsys score --conf conf/movielens.yaml --ds 2026-11-25
"""
import sys

from recsys.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
