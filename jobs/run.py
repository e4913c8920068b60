"""Run: the whole night for one ds (prepare, train, evaluate, score), resuming where a failed night stopped.

    spark-submit jobs/run.py --conf conf/movielens.yaml --ds 2026-11-25 [--force]
    python jobs/run.py --conf conf/movielens.yaml --ds 2026-11-25   # starts local Spark
    recsys run --conf conf/movielens.yaml --ds 2026-11-25

On a cluster, with the environment packed by `make dist` (see the README for YARN and Kubernetes):

    spark-submit --master spark://HOST:7077 \\
        --archives dist/recsys-env.tar.gz#environment \\
        --conf spark.pyspark.python=./environment/bin/python \\
        --executor-memory 4g \\
        dist/jobs/run.py --conf dist/conf/cluster.yaml --ds 2026-11-25 --set spark.shuffle_partitions=400
"""
import sys

from recsys.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
