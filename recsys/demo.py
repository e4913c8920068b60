"""The end of `make demo`: where the report and the table are, and one user's top 10 with titles
and reasons.

The rows are read back from the warehouse table with `recsys sql`, as a consumer would read
them; the titles come from the bundled MovieLens `u.item`.

    python -m recsys.demo --conf conf/movielens.yaml --ds 2026-11-25 [--user 196]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recsys.config import load_config, resolve_data_path
from recsys.storage import resolve_root


def titles() -> dict[str, str]:
    path = resolve_data_path("package:ml-100k/u.item")
    with open(path, encoding="latin-1") as fh:
        return {line.split("|")[0]: line.split("|")[1] for line in fh if line.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", required=True)
    ap.add_argument("--ds", required=True)
    ap.add_argument("--user", default="196")
    args = ap.parse_args(argv)
    cfg = load_config(args.conf)
    root = resolve_root(cfg.paths.root)
    table = cfg.score.table
    query = (f"SELECT item_id, rank, score, source, model_version, reason, because_item_id FROM {table} "
             f"WHERE ds = '{args.ds}' AND user_id = '{args.user}' AND rank <= 10 ORDER BY rank")
    recsys = Path(sys.executable).with_name("recsys")
    out = subprocess.run([str(recsys), "sql", "--conf", args.conf, query],
                         capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    names = titles()
    print(f"\nreport: {root}/reports/{args.ds}/index.html")
    print(f"table:  {table} (partition ds={args.ds}); read it with:")
    print(f"        recsys sql --conf {args.conf} \"SELECT * FROM {table} WHERE ds='{args.ds}' LIMIT 10\"")
    if not rows:
        print(f"no recommendations for user {args.user} in ds={args.ds}")
        return 1
    print(f"\ntop 10 for user {args.user} ({rows[0]['source']}, model {rows[0]['model_version']}):")
    for r in rows:
        why, like = r.get("reason") or "", r.get("because_item_id")
        like = names.get(like, like)
        if why == "similar_to_history":
            why = f"because you watched {like}"
        elif why == "new_item" and like:
            why = f"new, like {like}"
        print(f"  {r['rank']:>2}. {names.get(r['item_id'], r['item_id'])}  ({r['score']:.3f}; {why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
