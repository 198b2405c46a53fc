"""The Prometheus rules are valid and their alerts fire when, and only when, they should.

``promtool`` comes from Debian's ``prometheus`` package, unpacked into the user's cache.
"""

import subprocess
from pathlib import Path

import pytest

from deeptrust.devtools.debian import debian_package

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "deeptrust" / "files" / "prometheus-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"


@pytest.fixture(scope="module")
def promtool():
    return debian_package("prometheus") / "usr" / "bin" / "promtool"


def run(promtool, *args):
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid(promtool):
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout


def test_alerts_fire_on_their_scenarios_and_not_otherwise(promtool):
    tested = run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
