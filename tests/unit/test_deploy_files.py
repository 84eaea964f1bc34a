"""The deployment files a hospital IT team runs (issue 19, items 3 and 5), checked offline.

No container engine or cluster here: the compose file, the Kubernetes manifests, the systemd
units, the Dockerfile and ``deploy/prefect.yaml`` are parsed and checked for what must hold —
required fields, published ports, settings names that exist in :class:`Settings`, secrets that
reach processes only through secret references (never inline), the Prefect auth string in every
client, an image that installs the built wheel as a non-root user, and deployments that load
the flows from the installed package. The Kubernetes manifests are validated against the
Kubernetes OpenAPI schemas bundled with ``kubernetes-validate`` (strict: unknown fields fail).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed
import pytest
import yaml
from pydantic import SecretStr

from concordose.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
UNITS = ("concordose-receiver.service", "prefect-server.service", "prefect-worker.service")
# Oldest Kubernetes minor the manifests must be valid for (still in wide use at sites).
KUBERNETES_VERSION = "1.29.0"

SETTINGS_NAMES = frozenset(f"CONCORDOSE_{name.upper()}" for name in Settings.model_fields)
PREFECT_SECRETS = frozenset(
    {
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_SERVER_DATABASE_PASSWORD",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_API_KEY",
    }
)
THIRD_PARTY_SECRETS = frozenset({"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"})


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


# The settings that are secrets are the ones Settings types as SecretStr.
SECRET_SETTINGS = frozenset(
    f"CONCORDOSE_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if _is_secret(field.annotation)
)
SECRET_NAMES = SECRET_SETTINGS | PREFECT_SECRETS | THIRD_PARTY_SECRETS


def _unknown_settings(names: set[str]) -> set[str]:
    concordose = {name.removesuffix("_FILE") for name in names if name.startswith("CONCORDOSE_")}
    return concordose - SETTINGS_NAMES - PREFECT_SECRETS


def test_the_secret_settings_are_found_in_settings() -> None:
    assert {
        "CONCORDOSE_PSEUDONYM_KEY",
        "CONCORDOSE_S3_ACCESS_KEY",
        "CONCORDOSE_S3_SECRET_KEY",
    } <= SECRET_SETTINGS


# ---------------------------------------------------------------------------------------------
# deploy/prefect.yaml


def _prefect_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    return loaded


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _prefect_yaml()["deployments"]}


def _flow_function(entrypoint: str) -> tuple[Path, ast.FunctionDef]:
    """The file under flows/ and the function a ``concordose.flows.<module>.<function>``
    entrypoint names (the packaging branch installs flows/ as ``concordose.flows``)."""
    match = re.fullmatch(r"concordose\.flows\.(\w+)\.(\w+)", entrypoint)
    assert match, f"{entrypoint}: expected concordose.flows.<module>.<function>"
    module, function = match.groups()
    path = REPO / "flows" / f"{module}.py"
    assert path.is_file(), f"{entrypoint}: no {path.relative_to(REPO)}"
    tree = ast.parse(path.read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    assert found, f"{entrypoint}: no function {function} in {path.relative_to(REPO)}"
    return path, found[0]


def _flow_name(function: ast.FunctionDef) -> str:
    """The ``name=`` of the function's ``@flow(...)`` decorator (failing if it has none)."""
    for decorator in function.decorator_list:
        if (
            isinstance(decorator, ast.Call)
            and isinstance(decorator.func, ast.Name)
            and decorator.func.id == "flow"
        ):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    raise AssertionError(f"{function.name} has no @flow(name=...)")


def test_deployments_load_the_installed_package_not_a_checkout() -> None:
    config = _prefect_yaml()
    # No build step recording a folder, no pull step changing into one.
    assert (config["build"], config["push"], config["pull"]) == ([], [], [])
    steps = [line for line in (DEPLOY / "prefect.yaml").read_text().splitlines() if "#" not in line]
    assert not [line for line in steps if "set_working_directory" in line], (
        "a pull step would tie the worker to a folder of the deploying machine"
    )
    for name, deployment in _deployments().items():
        entrypoint = deployment["entrypoint"]
        # Prefect 3.8.8 treats an entrypoint with a colon as a file path (and downloads code
        # from the deploying machine's folder when there is no pull step); a dotted module path
        # is imported from the installed package.
        assert ":" not in entrypoint, f"{name}: {entrypoint}"
        assert ".py" not in entrypoint, f"{name}: {entrypoint}"
        _flow_function(entrypoint)


