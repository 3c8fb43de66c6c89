"""The launcher's command line: ``run`` (migrate, seed, web + worker + relay + beat), ``test``,
``manage``, ``bench`` (each one foreground command with the services' URLs) and ``stop``.

The project is run only as child processes (``manage.py``, ``celery -A aegispay``, pytest,
``bench/NAME.py``); nothing of it is imported here.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from embedded.layout import REPO_DIR, STATE_DIR, Layout, write_private
from embedded.processes import LOCAL_HOST, port_is_free, say
from embedded.sharing import Services, ensure_services, release_services, stop_all
from embedded.supervise import (
    Child,
    Interrupted,
    SignalLatch,
    become_subreaper,
    reap_orphans,
    spawn,
    terminate_children,
)

RUN_REDIS_DB = 0
TEST_REDIS_DB = 1


def development_secret_key(layout: Layout) -> str:
    """This checkout's development SECRET_KEY: generated once, kept in ``secret_key``."""
    path = layout.secret_key_file
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 50:
        key = secrets.token_urlsafe(50)
        write_private(path, key + "\n")
    return key


def development_field_encryption_key(layout: Layout) -> str:
    """This checkout's development FIELD_ENCRYPTION_KEYS: one Fernet key (32 random bytes in
    URL-safe base64), generated once, kept in ``field_encryption_key``. The secrets that
    ``make run`` and ``make test`` store encrypted stay readable from one run to the next."""
    path = layout.field_encryption_key_file
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    try:
        valid = len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeError):
        valid = False
    if not valid:
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
        write_private(path, key + "\n")
    return key


def child_env(
    services: Services, redis_db: int, layout: Layout, *, debug: bool = False
) -> dict[str, str]:
    """The environment for child processes: ours plus the chosen service URLs and, unless
    given, the checkout's development SECRET_KEY and FIELD_ENCRYPTION_KEYS and (``debug``: run,
    manage) DEBUG=true."""
    env = dict(os.environ)
    env["DATABASE_URL"] = services.database_url
    env["REDIS_URL"] = services.redis_url(redis_db)
    env.setdefault("SECRET_KEY", development_secret_key(layout))
    env.setdefault("FIELD_ENCRYPTION_KEYS", development_field_encryption_key(layout))
    if debug:
        env.setdefault("DEBUG", "true")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# What a process started by hand beside ``run`` needs to find the same servers and settings.
RUN_FILE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG")


def write_run_file(layout: Layout, env: Mapping[str, str]) -> None:
    """Publish this ``run``'s pid and variables (see ``Layout.run_file``)."""
    variables = {name: env[name] for name in RUN_FILE_VARIABLES if name in env}
    write_private(layout.run_file, json.dumps({"pid": os.getpid(), "env": variables}) + "\n")


def remove_run_file(layout: Layout) -> None:
    """Withdraw the run file, if it is still this launcher's."""
    try:
        if json.loads(layout.run_file.read_text()).get("pid") == os.getpid():
            layout.run_file.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def manage_argv(*args: str) -> list[str]:
    """argv for ``python manage.py <args>`` with this interpreter."""
    return [sys.executable, str(REPO_DIR / "manage.py"), *args]


def has_manage_command(name: str, env: Mapping[str, str]) -> bool:
    """True when ``manage.py <name>`` exists in the project."""
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        manage_argv("help", name), cwd=REPO_DIR, env=dict(env), capture_output=True, check=False
    )
    return result.returncode == 0


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _print_banner(port: int, services: Services, env: Mapping[str, str]) -> None:
    """Print where everything is."""
    lines = [
        "",
        "AegisPay is running",
        f"  web        http://{LOCAL_HOST}:{port}/",
        f"  postgres   {env['DATABASE_URL']}   [{services.notes.get('postgres', '')}]",
        f"  redis      {env['REDIS_URL']}   [{services.notes.get('redis', '')}]",
        f"  data       {STATE_DIR}",
        "  press Ctrl-C to stop",
        "",
    ]
    print("\n".join(lines), flush=True)


def outbox_queue(env: Mapping[str, str]) -> str:
    """The relay's Celery queue, named as aegispay/settings.py names it."""
    default = env.get("CELERY_QUEUE", "aegispay")
    return env.get("CELERY_OUTBOX_QUEUE", f"{default}.outbox")


