"""`recsys <step> --conf FILE --ds YYYY-MM-DD [--set k=v ...]`: one entry point for every job.

The files in jobs/ call `main` with their step name, so `spark-submit jobs/prepare.py ...`,
`python jobs/prepare.py ...` and `recsys prepare ...` run the same code. Errors a user can cause
end with a one-line message on stderr, exit status 2, and a JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from datetime import date

from recsys.config import load_config
from recsys.errors import ConfigError, RecsysError
DS_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _ds(text: str) -> str:
    if not DS_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"--ds must be YYYY-MM-DD, got {text!r}")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ds is not a real date: {text!r}") from None
    return text


def _job_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--conf", required=True, help="YAML config (default.yaml beside it is read first)")
    p.add_argument("--ds", required=True, type=_ds, help="snapshot date, YYYY-MM-DD")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set prepare.split.method=leave_last")
    return p


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recsys", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    _job_parser(sub, "prepare", "clean and feature-engineer the interaction log into Parquet")
    train = _job_parser(sub, "train", "train a model with data-parallel PyTorch workers on Spark")
    train.add_argument("--model", help="one of sasrec, gru4rec, multvae, ease, als, mf, neumf, two_tower "
                                       "(default: train.model; unset: choose among train.candidates)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    score = _job_parser(sub, "score", "publish top-N recommendations per user to the table")
    score.add_argument("--model-version", help="artifact version (default: the latest)")
    score.add_argument("--force", action="store_true", help="publish even if the gate refuses")
    evaluate = _job_parser(sub, "evaluate", "the model against baselines on the validation split")
    evaluate.add_argument("--model", help="a model name, or blend (default: score.model, train.model, "
                                          "else the night's selection)")
    run = _job_parser(sub, "run", "the whole night: prepare, train, evaluate, score")
    run.add_argument("--force", action="store_true", help="publish even if the gate refuses")
    sql = sub.add_parser("sql", help="query the configured catalogue, print the rows")
    sql.add_argument("--conf", required=True)
    sql.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sql.add_argument("--format", choices=("json", "csv"), default="json")
    sql.add_argument("query")
    synth = sub.add_parser("synth", help="write a synthetic interaction log for scale tests")
    synth.add_argument("--events", type=int, required=True)
    synth.add_argument("--out", required=True)
    synth.add_argument("--users", type=int, default=None, help="distinct users (default events // 40)")
    synth.add_argument("--items", type=int, default=None, help="distinct items (default events // 400)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--corrupt-share", type=float, default=0.01)
    synth.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    return ap


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # py4j logs its shutdown after the summary; under spark-submit stderr joins stdout, and the
    # summary must stay the last line.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # Petastorm and pyarrow's legacy API warn on import; the pinned stack is deliberate.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _fail(step: str, ds: str | None, message: str, code: int) -> int:
    print(f"recsys {step}: error: {message}", file=sys.stderr)
    print(json.dumps({"step": step, "ds": ds, "status": "failed", "error": message}), flush=True)
    return code


def _print_rows(df, fmt: str) -> int:
    """Rows as JSON lines (one object a line) or CSV with a header, like beeline would."""
    import csv
    out = csv.writer(sys.stdout) if fmt == "csv" else None
    if out is not None:
        out.writerow(df.columns)
    for row in df.toLocalIterator():
        if out is None:
            print(json.dumps(row.asDict(recursive=True), default=str))
        else:
            out.writerow(list(row))
    sys.stdout.flush()
    return 0


def _job(args: argparse.Namespace, spark, cfg):
    """The step's library function; returns its manifest."""
    if args.step == "prepare":
        from recsys.prep.pipeline import prepare
        return prepare(spark, cfg, args.ds)
    if args.step == "train":
        from recsys.train.job import train
        return train(spark, cfg, args.ds, model=args.model, resume=args.resume)
    if args.step == "evaluate":
        from recsys.evaluation.job import evaluate
        return evaluate(spark, cfg, args.ds, model=args.model)
    if args.step == "score":
        from recsys.score.job import score
        return score(spark, cfg, args.ds, version=args.model_version, force=args.force)
    if args.step == "run":
        from recsys.nightly import run_nightly
        return run_nightly(spark, cfg, args.ds, force=args.force)
    raise ConfigError(f"unknown step {args.step}")  # pragma: no cover - argparse restricts the choices


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging()
    if args.step == "synth":
        from recsys.synth import SynthSpec, generate
        summary = generate(SynthSpec(events=args.events, users=args.users, items=args.items, seed=args.seed,
                                     corrupt_share=args.corrupt_share), args.out, fmt=args.format)
        print(json.dumps(summary, default=str), flush=True)
        return 0
    try:
        cfg = load_config(args.conf, args.overrides)
        from recsys.session import build_session
        if args.step == "sql":
            from pyspark.errors import AnalysisException, ParseException
            try:
                return _print_rows(build_session(cfg).sql(args.query), args.format)
            except (AnalysisException, ParseException) as exc:
                return _fail("sql", None, str(exc).strip().splitlines()[0], 2)
        from recsys.lease import held
        # One run per ds: taken before Spark starts, so a refused run costs nothing; `run` holds
        # it once for its four steps (they are called in this process, not through here).
        with held(cfg.paths.root, args.ds, args.step, cfg.lease):
            manifest = _job(args, build_session(cfg), cfg)
    except RecsysError as exc:
        return _fail(args.step, getattr(args, "ds", None), str(exc), 2)
    except Exception as exc:  # a bug or an infrastructure failure: the trace, then the summary
        logging.getLogger("recsys").exception("%s failed", args.step)
        return _fail(args.step, getattr(args, "ds", None), f"{type(exc).__name__}: {exc}", 1)
    from recsys.manifest import print_summary
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
