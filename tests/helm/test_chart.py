"""The Helm chart lints, renders valid Kubernetes objects, and deploys what the code needs.

No cluster runs here, so the chart is checked offline: `helm lint --strict`, `helm template`
with the default and the production values, every rendered object validated against
Kubernetes' own schemas (kubernetes-validate, strict), the CRDs (KEDA, Prometheus Operator)
checked structurally, and the settings cross-checked with the code they configure.

The helm binary is `.tools/bin/helm` (built from source by helm/tools/install-helm.sh, which
`make test` runs first) or `$DEEPTRUST_HELM`.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.detect import DetectStage
from deeptrust.processors.moderation import ModerationRouter
from deeptrust.processors.registry import STAGE_NAMES
from deeptrust.processors.search_sink import SearchSink
from deeptrust.processors.tag import TagStage
from deeptrust.streams.topics import Topic
from deeptrust.webhooks.cli import notify
from deeptrust.webhooks.subscriptions import load_subscriptions

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "deeptrust"
PRODUCTION_VALUES = CHART / "values-production.yaml"
INSTALL_SCRIPT = ROOT / "helm" / "tools" / "install-helm.sh"
RELEASE = "dt"
FULLNAME = f"{RELEASE}-deeptrust"
# The chart's kubeVersion floor and the newest version kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
# Custom resources: not in Kubernetes' schemas, checked structurally below instead.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# The stages the code defines, by name, with the topic each consumes.
INPUT_TOPICS = {
    stage.name: stage.input_topic
    for stage in (DetectStage, CaptionStage, TagStage, ModerationRouter, SearchSink)
}
INPUT_TOPICS["retrain"] = Topic.RETRAIN
STAGE_WORKLOADS = (*STAGE_NAMES, "retrain")
# The services on the Kafka runtime: each pod's name is its instance id, so each must be a
# StatefulSet, whose pod names are unique and survive restarts.
KAFKA_SERVICES = (*STAGE_WORKLOADS, "drift", "alert-webhooks")
SECRET_SENTINELS = {
    "DEEPTRUST_KAFKA_SASL_PASSWORD": "sasl-password-sentinel",
    "AWS_ACCESS_KEY_ID": "aws-key-id-sentinel",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-key-sentinel",
    "DEEPTRUST_LLM_API_KEY": "llm-api-key-sentinel",
    "DEEPTRUST_GATEWAY_API_KEYS": "gateway-keys-sentinel",
    "HF_TOKEN": "hf-token-sentinel",
    "DEEPTRUST_WEBHOOK_SECRET_ONCALL": "webhook-secret-sentinel",
}

Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> str:
    configured = os.environ.get("DEEPTRUST_HELM")
    path = Path(configured) if configured else ROOT / ".tools" / "bin" / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found at {path}: run helm/tools/install-helm.sh (`make test` does), "
            "which builds it from source with Go, or point DEEPTRUST_HELM at a helm v3 binary"
        )
    return str(path)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def values_args(tmp_path: Path, files: tuple[Path, ...], overrides: dict[str, Any]) -> list[str]:
    """`-f` arguments for the files, then the overrides written as one more values file."""
    args = [arg for path in files for arg in ("-f", str(path))]
    if overrides:
        extra = tmp_path / f"overrides-{len(list(tmp_path.iterdir()))}.yaml"
        extra.write_text(yaml.safe_dump(overrides))
        args += ["-f", str(extra)]
    return args


def template(
    helm: str, tmp_path: Path, *files: Path, **overrides: Any
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        "pipeline",
        "--kube-version",
        "1.33.0",
        *values_args(tmp_path, files, overrides),
    )


def render(helm: str, tmp_path: Path, *files: Path, **overrides: Any) -> list[Manifest]:
    rendered = template(helm, tmp_path, *files, **overrides)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


# Production values plus the components an image does not have yet, and every secret
# given inline, so that one render holds every kind of object the chart can make.
EVERYTHING = {
    "stages": {"retrain": {"enabled": True, "mlflowTrackingUri": "http://mlflow:5000"}},
    "gateway": {"enabled": True, "apiKeys": {"existingSecret": "gateway-keys"}},
    "alertWebhooks": {
        "enabled": True,
        "group": "ops-alert-webhooks",
        "retry": {"maxAttempts": 4, "initialBackoffSeconds": 0.5, "maxBackoffSeconds": 20},
        "subscriptions": [
            {
                "name": "oncall",
                "url": "https://hooks.example.com/deeptrust?team=ml&env=<prod>",
                "kinds": ["drift"],
                "minSeverity": "warning",
                "timeoutSeconds": 5,
                "secret": {"existingSecret": "oncall-webhook", "key": "signing-secret"},
            },
            {"name": "audit.log", "url": "http://audit.internal:8080/alerts"},
        ],
    },
}
INLINE_SECRETS = {
    "kafka": {
        "securityProtocol": "SASL_SSL",
        "sasl": {
            "mechanism": "SCRAM-SHA-256",
            "username": "deeptrust",
            "password": {"value": SECRET_SENTINELS["DEEPTRUST_KAFKA_SASL_PASSWORD"]},
        },
        "tls": {"ca": {"value": "-----BEGIN CERTIFICATE-----\nca-sentinel\n"}},
    },
    "objectStore": {
        "s3": {
            "bucket": "uploads",
            "accessKeyId": {"value": SECRET_SENTINELS["AWS_ACCESS_KEY_ID"]},
            "secretAccessKey": {"value": SECRET_SENTINELS["AWS_SECRET_ACCESS_KEY"]},
        }
    },
    "llm": {"apiKey": {"value": SECRET_SENTINELS["DEEPTRUST_LLM_API_KEY"]}},
    "gateway": {
        "enabled": True,
        "apiKeys": {"value": SECRET_SENTINELS["DEEPTRUST_GATEWAY_API_KEYS"]},
    },
    "vllm": {"enabled": True, "hfToken": {"value": SECRET_SENTINELS["HF_TOKEN"]}},
    "alertWebhooks": {
        "enabled": True,
        "subscriptions": [
            {
                "name": "oncall",
                "url": "https://hooks.example.com/x",
                "secret": {"value": SECRET_SENTINELS["DEEPTRUST_WEBHOOK_SECRET_ONCALL"]},
            }
        ],
    },
    "keda": {"enabled": True},
    "stageDefaults": {"autoscaling": {"enabled": True}},
    "stages": {"search": {"autoscaling": {"enabled": False}}},
}


@pytest.fixture(scope="module")
def rendered(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    tmp_path = tmp_path_factory.mktemp("values")
    return {
        "default": render(helm, tmp_path),
        "production": render(helm, tmp_path, PRODUCTION_VALUES),
        "everything": render(helm, tmp_path, PRODUCTION_VALUES, **EVERYTHING),
        "inline-secrets": render(helm, tmp_path, **INLINE_SECRETS),
    }


VARIANTS = ("default", "production", "everything", "inline-secrets")


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def by_component(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {component(m): m for m in manifests if m["kind"] == kind}


def pod_spec(workload: Manifest) -> Manifest:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def main_container(workload: Manifest) -> Manifest:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def resolved_env(workload: Manifest, manifests: list[Manifest]) -> dict[str, Any]:
    """A container's environment as Kubernetes builds it: envFrom first, env over it.

    Plain values are strings; values from elsewhere are tuples saying where from.
    """
    config_maps = of_kind(manifests, "ConfigMap")
    container = main_container(workload)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = ("secret", ref["name"], ref["key"])
        else:
            env[entry["name"]] = ("field", entry["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def merged_values(*files: Path) -> dict[str, Any]:
    """The chart's values with the files over them (maps merged, as Helm does)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in over.items():
            both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
            merged[key] = merge(base[key], value) if both_maps else value
        return merged

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()))
    return values