def test_the_deployments_and_their_parameters() -> None:
    deployments = _deployments()
    assert set(deployments) == {"process-cycle", "sweep", "sweep-dask", "process-spool"}
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"concordose-process"}
    assert deployments["sweep"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    assert "schedules" not in deployments["sweep-dask"]
    assert deployments["sweep-dask"]["entrypoint"] == deployments["sweep"]["entrypoint"]
    assert deployments["sweep-dask"]["parameters"]["task_runner"] == (
        "dask:tcp://dask-scheduler:8786"
    )
    for name, deployment in deployments.items():
        _, function = _flow_function(deployment["entrypoint"])
        accepted = {a.arg for a in (*function.args.args, *function.args.kwonlyargs)}
        flow = _flow_name(function)
        for parameter in deployment.get("parameters", {}):
            assert parameter in accepted, f"{name}: {flow} has no parameter {parameter}"


def test_the_receivers_deployment_name_is_a_deployment_of_process_cycle() -> None:
    deployment = _deployments()["process-cycle"]
    _, function = _flow_function(deployment["entrypoint"])
    expected = f"{_flow_name(function)}/{deployment['name']}"
    assert expected == "process-cycle/process-cycle"
    receiver_unit = (DEPLOY / "concordose-receiver.service").read_text()
    assert f"--deployment {expected}" in receiver_unit
    assert expected in _compose()["services"]["receiver"]["command"]
    (receiver,) = _containers(_k8s("receiver.yaml"), "StatefulSet")
    assert expected in receiver["args"]


# ---------------------------------------------------------------------------------------------
# deploy/compose.yaml

OUR_IMAGE = "${CONCORDOSE_IMAGE:-concordose:latest}"
# Services of our image that are not Prefect clients: the server itself and the Dask scheduler.
NOT_PREFECT_CLIENTS = {"prefect-server", "dask-scheduler", "worker-metrics"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _env_file(path: Path) -> dict[str, str]:
    entries = (line.strip() for line in path.read_text().splitlines())
    pairs = (line.split("=", 1) for line in entries if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def _service_environment(service: dict[str, Any]) -> dict[str, str]:
    """What a service's process sees: its env files, then its ``environment:``."""
    env: dict[str, str] = {}
    for name in service.get("env_file", []):
        env.update(_env_file(DEPLOY / name))
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    return env


def _host_port(mapping: str | dict[str, Any]) -> int:
    if isinstance(mapping, dict):
        return int(mapping["published"])
    parts = mapping.split("/")[0].split(":")
    assert len(parts) >= 2, f"{mapping}: a port without a host port is published at random"
    return int(parts[-2])


def test_compose_has_every_service_of_a_site() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "postgres",
        "minio",
        "prefect-server",
        "register",
        "receiver",
        "worker",
        "worker-metrics",
        "dask-scheduler",
        "dask-worker",
    }
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["minio"]["image"].startswith("minio/minio")
    ours = {name for name, s in services.items() if s["image"] == OUR_IMAGE}
    assert ours == set(services) - {"postgres", "minio"}
    # The server's database is the PostgreSQL service.
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert server_env["PREFECT_SERVER_DATABASE_HOST"] == "postgres"
    assert services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]
    # The one-shot registration: work pool, then every deployment of the image's prefect.yaml.
    register = " ".join(services["register"]["command"])
    assert "prefect work-pool create concordose-process --type process" in register
    assert "deploy --prefect-file /opt/concordose/prefect.yaml --all" in register
    assert services["register"]["restart"] == "no"
    assert services["register"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["register"]["condition"] == (
        "service_completed_successfully"
    )
    worker = services["worker"]["command"]
    assert worker[:3] == ["prefect", "worker", "start"]
    assert worker[worker.index("--pool") + 1] == "concordose-process"
    # The Dask pair is optional, and is where sweep-dask points.
    assert services["dask-scheduler"]["profiles"] == ["dask"] == services["dask-worker"]["profiles"]
    address = _deployments()["sweep-dask"]["parameters"]["task_runner"].removeprefix("dask:")
    assert address == "tcp://dask-scheduler:8786"
    assert "8786" in services["dask-scheduler"]["command"]
    assert address in services["dask-worker"]["command"]


def test_compose_publishes_only_the_dicom_port_and_the_prefect_ui() -> None:
    published = {
        name: {_host_port(port) for port in service.get("ports", [])}
        for name, service in _compose()["services"].items()
    }
    assert {name: ports for name, ports in published.items() if ports} == {
        "receiver": {11112},
        "prefect-server": {4200},
    }
    for service in _compose()["services"].values():
        assert "network_mode" not in service  # host networking would publish everything


def test_compose_long_running_services_have_healthchecks_and_restart_policies() -> None:
    for name, service in _compose()["services"].items():
        if name == "register":
            continue
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name}: no healthcheck"
        assert test[0] in {"CMD", "CMD-SHELL"}, name


def test_compose_receiver_keeps_its_spool_on_a_volume() -> None:
    config = _compose()
    receiver = config["services"]["receiver"]
    command = receiver["command"]
    spool = command[command.index("--spool") + 1]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in receiver["volumes"]}
    assert volumes[spool] in config["volumes"], "the spool must be a named volume"
    assert command[command.index("--port") + 1] == "11112"
    assert int(receiver["stop_grace_period"].removesuffix("s")) >= 30


