"""The stages are siblings: they meet only at the snapshot and the model artifact.

The rules of the README's layout section, read from the imports with `ast`:
- recsys/prep, recsys/train, recsys/evaluation and recsys/score never import one another;
- the leaf modules (everything else in recsys but the orchestrators cli.py and nightly.py,
  which run the stages in order) import no stage;
- recsys/models never imports pyspark; only recsys/train/reader.py imports petastorm;
- nothing in recsys imports jobs/.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

STAGES = ("prep", "train", "evaluation", "score")
ORCHESTRATORS = {"recsys.cli", "recsys.nightly"}
PETASTORM_READER = "recsys.train.reader"


def module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in it (function bodies too), as absolute names;
    `from a import b` counts as both `a` and `a.b` (b may be a module)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "recsys" and parts[1] in STAGES else None


def violations(package: Path) -> list[str]:
    """Each broken rule as `module imports name: why`, for the package at `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(package, path)
        own = stage_of(module)
        for name in sorted(imported(path, module)):
            target = stage_of(name)
            why = None
            if own and target and target != own:
                why = f"the {own} stage imports the {target} stage"
            elif own is None and target and module not in ORCHESTRATORS:
                why = f"a leaf module imports the {target} stage"
            elif module.startswith("recsys.models") and name.split(".")[0] == "pyspark":
                why = "models never import pyspark"
            elif name.split(".")[0] == "petastorm" and module != PETASTORM_READER:
                why = f"only {PETASTORM_READER} imports petastorm"
            elif name.split(".")[0] == "jobs":
                why = "recsys never imports jobs/"
            if why:
                found.append(f"{module} imports {name}: {why}")
    return found


def test_the_stages_meet_only_at_the_contracts():
    assert violations(REPO / "recsys") == []


def test_the_check_names_each_broken_rule(tmp_path):
    pkg = tmp_path / "recsys"
    files = {
        "__init__.py": "",
        "snapshot.py": "from recsys.score import job\n",
        "cli.py": "from recsys.train.job import train\n",  # an orchestrator may
        "prep/__init__.py": "",
        "prep/pipeline.py": "import recsys.train.loop\n",
        "train/__init__.py": "",
        "train/loop.py": "def f():\n    from ..evaluation import ranking\n",
        "train/reader.py": "from petastorm import make_batch_reader\n",
        "train/job.py": "from . import loop\nfrom recsys import snapshot\n",
        "evaluation/__init__.py": "", "score/__init__.py": "",
        "score/job.py": "import petastorm.reader\n",
        "models/__init__.py": "", "models/mf.py": "from pyspark.sql import DataFrame\n",
        "demo.py": "from jobs import run\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = violations(pkg)
    assert found == [
        "recsys.demo imports jobs: recsys never imports jobs/",
        "recsys.demo imports jobs.run: recsys never imports jobs/",
        "recsys.models.mf imports pyspark.sql: models never import pyspark",
        "recsys.models.mf imports pyspark.sql.DataFrame: models never import pyspark",
        "recsys.prep.pipeline imports recsys.train.loop: the prep stage imports the train stage",
        "recsys.score.job imports petastorm.reader: only recsys.train.reader imports petastorm",
        "recsys.snapshot imports recsys.score: a leaf module imports the score stage",
        "recsys.snapshot imports recsys.score.job: a leaf module imports the score stage",
        "recsys.train.loop imports recsys.evaluation: the train stage imports the evaluation stage",
        "recsys.train.loop imports recsys.evaluation.ranking: the train stage imports the evaluation stage",
    ]


def test_a_model_loads_without_spark():
    """What is served needs torch, not Spark: importing the models (and the snapshot readers
    they use) must not pull pyspark in, even indirectly."""
    code = ("import sys, recsys.models, recsys.snapshot; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'petastorm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
