"""The Docker files cannot run here (no engine), so they are linted and cross-checked."""

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from deeptrust.cli import cli
from processors.registry import STAGE_NAMES

DOCKER = Path(__file__).resolve().parents[2] / "docker"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a dev dependency: run `make test`, which installs it"
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "kafka/Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kafka_entrypoint_passes_shellcheck():
    result = subprocess.run(
        [tool("shellcheck"), str(DOCKER / "kafka" / "entrypoint.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def parse_command(args: list[str]) -> click.Command:
    """Resolve and parse ``args`` as the CLI would, without running anything."""
    command: click.Command = cli
    name = "deeptrust"
    while isinstance(command, click.Group):
        context = click.Context(command, info_name=name)
        name, found, args = command.resolve_command(context, args)
        assert found is not None
        assert name is not None
        command = found
    command.make_context(name, list(args))
    return command


def on_host(args: list[str], volumes: list[str]) -> list[str]:
    """Replace container paths of bind mounts by their (existing) host paths."""
    mounts = {}
    for volume in volumes:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (DOCKER / source).exists(), f"bind mount source {source} is missing"
            mounts[target] = str(DOCKER / source)
    return [mounts.get(arg, arg) for arg in args]


def test_compose_services_run_real_commands_on_real_stages():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    stages = set()
    for _name, service in services.items():
        if "command" in service:
            parse_command(on_host(service["command"], service.get("volumes", [])))
        if service.get("command", [])[:2] == ["stage", "run"]:
            stages.add(service["command"][2])
    expected = {*STAGE_NAMES, "drift"}
    assert stages == expected, "every stage has a service and every service a stage"
    for service in services.values():
        build = service.get("build")
        if isinstance(build, dict):
            assert (DOCKER / build["context"] / build["dockerfile"]).exists()
        elif build:
            assert (DOCKER / build / "Dockerfile").exists()


def test_the_kafka_image_uses_the_same_pom_as_the_local_broker():
    dockerfile = (DOCKER / "kafka" / "Dockerfile").read_text()
    assert "COPY pom.xml" in dockerfile
    assert (DOCKER / "kafka" / "pom.xml").exists()
