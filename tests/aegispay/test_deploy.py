"""Settings as an operator meets them (aegispay/settings.py): production is the default, what is
missing stops start-up with a message that says so, ``check --deploy`` is clean with the
documented production environment, and a ``manage.py`` started by hand beside ``make run``
finds its servers with no environment set.

Each case starts a fresh interpreter: settings are read once per process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from embedded.processes import pick_free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"  # 53, 37 distinct
# A Fernet key (32 bytes in URL-safe base64), as Fernet.generate_key() makes them.
FERNET_KEY = "ZmVybmV0LWtleS1mb3ItdGhlLWRlcGxveS10ZXN0cyE="
# Variables the settings read that a test controls; everything else is inherited.
CONTROLLED = (
    "DEBUG",
    "SECRET_KEY",
    "FIELD_ENCRYPTION_KEYS",
    "DATABASE_URL",
    "REDIS_URL",
    "ALLOWED_HOSTS",
    "AEGISPAY_STATE_DIR",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
)


def environment(state_dir: Path, **variables: str) -> dict[str, str]:
    """This process's environment without the controlled variables, plus ``variables``; the
    state directory is the test's own (no ``make run`` of the checkout is seen)."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env["AEGISPAY_STATE_DIR"] = str(state_dir)
    env.update(variables)
    return env


def production(state_dir: Path, **variables: str) -> dict[str, str]:
    """The documented production environment (README, "Deploying")."""
    documented = {
        "SECRET_KEY": STRONG_KEY,
        "FIELD_ENCRYPTION_KEYS": FERNET_KEY,
        "ALLOWED_HOSTS": "pay.example.com",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://u@db/aegispay"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://redis:6379/0"),
    }
    return environment(state_dir, **(documented | variables))