def test_compose_secrets_come_from_secret_files_never_inline() -> None:
    config = _compose()
    declared = config["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./secrets/"), name
    assert (DEPLOY / ".gitignore").read_text().split() == ["secrets/"]
    assert "deploy/secrets/" in (REPO / ".dockerignore").read_text().split()
    for name, service in config["services"].items():
        mounted = set(service.get("secrets", []))
        for key, value in service.get("environment", {}).items():
            assert key not in SECRET_NAMES, f"{name}: {key} is inline"
            if key.removesuffix("_FILE") in SECRET_NAMES:
                assert key.endswith("_FILE"), f"{name}: {key}"
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in mounted, f"{name}: {key}={value} is not mounted"
                assert secret in declared, f"{name}: {key}={value} is not declared"
        for env_file in service.get("env_file", []):
            assert not set(_env_file(DEPLOY / env_file)) & SECRET_NAMES, env_file
        assert mounted <= set(declared), name


def test_compose_every_prefect_client_has_the_auth_string() -> None:
    services = _compose()["services"]
    server = services["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING_FILE"] == "/run/secrets/prefect_auth_string"
    clients = {n for n, s in services.items() if s["image"] == OUR_IMAGE} - NOT_PREFECT_CLIENTS
    assert clients == {"register", "receiver", "worker", "dask-worker"}
    for name in clients:
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert env["PREFECT_API_AUTH_STRING_FILE"] == "/run/secrets/prefect_auth_string", name
        assert "prefect_auth_string" in services[name]["secrets"], name


