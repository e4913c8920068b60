"""Prepare: raw interaction log -> clean, indexed, split Parquet snapshot for one ds.

    spark-submit jobs/prepare.py --conf conf/movielens.yaml --ds 2026-11-25
    python jobs/prepare.py --conf conf/movielens.yaml --ds 2026-11-25   # starts local Spark
    recsys prepare --conf conf/movielens.yaml --ds 2026-11-25
"""
import sys

from recsys.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