def cmd_run(port: int, layout: Layout) -> int:
    """Ensure services, migrate, seed, then run web + worker + beat in the foreground until a
    stop signal or until one of them dies; then stop them all (whole process groups) and the
    servers this launcher owns. Returns 0 after a signal, 1 when something failed."""
    latch = SignalLatch()
    become_subreaper()
    services: Services | None = None
    children: list[Child] = []
    code = 0
    try:
        if not port_is_free(LOCAL_HOST, port):
            say(f"port {port} on {LOCAL_HOST} is in use; pass --port N or set PORT")
            return 1
        with latch.deferred():
            services = ensure_services(layout, os.environ)
        env = child_env(services, RUN_REDIS_DB, layout, debug=True)
        say("migrating")
        subprocess.run(manage_argv("migrate", "--noinput"), cwd=REPO_DIR, env=env, check=True)  # noqa: S603
        if has_manage_command("seed_demo", env):
            subprocess.run(manage_argv("seed_demo"), cwd=REPO_DIR, env=env, check=True)  # noqa: S603
        else:
            say("manage.py seed_demo does not exist yet; skipping the demo merchant")
        celery = [sys.executable, "-m", "celery", "-A", "aegispay"]
        commands = {
            # The web tier as production serves it: gunicorn with the project's configuration
            # (static files from WhiteNoise, which finds them in the apps under DEBUG).
            "web": [
                *[sys.executable, "-m", "gunicorn", "-c", "python:aegispay.gunicorn"],
                *["--bind", f"{LOCAL_HOST}:{port}", "aegispay.wsgi"],
            ],
            "worker": [
                *celery,
                *["worker", "--loglevel", "INFO", "--concurrency", "2"],
                *["--without-gossip", "--without-mingle"],
            ],
            # The outbox relay's own worker (settings.CELERY_OUTBOX_QUEUE: the default queue's
            # name + ".outbox"), so events are published without waiting behind gateway calls.
            "relay": [
                *celery,
                *["worker", "--loglevel", "INFO", "--concurrency", "1", "-n", "relay@%h"],
                *["--without-gossip", "--without-mingle", "-Q", outbox_queue(env)],
            ],
            "beat": [
                *celery,
                *["beat", "--loglevel", "INFO"],
            ],
        }
        with latch.deferred():
            children.extend(spawn(name, argv, env) for name, argv in commands.items())
        write_run_file(layout, env)  # migrated: a manage.py beside this run may start now
        _print_banner(port, services, env)
        latch.mode = "record"
        while latch.received is None:
            dead = [c for c in children if c.proc.poll() is not None]
            if dead:
                for child in dead:
                    say(f"{child.name} exited with code {child.proc.returncode}; stopping")
                code = 1
                break
            time.sleep(0.2)
        if latch.received is not None:
            say(f"{signal.Signals(latch.received).name} received; stopping")
    except Interrupted as exc:
        say(f"{exc} received; stopping")
    except subprocess.CalledProcessError as exc:
        say(f"{' '.join(map(str, exc.cmd[1:]))} failed with exit code {exc.returncode}")
        code = 1
    except RuntimeError as exc:
        say(str(exc))
        code = 1
    finally:
        latch.mode = "record"
        remove_run_file(layout)
        terminate_children(children)
        if services is not None:
            release_services(layout, services)
        reap_orphans()
    say("stopped")
    return code


def cmd_foreground(
    argv: Sequence[str], redis_db: int, layout: Layout, *, debug: bool = False
) -> int:
    """Ensure services, run ``argv`` with their URLs (same process group, so a Ctrl-C from
    the terminal reaches it directly; SIGTERM and SIGHUP are forwarded), stop the servers this
    launcher owns, and return the command's exit code."""
    latch = SignalLatch()
    become_subreaper()
    services: Services | None = None
    try:
        with latch.deferred():
            services = ensure_services(layout, os.environ)
        env = child_env(services, redis_db, layout, debug=debug)
        latch.mode = "record"
        proc = subprocess.Popen(list(argv), cwd=REPO_DIR, env=env)  # noqa: S603
        latch.forward_to = proc
        latch.forward_signals = frozenset({signal.SIGTERM, signal.SIGHUP})
        latch.mode = "forward"
        if latch.received in latch.forward_signals:
            proc.send_signal(latch.received)
        return exit_code_of(proc.wait())
    except Interrupted as exc:
        say(f"{exc} received; stopping")
        return 128 + exc.signum
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        latch.mode = "record"
        if services is not None:
            release_services(layout, services)
        reap_orphans()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``test`` and ``manage`` take the rest of argv verbatim)."""
    parser = argparse.ArgumentParser(
        prog="python -m embedded",
        description="Run AegisPay with embedded PostgreSQL and Redis unless "
        "DATABASE_URL / REDIS_URL are set.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="migrate, seed, run web + worker + beat")
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="web server port (default: $PORT or 8000)",
    )
    sub.add_parser("test", help="run pytest; the remaining arguments go to pytest")
    sub.add_parser("manage", help="run a manage.py command; the remaining arguments go to it")
    sub.add_parser("bench", help="run a bench/ script (bench/NAME.py); the rest goes to it")
    sub.add_parser("stop", help="stop the embedded servers (refused while a launcher uses them)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    layout = Layout(STATE_DIR)
    if args[:1] == ["test"]:
        return cmd_foreground([sys.executable, "-m", "pytest", *args[1:]], TEST_REDIS_DB, layout)
    if args[:1] == ["manage"]:
        return cmd_foreground(manage_argv(*args[1:]), RUN_REDIS_DB, layout, debug=True)
    if args[:1] == ["bench"] and len(args) > 1:
        script = REPO_DIR / "bench" / f"{args[1]}.py"
        return cmd_foreground([sys.executable, str(script), *args[2:]], TEST_REDIS_DB, layout)
    options = build_parser().parse_args(args)
    if options.command == "run":
        return cmd_run(options.port, layout)
    return stop_all(layout)
