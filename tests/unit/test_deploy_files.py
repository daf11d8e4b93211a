"""deploy/, checked offline (no container engine or cluster here): the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate, strict: an unknown field fails), the compose file against the
compose specification (check-jsonschema's vendored compose-spec), the Helm values' Kubernetes objects
against the same Kubernetes schemas and their code locations against workspace.yaml, and the images'
Dockerfiles for pinned bases, an unprivileged user and no secret. Nothing here builds or runs them."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ["1.30", "1.37"]
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
SECRET_WORDS = re.compile(r"(password|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_-]{8,}", re.I)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_schemas(version):
    kinds = []
    for path in MANIFESTS:
        for doc in _docs(path):
            kubernetes_validate.validate(doc, version, strict=True)
            kinds.append((doc["kind"], doc["metadata"]["name"]))
    assert {("Deployment", "ct-model-server"), ("Service", "ct-model-server"), ("Deployment", "ct-mlflow"),
            ("Service", "ct-mlflow")} <= set(kinds)


def test_the_validator_rejects_what_a_cluster_would():
    doc = _docs(DEPLOY / "k8s" / "model-server.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["port"] = 8000  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_pods_run_unprivileged_and_take_secrets_from_secrets():
    for path in MANIFESTS:
        text = path.read_text()
        assert not SECRET_WORDS.search(text), path
        for doc in _docs(path):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
            for container in pod["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert not container["image"].endswith(":latest") and ":" in container["image"]
                for env in container.get("env", []):
                    if any(w in env["name"] for w in ("TOKEN", "SECRET", "BACKEND_STORE")):
                        assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def test_compose_file_validates_against_the_compose_spec_and_mirrors_the_legacy_stack():
    proc = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
                           "vendor.compose-spec", str(DEPLOY / "compose.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "airflow-init", "airflow-webserver", "airflow-scheduler"} <= set(services)
    assert services["airflow-webserver"]["ports"] == ["127.0.0.1:8085:8085"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:${POSTGRES_PASSWORD:?")
    assert services["airflow-init"]["command"][:4] == ["python", "-m", "airflow_compat", "start"]
    assert not SECRET_WORDS.search((DEPLOY / "compose.yaml").read_text())


def _k8s_definitions(version: str) -> dict:
    """The Kubernetes object schemas kubernetes-validate ships (the chart's schema refers to them online)."""
    import importlib.resources

    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local"
    return json.loads((root / "_definitions.json").read_text())


def test_helm_values_k8s_launcher_postgres_and_one_user_deployment_per_code_location():
    values = yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlDatabase"]
    assert values["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in values["postgresql"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    modules = {e["python_module"]["module_name"] for e in workspace}
    deployments = values["dagster-user-deployments"]["deployments"]
    assert {d["dagsterApiGrpcArgs"][1] for d in deployments} == modules
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert all(d["image"]["repository"] == "registry.example.org/ct/platform" for d in deployments)
    assert "dagster-k8s==0.29.27" in dockerfile  # the launcher's library, in the line of dagster 1.13.27

    # The Kubernetes objects inside the values, against the Kubernetes schemas, refs resolved locally.
    definitions = _k8s_definitions(K8S_VERSIONS[-1])
    from referencing import Registry, Resource

    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))

    def check(obj: dict, definition: str) -> None:
        schema = {"$ref": f"{definitions['$id']}#/$defs/{definition}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(obj)

    for d in deployments:
        check(d["podSecurityContext"], "io.k8s.api.core.v1.PodSecurityContext")
        for env in d.get("env", []):
            check(env, "io.k8s.api.core.v1.EnvVar")
        if "resources" in d:
            check(d["resources"], "io.k8s.api.core.v1.ResourceRequirements")
    run_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    check(run_config["podSpecConfig"]["securityContext"], "io.k8s.api.core.v1.PodSecurityContext")
    check(run_config["containerConfig"]["resources"], "io.k8s.api.core.v1.ResourceRequirements")
    with pytest.raises(jsonschema.ValidationError):
        check({"runAsUser": "root"}, "io.k8s.api.core.v1.PodSecurityContext")


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*Dockerfile")))  # every image: the platform, Airflow, the model server
def test_images_pin_their_base_and_run_unprivileged(name):
    text = (DEPLOY / name).read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", b) and "latest" not in b for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not SECRET_WORDS.search(text)
    for pins in re.findall(r"pip install ([^\n\\]+)", text):
        for requirement in pins.split():
            if not requirement.startswith("-") and requirement not in (".",) and not requirement.startswith("/"):
                assert "==" in requirement, requirement
