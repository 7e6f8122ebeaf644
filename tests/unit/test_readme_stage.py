"""The README's worked example of a stage is real code: it runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from schemas.records import PointReport
from schemas.reference import CityMap
from streams.tools.harness import run_stage

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_stage() -> type:
    """The stage class the README declares, built from its code block (without declaring its agent
    in this process)."""
    section = README.read_text().split("### Writing a stage", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "runtime.stage(PointReportCountsStage)" in code
    namespace: dict = {}
    exec(code.replace("runtime.stage(PointReportCountsStage)", ""), namespace)  # noqa: S102  the README's own code
    return namespace["PointReportCountsStage"]


def test_the_readme_stage_counts_each_report_once_per_point_and_keeps_its_state():
    stage = readme_stage()
    t = 1_784_530_800.0
    reports = [PointReport("P1", "R1", t, 12.0), PointReport("P1", "R2", t + 60, 30.0), PointReport("P1", "R1", t, 12.0),
               PointReport("P2", "R3", t + 90, 5.0)]
    out = run_stage(stage, [("point_reports", r.point_id, r) for r in reports], city=CityMap(), batch=1)
    views = {k: orjson.loads(v) for name, hashes in out.state.items() if name.endswith(":counts")
             for k, v in hashes.items()}
    assert views == {"P1": {"point_id": "P1", "reports": 2}, "P2": {"point_id": "P2", "reports": 1}}
    kept = {k for name, hashes in out.state.items() if name.endswith(":reports") for k in hashes}
    assert kept == {"P1|R1", "P1|R2", "P2|R3"}
    assert all(name.startswith("cb:{point_report_counts.") for name in out.state if name.endswith(("counts", "reports")))
