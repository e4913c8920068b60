"""Train: a prepared snapshot -> a versioned model artifact, with data-parallel PyTorch workers on Spark.

    spark-submit jobs/train.py --conf conf/movielens.yaml --ds 2026-11-25 [--model two_tower] [--resume]
    python jobs/train.py --conf conf/movielens.yaml --ds 2026-11-25   # starts local Spark
    recsys train --conf conf/movielens.yaml --ds 2026-11-25 [--model two_tower] [--resume]
"""
import sys

from recsys.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
