"""A stage is declared once: importing the city brain registers its agents and connects to nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_runtime_does_not_import_the_domains():
    for path in sorted((ROOT / "streams").rglob("*.py")):  # the runtime and its tools
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n == "agents" or n.startswith("agents.")], f"{path.name} imports {names}"


def test_importing_every_stage_builds_no_runtime_object():
    probe = """
import gc
import redis.asyncio
import agents.cli
from agents.webhooks import Courier
from streams import runtime
from streams.app import app
assert runtime.live.cache_info().currsize == 0, "the runtime was built at import"
built = [o for o in gc.get_objects() if isinstance(o, (redis.asyncio.Redis, Courier))]
assert not built, built
assert len(set(runtime.declared)) == len(runtime.declared) == 18, runtime.declared
names = {a.name.rsplit(".", 1)[-1] for a in app.agents.values()}
assert names == {c.name for c in runtime.declared}, names  # one name for a stage and its agent
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