def manage(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def python(env: Mapping[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after ``django.setup()`` with the project's settings."""
    setup = "import django, os\nos.environ['DJANGO_SETTINGS_MODULE'] = 'aegispay.settings'\n"
    return subprocess.run(
        [sys.executable, "-c", setup + "django.setup()\n" + code],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def printed(env: Mapping[str, str], code: str) -> str:
    """The last line ``code`` printed, after it ran to the end (``python``)."""
    result = python(env, code)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[-2]


def test_check_deploy_is_clean_with_the_documented_production_environment(
    tmp_path: Path,
) -> None:
    result = manage(production(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_production_defaults_are_on_without_debug(tmp_path: Path) -> None:
    assert printed(
        production(tmp_path),
        "from django.conf import settings as s\n"
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER, s.WEBHOOK_ALLOW_PRIVATE_URLS)",
    ) == ("False True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') False")


def test_plain_http_is_redirected_to_https_but_probes_are_not(tmp_path: Path) -> None:
    assert printed(
        production(tmp_path),
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='pay.example.com')\n"
        "admin = c.get('/admin/login/')\n"
        "live = c.get('/health/live')\n"
        "proxied = c.get('/admin/login/', headers={'x-forwarded-proto': 'https'})\n"
        "print(admin.status_code, admin.get('Location'), live.status_code, "
        "proxied.status_code, proxied.get('Strict-Transport-Security'))",
    ) == (
        "301 https://pay.example.com/admin/login/ 200 200 max-age=31536000; "
        "includeSubDomains; preload"
    )


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "SECRET_KEY is not set"),
        ("short-but-secret", "SECRET_KEY is too weak"),
        ("django-insecure-" + "x1y2z3" * 10, "SECRET_KEY is too weak"),
        ("a" * 60, "SECRET_KEY is too weak"),  # one distinct character
    ],
)
def test_without_debug_a_missing_or_weak_secret_key_stops_start_up(
    tmp_path: Path, key: str, says: str
) -> None:
    result = manage(production(tmp_path, SECRET_KEY=key), "check")
    assert result.returncode != 0
    assert result.stderr.startswith(f"AegisPay cannot start: {says}")


def test_debug_runs_with_any_key(tmp_path: Path) -> None:
    result = manage(production(tmp_path, SECRET_KEY="", DEBUG="true"), "check")
    assert result.returncode == 0, result.stderr


def test_with_no_service_url_and_no_make_run_it_says_so_instead_of_dialing_localhost(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path, SECRET_KEY=STRONG_KEY)
    result = manage(env, "migrate", "--check")
    assert result.returncode != 0
    assert "DATABASE_URL is not set, and no make run is up in this checkout" in result.stderr
    assert result.stderr.startswith("AegisPay cannot start:")  # said once, no traceback
    assert "OperationalError" not in result.stderr  # nothing was dialed

    # A run.json left by a launcher that died is not a make run that is up.
    (tmp_path / "run.json").write_text(
        json.dumps({"pid": dead_pid(), "env": {"DATABASE_URL": "postgres://x@127.0.0.1/y"}})
    )
    again = manage(env, "migrate", "--check")
    assert "DATABASE_URL is not set, and no make run is up" in again.stderr


def dead_pid() -> int:
    """A pid that no process has (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- beside make run ---


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@pytest.fixture
def run_database() -> Iterator[str]:
    """A database of its own for the ``make run`` below (the test database stays untouched),
    on the server the suite uses; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_beside_run"
    params = {
        "host": connection.settings_dict["HOST"] or None,
        "port": connection.settings_dict["PORT"] or None,
        "user": connection.settings_dict["USER"] or None,
        "password": connection.settings_dict["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_path(settings.DATABASE_URL, f"/{name}")
    finally:
        with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _try(fetch: Any, url: str) -> Any:
    try:
        return fetch(url)
    except OSError:
        return None


def served(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local server
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.e2e
def test_manage_py_beside_make_run_finds_its_servers_with_no_environment(
    tmp_path: Path, run_database: str
) -> None:
    state = tmp_path / "state"
    port = pick_free_port()
    launcher_env = environment(
        state,
        DATABASE_URL=run_database,
        REDIS_URL=with_path(settings.REDIS_URL, "/13"),
        CELERY_QUEUE="beside_run",
    )
    log = (tmp_path / "run.log").open("w")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "embedded", "run", "--port", str(port)],
        cwd=REPO,
        env=launcher_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    by_hand = environment(state)  # no URL, no key, no DEBUG: only the checkout
    try:
        wait_until(
            lambda: (state / "run.json").exists() or launcher.poll() is not None, timeout=180
        )
        assert launcher.poll() is None, (tmp_path / "run.log").read_text()
        assert (state / "run.json").stat().st_mode & 0o077 == 0  # it holds the key

        created = manage(
            by_hand | {"DJANGO_SUPERUSER_PASSWORD": "a long enough password"},
            "createsuperuser",
            "--noinput",
            "--username",
            "ops",
            "--email",
            "ops@example.com",
        )
        assert created.returncode == 0, created.stdout + created.stderr
        found = manage(
            by_hand,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from django.conf import settings; "
            "print(User.objects.filter(username='ops', is_superuser=True).count(), "
            "settings.DEBUG)",
        )
        assert found.stdout.split("\n")[-2] == "1 True", found.stdout + found.stderr

        # make run serves as production does (gunicorn), and the pages render fully.
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: b"Booting worker" in (tmp_path / "run.log").read_bytes(), timeout=60)
        status, _, page = wait_until(lambda: _try(served, f"{base}/admin/login/"), timeout=60)
        css = re.search(rb'href="(/static/admin/css/base[^"]*\.css)"', page)
        assert status == 200 and css is not None, page[:1000]
        assert served(base + css.group(1).decode())[1].startswith("text/css")
        status, _, docs = served(f"{base}/api/docs/")
        script = re.search(rb'src="(/static/[^"]*swagger-ui-bundle[^"]*\.js)"', docs)
        assert status == 200 and script is not None, docs[:1000]
        assert "javascript" in served(base + script.group(1).decode())[1]
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        log.close()

    assert not (state / "run.json").exists()
    gone = manage(by_hand, "check")
    assert gone.stderr.startswith("AegisPay cannot start: SECRET_KEY is not set")
    assert "DATABASE_URL is not set, and no make run is up" in gone.stderr
    assert "REDIS_URL is not set, and no make run is up" in gone.stderr


def test_prepared_statements_are_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    """``DB_PREPARE_THRESHOLD`` (common/db.py): psycopg's threshold by default; empty turns
    preparing off for a pooler in transaction mode; anything else is refused at start."""
    show = (
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['OPTIONS']['prepare_threshold'])"
    )
    assert printed(production(tmp_path), show) == "5"
    assert printed(production(tmp_path, DB_PREPARE_THRESHOLD=""), show) == "None"
    assert printed(production(tmp_path, DB_PREPARE_THRESHOLD="0"), show) == "0"
    refused = python(production(tmp_path, DB_PREPARE_THRESHOLD="often"), show)
    assert refused.returncode != 0
    assert "DB_PREPARE_THRESHOLD must be a whole number or empty, not 'often'" in refused.stderr
