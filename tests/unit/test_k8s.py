"""The Kubernetes manifests in infra/k8s hang together with the code they run: the probes ask
routes the app has, every environment variable is one the cloud (or boto3, for the bucket)
reads, the containers' arguments are ones `dockyard` accepts, the image is the one
`make image` builds, and Kubernetes' own schemas accept every object (kubernetes-validate,
which carries them, when it is installed)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from dockyard.cloud import cli
from dockyard.cloud.app import create_app
from dockyard.cloud.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
IMAGE = "dockyard-cloud"  # infra/image/build.sh: dockyard-KIND
# The oldest Kubernetes whose schemas the manifests must pass (supported by its vendor
# until 2025; nothing here needs newer).
KUBERNETES = "1.30.0"
# Read by boto3's credential chain for the blob bucket, not by cloud/settings.py.
BOTO3 = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"}


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def objects() -> dict[str, dict[str, Any]]:
    """Every object the kustomization applies, by kind."""
    out: dict[str, dict[str, Any]] = {}
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = objects()["Deployment"]["spec"]["template"]["spec"]
    return spec


def test_the_kustomization_applies_every_manifest_here() -> None:
    listed = set(kustomization()["resources"])
    here = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == here
    assert set(objects()) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}


def test_replicas_roll_one_at_a_time_and_the_budget_and_service_select_them() -> None:
    o = objects()
    deployment = o["Deployment"]["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    assert o["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert o["Service"]["spec"]["selector"].items() <= labels.items()
    (container,) = pod()["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in o["Service"]["spec"]["ports"]:
        assert port["targetPort"] in ports
    assert ports["http"] == int(o["ConfigMap"]["data"]["DOCKYARD_PORT"])


def test_probes_ask_routes_the_app_has(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/d.db"))
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    (container,) = pod()["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
        assert container[probe]["httpGet"]["port"] in {p["name"] for p in container["ports"]}
    app.state.services.db.dispose()


def test_every_variable_is_one_the_cloud_or_boto3_reads() -> None:
    o = objects()
    known = {f"DOCKYARD_{name.upper()}" for name in Settings.model_fields} | BOTO3
    given = set(o["ConfigMap"]["data"]) | set(o["Secret"]["stringData"])
    assert given - known == set()
    # Production needs these three (cloud/settings.py); the secret ones only in the Secret.
    assert {"DOCKYARD_DATABASE_URL", "DOCKYARD_SECRET_KEY"} <= set(o["Secret"]["stringData"])
    assert "DOCKYARD_PUBLIC_URL" in o["ConfigMap"]["data"]
    assert o["Secret"]["stringData"]["DOCKYARD_DATABASE_URL"].startswith("postgresql+psycopg://")
    Settings(**{k.removeprefix("DOCKYARD_").lower(): v for k, v in o["ConfigMap"]["data"].items()})
    for container in [*pod()["initContainers"], *pod()["containers"]]:
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"dockyard-cloud"}
        assert {k for ref in container["envFrom"] for k in ref} == {"configMapRef", "secretRef"}
        assert all(env["name"] in known for env in container.get("env", []))


def test_the_schema_is_migrated_before_serving_and_not_again() -> None:
    (init,) = pod()["initContainers"]
    (container,) = pod()["containers"]
    assert cli.parser().parse_args(init["args"]).command == "migrate"
    serve = cli.parser().parse_args(container["args"])
    assert serve.command == "serve"
    assert serve.no_migrate


def test_the_image_is_the_one_make_image_builds_at_this_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (rename,) = kustomization()["images"]
    assert rename["name"] == IMAGE
    assert rename["newName"].rsplit("/", 1)[-1] == IMAGE
    assert rename["newTag"] == version
    for container in [*pod()["initContainers"], *pod()["containers"]]:
        assert container["image"] == IMAGE
    assert "name=dockyard-$kind" in (ROOT / "infra" / "image" / "build.sh").read_text()
    # The image's user (infra/image/customize.sh), with nothing to write but its volumes.
    assert pod()["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/dockyard" in mounts


def test_kubernetes_schemas_accept_every_object() -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for kind, obj in objects().items():
        try:
            validator.validate(obj, KUBERNETES, strict=True)
        except validator.ValidationError as e:
            pytest.fail(f"{kind}: {e}")