# --- helm itself -------------------------------------------------------------------------


@pytest.mark.parametrize("files", [(), (PRODUCTION_VALUES,)], ids=["default", "production"])
def test_chart_passes_strict_lint(helm, files):
    linted = run_helm(helm, "lint", "--strict", str(CHART), *values_args(Path(), files, {}))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_install_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck is a dev dependency: run `make test`, which installs it"
    checked = subprocess.run(
        [shellcheck, str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout


# --- Kubernetes schemas ------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_kubernetes(rendered, variant):
    manifests = rendered[variant]
    checked = set()
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{name} is invalid on Kubernetes {version}: {error.message}")
        checked.add(manifest["kind"])
    assert {"StatefulSet", "ConfigMap", "Service", "PodDisruptionBudget"} <= checked


def test_schema_validation_rejects_unknown_fields(rendered):
    detect = by_component(rendered["default"], "StatefulSet")["detect"]
    main_container(detect)["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(detect, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_custom_resource_is_a_known_one(rendered):
    kinds = {(m["apiVersion"], m["kind"]) for v in VARIANTS for m in rendered[v]}
    custom = {kind for kind in kinds if kind[0] not in ("v1", "apps/v1", "policy/v1")}
    assert custom == CUSTOM_KINDS


# --- the stages --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_deeptrust_workload_is_probed_bounded_and_unprivileged(rendered, variant):
    manifests = rendered[variant]
    workloads = [
        m
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet") and component(m) != "vllm"
    ]
    assert workloads
    for workload in workloads:
        name = component(workload)
        spec = pod_spec(workload)
        container = main_container(workload)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        assert "memory" in container["resources"]["limits"], name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert spec["terminationGracePeriodSeconds"] >= 30, name
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("variant", VARIANTS)
def test_kafka_services_are_statefulsets_whose_pod_names_are_their_instance_ids(rendered, variant):
    manifests = rendered[variant]
    statefulsets = by_component(manifests, "StatefulSet")
    services = of_kind(manifests, "Service")
    deployed = {component(m) for m in manifests if m["kind"] == "Deployment"}
    assert deployed <= {"gateway", "vllm"}, "no Kafka service may run with unstable pod names"
    for name in KAFKA_SERVICES:
        if name not in statefulsets:
            continue  # not enabled in this variant
        workload = statefulsets[name]
        env = resolved_env(workload, manifests)
        assert env["DEEPTRUST_RUNNER_INSTANCE_ID"] == ("field", "metadata.name"), name
        spec = workload["spec"]
        assert spec["podManagementPolicy"] == ("OrderedReady" if name == "drift" else "Parallel")
        assert spec["updateStrategy"]["type"] == "RollingUpdate", name
        # The governing Service exists, is headless and selects exactly these pods.
        service = services[spec["serviceName"]]
        assert service["spec"]["clusterIP"] == "None", name
        assert service["spec"]["selector"] == spec["selector"]["matchLabels"], name
        pod_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items(), name
    assert set(statefulsets) >= {*STAGE_NAMES, "drift"}, "the defaults run these everywhere"
    if "gateway" in deployed:
        gateway = by_component(manifests, "Deployment")["gateway"]
        assert "DEEPTRUST_RUNNER_INSTANCE_ID" not in resolved_env(gateway, manifests)


def test_every_stage_of_the_code_has_a_statefulset_running_it(rendered):
    statefulsets = by_component(rendered["everything"], "StatefulSet")
    deployments = by_component(rendered["everything"], "Deployment")
    for name in STAGE_WORKLOADS:
        container = main_container(statefulsets[name])
        assert container["args"] == ["stage", "run", name, "--metrics-port", "8000"]
        assert container["ports"][0]["containerPort"] == 8000
    assert main_container(deployments["gateway"])["args"] == [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    gateway_env = resolved_env(deployments["gateway"], rendered["everything"])
    assert gateway_env["DEEPTRUST_GATEWAY_STATUS_DB"].startswith("/tmp/"), "a writable path"
    env = resolved_env(statefulsets["retrain"], rendered["everything"])
    assert env["DEEPTRUST_TRAINING_TRACKING_URI"] == "http://mlflow:5000"


def test_the_retrain_stage_points_at_a_ray_cluster_only_when_given_one(helm, tmp_path, rendered):
    ray = {
        "address": "ray://deeptrust-ray-head-svc:10001",
        "storage": "s3://models/ray",
        "workers": 4,
    }
    retrain = {"enabled": True, "mlflowTrackingUri": "http://mlflow:5000", "ray": ray}
    manifests = render(helm, tmp_path, stages={"retrain": retrain})
    env = resolved_env(by_component(manifests, "StatefulSet")["retrain"], manifests)
    assert env["DEEPTRUST_TRAINING_RAY_ADDRESS"] == "ray://deeptrust-ray-head-svc:10001"
    assert env["DEEPTRUST_TRAINING_RAY_STORAGE"] == "s3://models/ray"
    assert env["DEEPTRUST_TRAINING_RAY_WORKERS"] == "4"
    assert env["DEEPTRUST_TRAINING_RAY_USE_GPU"] == "false"
    assert env["DEEPTRUST_TRAINING_RAY_MAX_FAILURES"] == "2"
    everything = rendered["everything"]
    default = resolved_env(by_component(everything, "StatefulSet")["retrain"], everything)
    assert not any(name.startswith("DEEPTRUST_TRAINING_RAY_") for name in default)


def test_the_caption_stage_follows_its_captioner_when_named(helm, tmp_path, rendered):
    models = {"captionFollow": "deeptrust-captioner", "captionBackend": "hf-blip"}
    manifests = render(helm, tmp_path, models=models)
    env = resolved_env(by_component(manifests, "StatefulSet")["caption"], manifests)
    assert (env["DEEPTRUST_CAPTION_FOLLOW"], env["DEEPTRUST_CAPTION_BACKEND"]) == (
        "deeptrust-captioner",
        "hf-blip",
    )
    everything = rendered["everything"]
    default = resolved_env(by_component(everything, "StatefulSet")["caption"], everything)
    assert "DEEPTRUST_CAPTION_FOLLOW" not in default


def test_grace_period_and_batch_size_come_from_the_values(helm, tmp_path):
    manifests = render(
        helm,
        tmp_path,
        stages={"caption": {"terminationGracePeriodSeconds": 240, "maxBatch": 8}},
    )
    stages = by_component(manifests, "StatefulSet")
    assert pod_spec(stages["caption"])["terminationGracePeriodSeconds"] == 240
    assert resolved_env(stages["caption"], manifests)["DEEPTRUST_RUNNER_MAX_BATCH"] == "8"
    assert resolved_env(stages["detect"], manifests)["DEEPTRUST_RUNNER_MAX_BATCH"] == "32"


def test_drift_is_a_statefulset_of_exactly_one_with_its_references_on_a_volume(rendered):
    for variant in VARIANTS:
        manifests = rendered[variant]
        assert "drift" not in by_component(manifests, "Deployment")
        drift = by_component(manifests, "StatefulSet")["drift"]
        assert drift["spec"]["replicas"] == 1
        claims = {claim["metadata"]["name"] for claim in drift["spec"]["volumeClaimTemplates"]}
        assert claims == {"references"}
        reference_dir = resolved_env(drift, manifests)["DEEPTRUST_DRIFT_REFERENCE_DIR"]
        mounts = {m["name"]: m["mountPath"] for m in main_container(drift)["volumeMounts"]}
        assert mounts["references"] == reference_dir
        assert main_container(drift)["args"][:3] == ["stage", "run", "drift"]
        service = of_kind(manifests, "Service")[drift["spec"]["serviceName"]]
        assert service["spec"]["clusterIP"] == "None"


def test_search_keeps_one_writer_on_its_own_volume(rendered):
    manifests = rendered["production"]
    search = by_component(manifests, "StatefulSet")["search"]
    # One replica of a StatefulSet: its pod is stopped before its replacement starts.
    assert search["spec"]["replicas"] == 1
    claim = next(v for v in pod_spec(search)["volumes"] if v["name"] == "search")
    assert claim["persistentVolumeClaim"]["claimName"] in of_kind(
        manifests, "PersistentVolumeClaim"
    )
    db = resolved_env(search, manifests)["DEEPTRUST_SEARCH_DB"]
    mounts = {m["name"]: m["mountPath"] for m in main_container(search)["volumeMounts"]}
    assert Path(db).parent == Path(mounts["search"])


def test_gpu_stages_ask_for_gpus_and_tolerate_gpu_nodes(rendered):
    deployments = {
        **by_component(rendered["production"], "StatefulSet"),
        **by_component(rendered["production"], "Deployment"),
    }
    for name in ("detect", "caption", "vllm"):
        spec = pod_spec(deployments[name])
        assert main_container(deployments[name])["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
    for name in ("tag", "moderation", "search"):
        assert "nvidia.com/gpu" not in main_container(deployments[name])["resources"]["limits"]


def test_every_component_has_a_disruption_budget(rendered):
    manifests = rendered["everything"]
    budgets = by_component(manifests, "PodDisruptionBudget")
    workloads = {component(m): m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")}
    assert set(budgets) == set(workloads)
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == name
        pod_labels = workloads[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items(), f"{name}: the budget covers its pods"


# --- the LLM -----------------------------------------------------------------------------


def test_tag_stage_calls_the_vllm_service_with_the_chat_api(rendered):
    manifests = rendered["production"]
    vllm = by_component(manifests, "Deployment")["vllm"]
    container = main_container(vllm)
    args = container["args"]
    assert args[args.index("--model") + 1] == "mistralai/Mistral-7B-Instruct-v0.2"
    assert container["image"].startswith("vllm/vllm-openai:")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    hf_token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert hf_token["valueFrom"]["secretKeyRef"] == {"name": "huggingface-token", "key": "token"}

    service = by_component(manifests, "Service")["vllm"]
    port = service["spec"]["ports"][0]["port"]
    tag = by_component(manifests, "StatefulSet")["tag"]
    env = resolved_env(tag, manifests)
    assert env["DEEPTRUST_LLM_BASE_URL"] == f"http://{service['metadata']['name']}:{port}/v1"
    assert env["DEEPTRUST_LLM_API"] == "chat"
    assert env["DEEPTRUST_LLM_MODEL"] == "mistralai/Mistral-7B-Instruct-v0.2"
    assert env["DEEPTRUST_TAG_BACKEND"] == "llm"
    assert service["spec"]["selector"] == vllm["spec"]["selector"]["matchLabels"]


def test_tag_stage_waits_for_vllm_with_a_valid_script(rendered):
    manifests = rendered["production"]
    init = pod_spec(by_component(manifests, "StatefulSet")["tag"])["initContainers"]
    script = init[0]["command"][2]
    compile(script, "wait-for-vllm", "exec")
    assert f"http://{FULLNAME}-vllm:8000/health" in script
    assert "initContainers" not in pod_spec(by_component(manifests, "StatefulSet")["moderation"])


def test_without_vllm_the_stages_use_the_configured_server(rendered):
    manifests = rendered["default"]
    assert "vllm" not in by_component(manifests, "Deployment")
    env = resolved_env(by_component(manifests, "StatefulSet")["tag"], manifests)
    defaults = merged_values()["llm"]
    assert env["DEEPTRUST_LLM_BASE_URL"] == defaults["baseUrl"]
    assert env["DEEPTRUST_LLM_API"] == defaults["api"]


# --- autoscaling -------------------------------------------------------------------------


def scaled_objects(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for scaled in of_kind(manifests, "ScaledObject").values():
        yield component(scaled), scaled


@pytest.mark.parametrize("variant", ["production", "everything", "inline-secrets"])
def test_keda_scales_each_stage_on_its_groups_lag_within_its_partitions(rendered, variant):
    manifests = rendered[variant]
    files = () if variant == "inline-secrets" else (PRODUCTION_VALUES,)
    values = merged_values(*files)
    prefix = values["kafka"]["topicPrefix"]
    statefulsets = of_kind(manifests, "StatefulSet")
    scaled = dict(scaled_objects(manifests))
    assert scaled, "autoscaling is on in this variant"
    assert "search" not in scaled
    for name, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        topic = INPUT_TOPICS[name]
        assert spec["scaleTargetRef"]["apiVersion"] == "apps/v1"
        assert spec["scaleTargetRef"]["kind"] == "StatefulSet"
        target = statefulsets[spec["scaleTargetRef"]["name"]]
        assert component(target) == name
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        trigger = spec["triggers"][0]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert metadata["topic"] == f"{prefix}{topic.value}"
        assert metadata["consumerGroup"] == f"{prefix}{name}", "the runner's group id"
        assert metadata["bootstrapServers"] == values["kafka"]["bootstrapServers"]
        assert int(metadata["lagThreshold"]) > 0
        assert all(isinstance(value, str) for value in metadata.values())
        partitions = values["kafka"]["partitions"][topic.value]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions


def test_keda_authenticates_like_the_stages(rendered):
    manifests = rendered["production"]
    auth = of_kind(manifests, "TriggerAuthentication")
    assert len(auth) == 1
    (name, trigger_auth) = next(iter(auth.items()))
    refs = {ref["parameter"]: ref for ref in trigger_auth["spec"]["secretTargetRef"]}
    assert (refs["password"]["name"], refs["password"]["key"]) == (
        "deeptrust-kafka-user",
        "password",
    )
    assert (refs["ca"]["name"], refs["ca"]["key"]) == ("kafka-cluster-ca-cert", "ca.crt")
    (username,) = trigger_auth["spec"]["env"]
    detect = by_component(manifests, "StatefulSet")["detect"]
    assert resolved_env(detect, manifests)[username["name"]] == "deeptrust"
    assert username["containerName"] == main_container(detect)["name"]
    for _, scaled in scaled_objects(manifests):
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["authenticationRef"]["name"] == name
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"stages": {"detect": {"autoscaling": {"maxReplicas": 13}}}},
            "stages.detect.autoscaling.maxReplicas is 13 but topic uploads.v1 has 12 partitions",
        ),
        (
            {"kafka": {"partitions": {"captioned.v1": 4}}},
            "stages.tag.autoscaling.maxReplicas is 12 but topic captioned.v1 has 4 partitions",
        ),
        (
            {"keda": {"enabled": False}},
            "stages.detect.autoscaling.enabled needs keda.enabled=true",
        ),
    ],
    ids=["max-above-partitions", "fewer-partitions", "autoscaling-without-keda"],
)
def test_production_rendering_fails_clearly_when_scaling_cannot_work(
    helm, tmp_path, overrides, message
):
    failed = template(helm, tmp_path, PRODUCTION_VALUES, **overrides)
    assert failed.returncode != 0
    assert message in failed.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"stages": {"caption": {"replicas": 4}}},
            "stages.caption.replicas is 4 but topic detected.v1 has 3 partitions",
        ),
        (
            {"stages": {"search": {"replicas": 2}}},
            "stages.search runs exactly one replica",
        ),
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}},
            "kafka.sasl.username is required with SASL",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "username": "u"},
                }
            },
            "kafka.sasl.password needs existingSecret",
        ),
        (
            {"stages": {"retrain": {"enabled": True}}},
            "stages.retrain.enabled needs stages.retrain.mlflowTrackingUri",
        ),
        (
            {"models": {"captionFollow": "deeptrust-captioner"}},
            "models.captionFollow needs models.captionBackend hf-blip",
        ),
        (
            {"stages": {"retrain": {"ray": {"address": "ray://head:10001"}}}},
            "stages.retrain.ray.address needs stages.retrain.ray.storage",
        ),
        ({"gateway": {"enabled": True}}, "gateway.enabled needs gateway.apiKeys"),
        ({"llm": {"api": "responses"}}, "llm.api must be completions or chat"),
        (
            {"stages": {"tag": {"strategy": {"type": "Recreate"}}}},
            "stages.tag.strategy (or stageDefaults.strategy) is a Deployment setting",
        ),
        (
            {"stageDefaults": {"updateStrategy": {"type": "Recreate"}}},
            "stages.detect.updateStrategy.type must be RollingUpdate or OnDelete",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {
                        "mechanism": "OAUTHBEARER",
                        "oauthbearer": {"tokenEndpointUrl": "https://idp/token", "clientId": "c"},
                    },
                }
            },
            "kafka.sasl.oauthbearer.clientSecret needs existingSecret",
        ),
        (
            {"kafka": {"librdkafka": {"isolation.level": "read_uncommitted"}}},
            "kafka.librdkafka.isolation.level: set it with its own value",
        ),
    ],
    ids=[
        "replicas-above-partitions",
        "two-search-writers",
        "sasl-without-user",
        "sasl-without-password",
        "retrain-without-mlflow",
        "caption-follow-without-blip",
        "ray-without-storage",
        "gateway-without-keys",
        "unknown-llm-api",
        "deployment-strategy",
        "unknown-update-strategy",
        "oidc-without-secret",
        "pass-through-over-the-guarantee",
    ],
)
def test_rendering_fails_clearly_on_misconfiguration(helm, tmp_path, overrides, message):
    failed = template(helm, tmp_path, **overrides)
    assert failed.returncode != 0
    assert message in failed.stderr


