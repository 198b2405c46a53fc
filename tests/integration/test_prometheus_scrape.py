"""A real Prometheus scrapes a running stage and evaluates the project's rules on it.

Prometheus comes from Debian's package (unpacked into the user's cache). The stage
dead-letters half of its input, so the recorded dead-letter ratio is about 0.5 and the
DeepTrustDeadLetterRateHigh alert goes pending (its ``for`` is 5 minutes).
"""

import subprocess
from pathlib import Path

import httpx
import pytest

from deeptrust.devtools.debian import debian_package
from deeptrust.devtools.local_broker import free_port
from tests.conftest import wait_for
from tests.images import corrupt_bytes, jpeg_bytes

pytestmark = pytest.mark.integration
RULES = (
    Path(__file__).resolve().parents[2] / "helm" / "deeptrust" / "files" / "prometheus-rules.yml"
)


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on a free port; yields a function that configures the target."""
    binary = debian_package("prometheus") / "usr" / "bin" / "prometheus"
    processes = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n  - job_name: deeptrust\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def query(base: str, expression: str) -> list[dict]:
    try:
        response = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=5)
    except httpx.HTTPError:
        return []
    return response.json()["data"]["result"] if response.status_code == 200 else []


def alerts(base: str) -> list[dict]:
    try:
        return httpx.get(f"{base}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    except httpx.HTTPError:
        return []


def test_prometheus_scrapes_a_stage_and_raises_the_dead_letter_alert(
    uploads, start_stage, prometheus
):
    detect = start_stage("detect")
    base = prometheus(detect.metrics_port)
    wait_for(lambda: query(base, 'up{job="deeptrust"} == 1'), 60, "the first scrape")
    for i in range(20):
        uploads.upload(jpeg_bytes(), "ok.jpg", image_id=f"ok-{i}")
        uploads.upload(corrupt_bytes(), "bad.jpg", image_id=f"bad-{i}")
    uploads.flush()
    wait_for(
        lambda: detect.metric("deeptrust_dead_lettered_total", reason="undecodable_image") == 20,
        60,
        "the stage dead-letters the corrupt half",
    )

    def ratio() -> float:
        result = query(base, 'stage:deeptrust_dead_letter_ratio:rate5m{stage="detect"}')
        return float(result[0]["value"][1]) if result else 0.0

    wait_for(lambda: 0.4 < ratio() < 0.6, 60, "the recorded dead-letter ratio near 0.5")
    wait_for(
        lambda: any(
            a["labels"]["alertname"] == "DeepTrustDeadLetterRateHigh"
            and a["labels"]["stage"] == "detect"
            and a["state"] == "pending"
            for a in alerts(base)
        ),
        60,
        "the dead-letter alert pending",
    )
    assert not any(a["labels"]["alertname"] == "DeepTrustStageNotReady" for a in alerts(base))
