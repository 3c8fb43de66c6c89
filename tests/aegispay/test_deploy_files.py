"""The Dockerfile and docker-compose.yml, checked as far as possible without a Docker engine (none
runs here or on CI): compose parses, every service runs a command the image has, every variable
it sets is one the settings read, and the queues and paths it names are the project's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "relay", "beat")
# Read by the settings through env(...), by gunicorn's configuration or by the image itself.
SETTINGS_SOURCE = (REPO / "aegispay" / "settings.py").read_text()
GUNICORN_SOURCE = (REPO / "aegispay" / "gunicorn.py").read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def read_variables() -> set[str]:
    """Every environment variable the settings or gunicorn's configuration read."""
    names = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', SETTINGS_SOURCE))
    names |= set(re.findall(r'_required_url\(\s*"([A-Z_]+)"', SETTINGS_SOURCE))
    names |= set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', GUNICORN_SOURCE))
    return names


def test_compose_sets_only_variables_the_settings_read(compose: dict[str, Any]) -> None:
    known = read_variables()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "SECURE_SSL_REDIRECT"} <= known
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "aegispay:local"
        assert set(service["environment"]) <= known, name


def test_every_service_runs_a_command_the_image_has(compose: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    commands = get_commands()
    for name in APP_SERVICES:
        argv = compose["services"][name].get("command")
        if argv is None:  # the image's own command: gunicorn with the project's configuration
            assert name == "web"
            assert 'CMD ["gunicorn", "-c", "python:aegispay.gunicorn", "aegispay.wsgi"]' in (
                dockerfile
            )
            continue
        if argv[:2] == ["python", "manage.py"]:
            assert argv[2] in commands, argv
        else:
            assert argv[:5] == ["python", "-m", "celery", "-A", "aegispay"], argv
            assert argv[5] in {"worker", "beat"}, argv
    relay = compose["services"]["relay"]["command"]
    # Compose sets no CELERY_QUEUE: the relay's queue is the settings' default outbox queue.
    assert 'env("CELERY_QUEUE", default="aegispay")' in SETTINGS_SOURCE
    assert relay[relay.index("-Q") + 1] == "aegispay.outbox"
    assert f"{settings.CELERY_TASK_DEFAULT_QUEUE}.outbox" == settings.CELERY_OUTBOX_QUEUE


def test_services_start_after_the_one_shot_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "migrate" not in " ".join(map(str, services["web"].get("command") or []))
    for name in ("web", "worker", "relay", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_the_image_installs_the_lock_runs_unprivileged_and_checks_a_real_path() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert re.search(r"^USER aegispay$", dockerfile, re.MULTILINE)
    assert "collectstatic" in dockerfile
    health = re.search(r"/health/live", dockerfile)
    assert health is not None
    assert resolve("/health/live").url_name == "health-live"
    assert (REPO / ".dockerignore").read_text().split().count(".aegispay") == 1