# --- secrets -----------------------------------------------------------------------------


def test_secrets_stay_in_secrets(rendered):
    manifests = rendered["inline-secrets"]
    for config_map in of_kind(manifests, "ConfigMap").values():
        text = json.dumps(config_map)
        leaked = [name for name, value in SECRET_SENTINELS.items() if value in text]
        assert not leaked, f"ConfigMap {config_map['metadata']['name']} holds {leaked}"
    (secret,) = of_kind(manifests, "Secret").values()
    stored = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert {key: stored[key] for key in SECRET_SENTINELS} == SECRET_SENTINELS
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    for workload in workloads:
        for entry in main_container(workload).get("env", []):
            assert entry.get("value") not in SECRET_SENTINELS.values(), entry["name"]
    tag_env = resolved_env(by_component(manifests, "StatefulSet")["tag"], manifests)
    secret_name = secret["metadata"]["name"]
    for name in ("DEEPTRUST_KAFKA_SASL_PASSWORD", "AWS_SECRET_ACCESS_KEY", "DEEPTRUST_LLM_API_KEY"):
        assert tag_env[name] == ("secret", secret_name, name)
    gateway_env = resolved_env(by_component(manifests, "Deployment")["gateway"], manifests)
    assert gateway_env["DEEPTRUST_GATEWAY_API_KEYS"][0] == "secret"
    assert "DEEPTRUST_GATEWAY_API_KEYS" not in tag_env, "only the gateway gets the API keys"