def test_compose_settings_names_are_settings_fields() -> None:
    names: set[str] = set()
    for service in _compose()["services"].values():
        names |= set(_service_environment(service))
    assert {"CONCORDOSE_OUTPUT_URI", "CONCORDOSE_PSEUDONYM_KEY_FILE"} <= names
    assert not _unknown_settings(names)
    # The worker has what the flows need to publish and pseudonymise.
    worker = _service_environment(_compose()["services"]["worker"])
    for name in ("CONCORDOSE_OUTPUT_URI", "CONCORDOSE_S3_ENDPOINT"):
        assert worker[name], name
    for name in ("PSEUDONYM_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        assert f"CONCORDOSE_{name}_FILE" in worker, name


def test_the_image_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    secret = tmp_path / "prefect_auth_string"
    secret.write_text("concordose:s3cret\n")
    base = {"PATH": os.environ["PATH"]}
    done = subprocess.run(
        ["sh", str(DEPLOY / "docker-entrypoint.sh"), "env"],
        env={**base, "PREFECT_API_AUTH_STRING_FILE": str(secret), "OTHER_FILE": "x"},
        capture_output=True,
        text=True,
        check=True,
    )
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert env["PREFECT_API_AUTH_STRING"] == "concordose:s3cret"  # no trailing newline
    assert "PREFECT_API_AUTH_STRING_FILE" not in env
    assert env["OTHER_FILE"] == "x"  # only PREFECT_/CONCORDOSE_ names are secrets to read
    missing = subprocess.run(
        ["sh", str(DEPLOY / "docker-entrypoint.sh"), "true"],
        env={**base, "CONCORDOSE_PSEUDONYM_KEY_FILE": str(tmp_path / "absent")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "CONCORDOSE_PSEUDONYM_KEY_FILE" in missing.stderr


# ---------------------------------------------------------------------------------------------
# deploy/k8s


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def _containers(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for r in resources if r["kind"] == kind for c in _pod_spec(r)["containers"]]


def _workloads() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _k8s_files():
        for resource in _k8s(path.name):
            if resource["kind"] in {"Deployment", "StatefulSet", "Job"}:
                yield f"{path.name}:{resource['metadata']['name']}", resource


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@pytest.mark.parametrize("path", _k8s_files(), ids=lambda p: p.name)
def test_k8s_manifests_are_valid_kubernetes_resources(path: Path) -> None:
    resources = _k8s(path.name)
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        assert resource["metadata"].get("namespace", "concordose") == "concordose"


def test_the_validator_rejects_a_broken_manifest() -> None:
    (deployment,) = [r for r in _k8s("prefect-server.yaml") if r["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    expected = {p.name for p in _k8s_files()} - {"secret.example.yaml"}
    assert set(kustomization["resources"]) == expected
    (generated,) = kustomization["configMapGenerator"]
    assert generated["name"] == "concordose-work-pool"
    assert all((K8S / name).is_file() for name in generated["files"])


def test_k8s_receiver_is_a_statefulset_with_a_spool_claim_and_a_dicom_service() -> None:
    resources = _k8s("receiver.yaml")
    (statefulset,) = [r for r in resources if r["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (container,) = _pod_spec(statefulset)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = container["args"]
    assert mounts[claim["metadata"]["name"]] == args[args.index("--spool") + 1]
    assert args[args.index("--port") + 1] == "11112"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    assert statefulset["spec"]["serviceName"] in services
    dicom = services["concordose-receiver"]["spec"]
    assert [p["port"] for p in dicom["ports"]] == [11112]
    assert dicom["selector"].items() <= labels.items()
    # The flow-run jobs mount that claim as the StatefulSet names it.
    template = json.loads((K8S / "base-job-template.json").read_text())
    volumes = _pod_spec(template["job_configuration"]["job_manifest"])["volumes"]
    claim_name = f"{claim['metadata']['name']}-{statefulset['metadata']['name']}-0"
    assert {"name": "spool", "persistentVolumeClaim": {"claimName": claim_name}} in volumes


def test_k8s_receiver_exposes_the_configured_metrics_port() -> None:
    settings = _k8s("configmap.yaml")[0]["data"]
    (receiver,) = _containers(_k8s("receiver.yaml"), "StatefulSet")
    ports = {p["name"]: p["containerPort"] for p in receiver["ports"]}
    assert ports["metrics"] == int(settings["CONCORDOSE_METRICS_PORT"])
    assert _env_file(DEPLOY / "concordose.env")["CONCORDOSE_METRICS_PORT"] == str(ports["metrics"])


def test_k8s_prefect_server_and_worker() -> None:
    server = _k8s("prefect-server.yaml")
    (container,) = _containers(server, "Deployment")
    assert container["args"][:3] == ["prefect", "server", "start"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
    (service,) = [r for r in server if r["kind"] == "Service"]
    assert [p["port"] for p in service["spec"]["ports"]] == [4200]
    settings = _k8s("configmap.yaml")[0]["data"]
    assert settings["PREFECT_API_URL"] == "http://prefect-server.concordose.svc:4200/api"

    worker = _k8s("worker.yaml")
    container, sidecar = _containers(worker, "Deployment")
    assert sidecar["name"] == "metrics"  # test_flow_run_metrics_reach_an_endpoint_…
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert args[args.index("--type") + 1] == "kubernetes"
    assert args[args.index("--pool") + 1] == "concordose-process"
    # Its service account may create and watch the flow-run jobs and their pods.
    (deployment,) = [r for r in worker if r["kind"] == "Deployment"]
    account = _pod_spec(deployment)["serviceAccountName"]
    (binding,) = [r for r in worker if r["kind"] == "RoleBinding"]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "concordose"} in binding[
        "subjects"
    ]
    (role,) = [r for r in worker if r["kind"] == "Role"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for needed in [("batch", "jobs", v) for v in ("create", "get", "watch", "delete")] + [
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    ]:
        assert needed in granted, needed
    # The registration creates that pool as type kubernetes with the bundled job template.
    (register,) = _containers(_k8s("register.yaml"), "Job")
    script = " ".join(register["args"])
    assert "work-pool create concordose-process --type kubernetes" in script
    assert "--base-job-template /etc/concordose/work-pool/base-job-template.json" in script
    assert "deploy --prefect-file /opt/concordose/prefect.yaml --all" in script


def test_k8s_containers_have_resources_probes_and_run_unprivileged() -> None:
    for name, workload in _workloads():
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            resources = container["resources"]
            assert resources["requests"], name
            assert resources["limits"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            if workload["kind"] != "Job":
                assert {"readinessProbe", "livenessProbe"} <= set(container), name


def test_k8s_secrets_are_secret_references_never_values() -> None:
    for name, workload in _workloads():
        for container in _pod_spec(workload)["containers"]:
            for variable, entry in _env(container).items():
                if variable in SECRET_NAMES:
                    assert "value" not in entry, f"{name}: {variable} inline"
                    assert "secretKeyRef" in entry["valueFrom"], f"{name}: {variable}"
    settings = _k8s("configmap.yaml")[0]["data"]
    assert not set(settings) & SECRET_NAMES
    examples = _k8s("secret.example.yaml")
    assert {s["metadata"]["name"] for s in examples} == {"concordose-secrets", "prefect-database"}
    for secret in examples:
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {""}, "no value is ever committed"
        assert set(secret["stringData"]) <= SECRET_NAMES
    assert (
        "secret.example.yaml"
        not in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    )


def test_k8s_every_prefect_client_has_the_auth_string() -> None:
    secret_keys = {s["metadata"]["name"]: set(s["stringData"]) for s in _k8s("secret.example.yaml")}
    for name, workload in _workloads():
        for container in _pod_spec(workload)["containers"]:
            if container["args"][:3] == ["concordose", "metrics", "serve"]:
                continue  # reads a folder of counts; talks to no Prefect server
            env = _env(container)
            variable = (
                "PREFECT_SERVER_API_AUTH_STRING"
                if container["args"][:2] == ["prefect", "server"]
                else "PREFECT_API_AUTH_STRING"
            )
            reference = env[variable]["valueFrom"]["secretKeyRef"]
            assert reference["key"] in secret_keys[reference["name"]], name
    # The flow-run jobs: the whole Secret (its keys are variable names) and the settings.
    template = json.loads((K8S / "base-job-template.json").read_text())
    (job,) = _pod_spec(template["job_configuration"]["job_manifest"])["containers"]
    assert {"secretRef": {"name": "concordose-secrets"}} in job["envFrom"]
    assert {"configMapRef": {"name": "concordose-settings"}} in job["envFrom"]
    assert "PREFECT_API_AUTH_STRING" in secret_keys["concordose-secrets"]


def test_k8s_settings_names_are_settings_fields() -> None:
    names = set(_k8s("configmap.yaml")[0]["data"])
    names |= set(_k8s("secret.example.yaml")[0]["stringData"])
    for _, workload in _workloads():
        for container in _pod_spec(workload)["containers"]:
            names |= set(_env(container))
    assert {"CONCORDOSE_OUTPUT_URI", "CONCORDOSE_PSEUDONYM_KEY"} <= names
    assert not _unknown_settings(names)


def _render(value: Any, defaults: dict[str, Any]) -> Any:
    """A job template with each ``{{ variable }}`` replaced by the variable's default, as the
    worker renders it for a deployment that overrides nothing (keys whose default is None
    dropped, ``env`` given as the list the worker builds)."""
    if isinstance(value, dict):
        rendered = {k: _render(v, defaults) for k, v in value.items()}
        return {k: v for k, v in rendered.items() if v is not None}
    if isinstance(value, list):
        return [_render(v, defaults) for v in value]
    if isinstance(value, str) and (match := re.fullmatch(r"\{\{ (\w+) \}\}(.*)", value)):
        default = defaults.get(match.group(1))
        if match.group(1) == "env":
            return [{"name": "PREFECT__FLOW_RUN_ID", "value": "00000000"}]
        if match.group(1) == "name":
            return "flow-run" + match.group(2)
        return default if not match.group(2) else f"{default}{match.group(2)}"
    return value


def test_k8s_work_pool_job_template_renders_a_valid_job() -> None:
    template = json.loads((K8S / "base-job-template.json").read_text())
    properties = template["variables"]["properties"]
    defaults = {name: spec.get("default") for name, spec in properties.items()}
    assert defaults["namespace"] == "concordose"
    assert defaults["image"] == "concordose:latest"
    job = _render(template["job_configuration"]["job_manifest"], defaults)
    pod = _pod_spec(job)
    # prefect-kubernetes requires these two in the pod spec (its job manifest validation), where
    # Kubernetes has no such fields: the API server drops them. Checked present, then removed
    # for the strict schema.
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    accounts = {r["metadata"]["name"] for r in _k8s("worker.yaml") if r["kind"] == "ServiceAccount"}
    assert pod["serviceAccountName"] in accounts
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["resources"]["limits"]["memory"] == defaults["memory_limit"]


# ---------------------------------------------------------------------------------------------
# systemd units


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section → key → values (keys may repeat; ``\\`` continues a line)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / name).read_text())
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectControlGroups": "true",
    "RestrictSUIDSGID": "true",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("name", UNITS)
def test_systemd_units_run_hardened_from_the_installed_package(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    assert (service["User"], service["Group"]) == (["concordose"], ["concordose"])
    assert service["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    (environment_file,) = service["EnvironmentFile"]
    assert environment_file.startswith("/etc/concordose/"), "required, not optional (-)"
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith("/opt/concordose/.venv/bin/")
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{name}: {key}"
    # Secrets only through the environment file (root-only), never on a line of the unit.
    for assignment in service.get("Environment", []):
        variable = assignment.split("=", 1)[0]
        assert variable not in SECRET_NAMES, f"{name}: {variable}"
        assert not _unknown_settings({variable}), f"{name}: {variable}"


def test_systemd_units_start_the_server_worker_and_receiver() -> None:
    server = shlex.split(_unit("prefect-server.service")["Service"]["ExecStart"][0])
    assert server[1:3] == ["server", "start"]
    worker = shlex.split(_unit("prefect-worker.service")["Service"]["ExecStart"][0])
    assert worker[1:3] == ["worker", "start"]
    assert worker[worker.index("--pool") + 1] == "concordose-process"
    receiver = shlex.split(_unit("concordose-receiver.service")["Service"]["ExecStart"][0])
    assert receiver[1] == "receive"
    # The environment files document the auth string for the server and for the clients.
    assert "PREFECT_SERVER_API_AUTH_STRING=" in (DEPLOY / "prefect-server.service").read_text()
    for client in ("prefect-worker.service", "concordose-receiver.service"):
        assert "PREFECT_API_AUTH_STRING" in (DEPLOY / client).read_text(), client


# ---------------------------------------------------------------------------------------------
# Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    # Comment lines are dropped before continuations are joined (as Docker does).
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            instructions.append((instruction.upper(), arguments.strip()))
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_the_image_is_multi_stage_and_installs_the_built_wheel() -> None:
    build, runtime = _stages()
    assert any(i == "RUN" and "pip wheel" in a and "/dist" in a for i, a in build)
    copies = [a for i, a in runtime if i == "COPY"]
    assert any(a.startswith("--from=build /dist/") for a in copies)
    # The runtime stage never copies the checkout: only the wheel, the entrypoint, prefect.yaml.
    assert not any(re.fullmatch(r"(--\S+ )*\. .*", a) for a in copies), copies
    installs = [a for i, a in runtime if i == "RUN" and "pip install" in a]
    assert any(re.search(r"pip install [^&]*concordose-\*\.whl", a) for a in installs)
    assert not any(re.search(r"pip install [^&]*(-e|--editable) ", a) for a in installs)
    assert ("COPY", "--chmod=0644 deploy/prefect.yaml /opt/concordose/prefect.yaml") in runtime
    for arguments in copies:
        if not arguments.startswith("--from="):
            source = next(a for a in arguments.split() if not a.startswith("--"))
            assert (REPO / source).is_file(), f"COPY {arguments}: no {source}"


def test_the_image_runs_unprivileged_and_holds_no_secret() -> None:
    runtime = _stages()[-1]
    users = [a for i, a in runtime if i == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # The last USER comes after every RUN (nothing after it runs as root).
    last_user = max(n for n, (i, _) in enumerate(runtime) if i == "USER")
    assert all(i != "RUN" for i, _ in runtime[last_user:])
    secret_words = re.compile(r"KEY|SECRET|PASSWORD|AUTH|TOKEN|CREDENTIAL", re.IGNORECASE)
    for instruction, arguments in _dockerfile():
        if instruction in {"ENV", "ARG"}:
            names = re.findall(r"(\w+)=", arguments) or [arguments.split()[0]]
            assert not [n for n in names if secret_words.search(n)], arguments
        if instruction == "COPY":
            assert not re.search(r"secrets|\.env\b", arguments), arguments
    assert ("ENTRYPOINT", '["concordose-entrypoint"]') in runtime
    exposed = {p for i, a in runtime if i == "EXPOSE" for p in a.split()}
    assert {"11112", "4200"} <= exposed
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "*.env", "deploy/secrets/"} <= set(ignored)


def test_flow_run_metrics_reach_an_endpoint_in_compose_and_kubernetes() -> None:
    """The worker's flow runs write prometheus_client multiprocess files where a long-lived
    ``concordose metrics serve`` reads them (issue 19 item 6): the same folder on the same
    volume, in compose (a tmpfs volume) and in Kubernetes (the spool claim's ``metrics`` folder,
    mounted by the flow-run Job template and the worker's sidecar)."""
    services = _compose()["services"]
    folder = "/run/concordose-metrics"
    assert services["worker"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == folder
    assert services["worker-metrics"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == folder
    assert f"worker-metrics:{folder}" in services["worker"]["volumes"]
    assert f"worker-metrics:{folder}" in services["worker-metrics"]["volumes"]
    assert services["worker-metrics"]["command"][:3] == ["concordose", "metrics", "serve"]
    assert "ports" not in services["worker-metrics"]
    assert _compose()["volumes"]["worker-metrics"]["driver_opts"]["type"] == "tmpfs"

    template = json.loads((DEPLOY / "k8s" / "base-job-template.json").read_text())
    assert template["variables"]["properties"]["env"]["default"] == {
        "PROMETHEUS_MULTIPROC_DIR": folder
    }
    job_mounts = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]["volumeMounts"]
    assert {"name": "spool", "mountPath": folder, "subPath": "metrics"} in job_mounts
    worker = next(
        doc
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / "worker.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    )
    pod = worker["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "metrics")
    assert sidecar["args"][:3] == ["concordose", "metrics", "serve"]
    assert {"name": "PROMETHEUS_MULTIPROC_DIR", "value": folder} in sidecar["env"]
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == folder)
    assert mount["subPath"] == "metrics"
    claim = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert claim["persistentVolumeClaim"]["claimName"] == "spool-concordose-receiver-0"
