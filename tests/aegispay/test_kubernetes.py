"""deploy/kubernetes, validated offline against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field fails too), and checked against the project: every container runs a
command the image has, reads only settings that exist, and probes paths that are served."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

from tests.aegispay.test_deploy_files import read_variables

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def resources() -> dict[str, dict[str, Any]]:
    """The kustomization's resources, by file name."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return {
        name: yaml.safe_load((KUBERNETES / name).read_text()) for name in kustomization["resources"]
    }


def pods() -> dict[str, dict[str, Any]]:
    """Every pod template, by the name of the object that holds it."""
    return {
        resource["metadata"]["name"]: resource["spec"]["template"]["spec"]
        for resource in resources().values()
        if resource["kind"] in {"Deployment", "Job"}
    }


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    names = sorted(resources())
    assert sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml") == (
        names
    )
    result = validate(*(KUBERNETES / name for name in names))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(names)


def test_the_validator_refuses_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "web-deployment.yaml"
    shutil.copy(KUBERNETES / "web-deployment.yaml", broken)
    document = yaml.safe_load(broken.read_text())
    document["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}  # a typo
    broken.write_text(yaml.safe_dump(document))
    assert validate(broken).returncode != 0


def test_the_web_tier_has_its_service_autoscaler_budget_and_probes() -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources().values()}
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (kind, "aegispay-web") in kinds
    assert {("Deployment", f"aegispay-{n}") for n in ("worker", "relay", "beat")} <= kinds
    assert ("Job", "aegispay-migrate") in kinds
    web = pods()["aegispay-web"]["containers"][0]
    config = resources()["configmap.yaml"]["data"]
    allowed = config["ALLOWED_HOSTS"].split(",")
    for probe, name in (("livenessProbe", "health-live"), ("readinessProbe", "health-ready")):
        get = web[probe]["httpGet"]
        assert resolve(get["path"]).url_name == name
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"]
    assert "localhost" in allowed


def test_every_container_runs_a_command_the_image_has_with_settings_that_exist() -> None:
    commands = get_commands()
    known = read_variables()
    config, secret = resources()["configmap.yaml"], resources()["secret.yaml"]
    assert set(config["data"]) | set(secret["stringData"]) <= known
    for name, pod in pods().items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["image"] == "aegispay", name
            assert {"configMapRef": {"name": "aegispay"}} in container["envFrom"]
            assert {"secretRef": {"name": "aegispay"}} in container["envFrom"]
            assert "limits" in container["resources"] and "requests" in container["resources"]
            argv = container.get("command")
            if argv is None:
                assert name == "aegispay-web"  # the image's command: gunicorn
            elif argv[0] == "sh":
                assert "python manage.py migrate --check" in argv[2]
            elif argv[:2] == ["python", "manage.py"]:
                assert argv[2] in commands
            else:
                assert argv[:4] == ["celery", "-A", "aegispay", argv[3]]
                assert argv[3] in {"worker", "beat"}
    relay = pods()["aegispay-relay"]["containers"][0]["command"]
    assert relay[relay.index("-Q") + 1] == f"{config['data']['CELERY_QUEUE']}.outbox"


def test_beat_runs_a_standby_beside_its_leader() -> None:
    from django.conf import settings

    beat = resources()["beat-deployment.yaml"]["spec"]
    assert beat["replicas"] == 2  # one schedules (a lock in Redis: tests/aegispay/test_beat.py)
    assert settings.CELERY_BEAT_SCHEDULER == "redbeat.RedBeatScheduler"


@pytest.mark.parametrize("name", ["worker-deployment.yaml", "relay-deployment.yaml"])
def test_workers_outlive_their_longest_task_when_stopped(name: str) -> None:
    from django.conf import settings

    grace = resources()[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.CELERY_TASK_TIME_LIMIT
