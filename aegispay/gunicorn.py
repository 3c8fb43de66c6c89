"""gunicorn's configuration for the web tier: the image, compose and Kubernetes run

    gunicorn -c python:aegispay.gunicorn aegispay.wsgi

Every value can be changed from the environment (gunicorn also reads ``GUNICORN_CMD_ARGS``).
"""

from __future__ import annotations

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Worker processes: one per core the pod or container is given.
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)))
# Threads per worker: a request spends most of its time waiting on PostgreSQL and Redis, and a
# thread waiting releases the GIL. Measured (make serve-bench, README "Deploying"): on 2 cores,
# 2 gthread workers of 8 threads created the most payments per second in both rounds, 1.5 and
# 2.0 times 2 sync workers.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# gunicorn's gthread and sync workers, whose own answers (a request line or headers too large,
# HTTP they cannot parse: 400, 414, 431...) are the API's error object, not an HTML page
# (aegispay/gunicorn_worker.py). "sync" with more than one thread is gthread, as in gunicorn
# itself. Any other class is gunicorn's, with its HTML pages.
_THREADED = "aegispay.gunicorn_worker.ThreadWorker"
_WORKERS = {
    "gthread": _THREADED,
    "sync": "aegispay.gunicorn_worker.SyncWorker" if threads == 1 else _THREADED,
}
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
worker_class = _WORKERS.get(worker_class, worker_class)
# A request that runs longer than this is killed (no request calls a gateway: tasks do).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM (a rolling update, a scale-down), requests in flight get this long to finish.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle a worker now and then, so that a slow leak cannot grow without bound. Not too
# often: at 5,000 a worker under load restarted every half minute or so, and each restart (the
# project imported again, its connections opened again) cost that worker a second or two of
# CPU: make bench-api's figures swung by half with the restarts (issue 13).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "100000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "10000"))
# The proxies whose X-Forwarded-* headers gunicorn believes (the ingress, in a cluster).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Heartbeat files in memory, not on a container's overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - gunicorn's own advice
# Access log on stdout (GUNICORN_ACCESS_LOG= empty: none); the app's own logs are JSON
# (common/logging.py).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
