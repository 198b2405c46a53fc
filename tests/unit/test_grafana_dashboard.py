"""The Grafana dashboard's queries parse and only use series the stages or rules produce.

Every panel query is checked by ``promtool check rules`` (as a throwaway recording rule),
and every metric name in it must be exported by the stage or drift metrics or recorded by
the project's rules, so a renamed metric cannot leave a silently empty panel.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from deeptrust.devtools.debian import debian_package
from deeptrust.drift.metrics import DriftMetrics
from deeptrust.streams.metrics import StageMetrics

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "deeptrust" / "files"
DASHBOARD = json.loads((FILES / "grafana-dashboard.json").read_text())
NAME = re.compile(r"\b((?:stage:)?deeptrust_[a-z0-9_:]+)")


def queries():
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]


def known_series():
    registry = CollectorRegistry()
    StageMetrics("s", registry)
    DriftMetrics(registry)
    families = list(registry.collect())
    exported = {family.name for family in families}
    exported |= {
        f"{family.name}{suffix}"
        for family in families
        if family.type == "histogram"
        for suffix in ("_bucket", "_sum", "_count")
    }
    rules = yaml.safe_load((FILES / "prometheus-rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return exported | recorded | {f"{name}_total" for name in exported}


def test_panels_have_unique_ids_and_do_not_overlap():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, f"panel {panel['title']} overlaps another"
        cells |= area


@pytest.mark.parametrize("expr", queries())
def test_queries_use_series_that_exist(expr):
    names = set(NAME.findall(expr))
    assert names, expr
    assert names <= known_series(), names - known_series()


def test_queries_parse(tmp_path):
    promtool = debian_package("prometheus") / "usr" / "bin" / "promtool"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