def test_kafka_ca_is_mounted_from_a_secret_where_the_config_says(rendered):
    manifests = rendered["production"]
    detect = by_component(manifests, "StatefulSet")["detect"]
    location = resolved_env(detect, manifests)["DEEPTRUST_KAFKA_SSL_CA_LOCATION"]
    volumes = {v["name"]: v for v in pod_spec(detect)["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in main_container(detect)["volumeMounts"]}
    (item,) = volumes["kafka-ca"]["secret"]["items"]
    assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-cluster-ca-cert"
    assert str(Path(mounts["kafka-ca"]) / item["path"]) == location


def test_production_renders_no_secret_of_its_own(rendered):
    assert not of_kind(rendered["production"], "Secret")
    config = of_kind(rendered["production"], "ConfigMap")[FULLNAME]["data"]
    assert not [key for key in config if any(w in key for w in ("PASSWORD", "SECRET", "TOKEN"))]


# --- monitoring --------------------------------------------------------------------------


def test_monitoring_resources_are_off_by_default(rendered):
    kinds = {m["kind"] for m in rendered["default"]}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
    assert f"{FULLNAME}-dashboard" not in of_kind(rendered["default"], "ConfigMap")


def test_service_monitor_scrapes_every_stage(rendered):
    manifests = rendered["everything"]
    (monitor,) = of_kind(manifests, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    scraped = {
        component(service): service
        for service in of_kind(manifests, "Service").values()
        if selector.items() <= service["metadata"]["labels"].items()
    }
    assert set(scraped) == {*STAGE_WORKLOADS, "drift", "alert-webhooks"}
    workloads = {component(m): m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")}
    for name, service in scraped.items():
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
        pod_labels = workloads[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["publishNotReadyAddresses"] is True, "not-ready pods alert"


def test_prometheus_rule_ships_the_rules_file_unchanged(rendered):
    (rule,) = of_kind(rendered["production"], "PrometheusRule").values()
    expected = yaml.safe_load((CHART / "files" / "prometheus-rules.yml").read_text())
    assert rule["spec"]["groups"] == expected["groups"]
    assert any("$labels.stage" in str(group) for group in rule["spec"]["groups"])


def test_dashboard_config_map_ships_the_dashboard_unchanged(rendered):
    dashboard = of_kind(rendered["production"], "ConfigMap")[f"{FULLNAME}-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    expected = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(content) == expected


# --- alert webhooks ----------------------------------------------------------------------


def test_alert_webhooks_are_off_by_default(rendered):
    for variant in ("default", "production"):
        manifests = rendered[variant]
        assert not [m for m in manifests if component(m) == "alert-webhooks"], variant


def test_alert_webhooks_read_the_subscriptions_the_values_give(rendered, tmp_path):
    manifests = rendered["everything"]
    notifier = by_component(manifests, "StatefulSet")["alert-webhooks"]
    container = main_container(notifier)
    assert notifier["spec"]["replicas"] == 1
    # The arguments are the notify command's own options, and the file is where it looks.
    args = container["args"]
    assert args[:2] == ["alerts", "notify"]
    options = notify.make_context("notify", args[2:]).params
    assert options["metrics_port"] == container["ports"][0]["containerPort"] == 8000
    assert options["group"] == "ops-alert-webhooks"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_file = Path(options["subscriptions_file"])
    assert config_file.parent == Path(mounts["subscriptions"])
    volume = next(v for v in pod_spec(notifier)["volumes"] if v["name"] == "subscriptions")
    config_map = of_kind(manifests, "ConfigMap")[volume["configMap"]["name"]]
    # The rendered file is one the notifier's own loader accepts, saying what the values say.
    copied = tmp_path / config_file.name
    copied.write_text(config_map["data"][config_file.name])
    env = resolved_env(notifier, manifests)
    loaded = load_subscriptions(copied, {name: "resolved" for name in env})
    assert loaded.retry.model_dump() == {
        "max_attempts": 4,
        "initial_backoff_s": 0.5,
        "max_backoff_s": 20,
    }
    oncall, audit = loaded.subscriptions
    assert (oncall.name, oncall.url) == (
        "oncall",
        EVERYTHING["alertWebhooks"]["subscriptions"][0]["url"],
    )
    assert (oncall.kinds, oncall.min_severity, oncall.timeout_s) == (("drift",), "warning", 5)
    assert env[oncall.secret_env] == ("secret", "oncall-webhook", "signing-secret")
    assert (audit.name, audit.kinds, audit.min_severity, audit.secret_env) == (
        "audit.log",
        (),
        "info",
        None,
    )
    # Kafka credentials yes; keys it has no use for, no.
    assert env["DEEPTRUST_KAFKA_SASL_PASSWORD"][0] == "secret"
    assert not {"AWS_SECRET_ACCESS_KEY", "DEEPTRUST_LLM_API_KEY"} & env.keys()


@pytest.mark.parametrize(
    ("subscriptions", "message"),
    [
        ([], "alertWebhooks.enabled needs at least one entry"),
        ([{"name": "a"}], "alertWebhooks.subscriptions[0] needs a name and a url"),
        (
            [{"name": "a-b", "url": "http://h/1"}, {"name": "a_b", "url": "http://h/2"}],
            'names "a-b" and "a_b" collide',
        ),
        (
            [{"name": "a", "url": "http://h/1", "minSeverity": "loud"}],
            "minSeverity must be info, warning or critical",
        ),
        (
            [{"name": "a", "url": "http://h/1", "secret": {"existingSecret": "", "key": "k"}}],
            "alertWebhooks.subscriptions a: secret needs existingSecret",
        ),
    ],
    ids=["none", "no-url", "colliding-names", "bad-severity", "empty-secret"],
)
def test_alert_webhooks_rendering_fails_clearly(helm, tmp_path, subscriptions, message):
    failed = template(
        helm, tmp_path, alertWebhooks={"enabled": True, "subscriptions": subscriptions}
    )
    assert failed.returncode != 0
    assert message in failed.stderr


def test_oauthbearer_and_pass_through_options_reach_every_stage(helm, tmp_path):
    rendered = template(
        helm,
        tmp_path,
        kafka={
            "securityProtocol": "SASL_SSL",
            "sasl": {
                "mechanism": "OAUTHBEARER",
                "oauthbearer": {
                    "tokenEndpointUrl": "https://idp.example/token",
                    "clientId": "deeptrust",
                    "scope": "kafka",
                    "clientSecret": {"existingSecret": "kafka-oidc"},
                },
            },
            "librdkafka": {"socket.keepalive.enable": True},
        },
    )
    assert rendered.returncode == 0, rendered.stderr
    manifests = list(yaml.safe_load_all(rendered.stdout))
    [config] = [
        m
        for m in manifests
        if m
        and m["kind"] == "ConfigMap"
        and "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS" in m.get("data", {})
    ]
    data = config["data"]
    assert data["DEEPTRUST_KAFKA_SASL_OAUTHBEARER_METHOD"] == "oidc"
    assert (
        data["DEEPTRUST_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"] == "https://idp.example/token"
    )
    assert json.loads(data["DEEPTRUST_KAFKA_LIBRDKAFKA"]) == {"socket.keepalive.enable": True}
    detect = next(
        m
        for m in manifests
        if m and m["kind"] == "StatefulSet" and m["metadata"]["name"].endswith("detect")
    )
    env = {e["name"]: e for e in detect["spec"]["template"]["spec"]["containers"][0]["env"]}
    secret = env["DEEPTRUST_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (secret["name"], secret["key"]) == ("kafka-oidc", "client-secret")
