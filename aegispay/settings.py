"""AegisPay settings. Every value comes from the environment.

Production is the default: ``DEBUG`` is off, and ``SECRET_KEY``, ``FIELD_ENCRYPTION_KEYS``,
``DATABASE_URL`` and ``REDIS_URL`` must be given; without them start-up stops with a message
that says what is missing. The development launcher (``python -m embedded``, in ``embedded/``:
``make run``, ``make test``) gives its children all of them: the URLs of the embedded servers
it started, keys it generated and keeps under ``.aegispay/``, and ``DEBUG=true`` for
``make run``. While ``make run`` is up, a process started by hand in the same checkout
(``python manage.py ...``, ``celery -A aegispay ...``) with none of them set uses the same
ones: the launcher keeps them in ``.aegispay/run.json`` while it runs. Settings never import
the launcher; they read that file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

# Lets the classes that django-stubs makes generic be subscripted at run time too
# (``admin.ModelAdmin[Payment]``), as mypy needs them in the strictly typed apps.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# Local state of a development checkout: the launcher's servers, keys, the demo merchant's key.
STATE_DIR = Path(env("AEGISPAY_STATE_DIR", default=str(BASE_DIR / ".aegispay")))


def beside_make_run(state_dir: Path) -> dict[str, str]:
    """The environment of the ``make run`` that is up in this checkout, if one is: what its
    launcher wrote in ``run.json`` (its pid, and the variables it gave its children)."""
    try:
        state = json.loads((state_dir / "run.json").read_text())
        pid, variables = int(state["pid"]), dict(state["env"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return {}  # left behind by a launcher that was killed
    except PermissionError:
        pass  # alive, another user's
    return {str(name): str(value) for name, value in variables.items()}


# Only a process given no service URL at all is taken to be beside ``make run``.
for _name, _value in (
    {} if "DATABASE_URL" in os.environ or "REDIS_URL" in os.environ else beside_make_run(STATE_DIR)
).items():
    os.environ.setdefault(_name, _value)

DEBUG = env.bool("DEBUG", default=False)


def weak_secret_key(key: str) -> bool:
    """Django's own test of a key (``check --deploy``, security.W009): fewer than 50
    characters, fewer than 5 different ones, or Django's ``django-insecure-`` prefix."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")


# What stops start-up, all said at once (after REDIS_URL below).
_MISSING: list[str] = []
SECRET_KEY = env("SECRET_KEY", default="")
if weak_secret_key(SECRET_KEY):
    if not DEBUG:
        _MISSING.append(
            "SECRET_KEY is "
            + ("not set" if not SECRET_KEY else "too weak")
            + ": give 50 or more random characters, e.g. the output of python -c 'import "
            "secrets; print(secrets.token_urlsafe(50))' (DEBUG=true allows any key, for "
            "development only; make run and make test generate one under .aegispay/)"
        )
    SECRET_KEY = SECRET_KEY or "django-insecure-development-only-never-used-without-debug"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>" (Prometheus: the scrape job's
# authorization credentials). Unset, it answers no one, unless DEBUG (make run).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    _MISSING.append(
        "METRICS_TOKEN is too weak: give 32 or more random characters, or leave it unset to "
        "close /metrics"
    )

# Secrets kept in the database (webhook signing secrets) are encrypted with Fernet keys
# (common/encryption.py): comma-separated, the first encrypts, every one decrypts. To rotate:
# put a new key first, keep the old ones after it, run manage.py reencrypt_secrets, then drop
# the old ones. Unset, DEBUG derives a development key from SECRET_KEY; make run and make test
# give one they generated under .aegispay/. A key that is not a Fernet key always stops start-up.
FIELD_ENCRYPTION_KEYS = tuple(
    key.strip() for key in env.list("FIELD_ENCRYPTION_KEYS", default=[]) if key.strip()
)


def not_fernet_keys(keys: tuple[str, ...]) -> list[int]:
    """The positions (from 1) of the keys Fernet refuses: not 32 bytes of URL-safe base64."""
    refused = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            refused.append(position)
    return refused


if not FIELD_ENCRYPTION_KEYS and DEBUG:
    _DERIVED = hashlib.sha256(b"aegispay field encryption, development only:" + SECRET_KEY.encode())
    FIELD_ENCRYPTION_KEYS = (base64.urlsafe_b64encode(_DERIVED.digest()).decode("ascii"),)
elif not FIELD_ENCRYPTION_KEYS:
    _MISSING.append(
        "FIELD_ENCRYPTION_KEYS is not set: give one or more Fernet keys, comma-separated (the "
        "first encrypts, every one decrypts), e.g. the output of python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' (DEBUG=true "
        "derives a development key; make run and make test generate one under .aegispay/)"
    )
elif _REFUSED := not_fernet_keys(FIELD_ENCRYPTION_KEYS):
    _MISSING.append(
        "FIELD_ENCRYPTION_KEYS has "
        + ", ".join(f"key {position}" for position in _REFUSED)
        + f" of {len(FIELD_ENCRYPTION_KEYS)} that is not a Fernet key: each is 32 bytes in "
        "URL-safe base64 (44 characters), as Fernet.generate_key() makes them"
    )

# --- HTTPS (production defaults: on unless DEBUG; see the README's "Deploying") ---
# Behind a TLS-terminating proxy or ingress that sets X-Forwarded-Proto (set
# SECURE_PROXY_SSL_HEADER= empty when nothing in front of the app sets or strips it).
_PROXY_HEADER = env("SECURE_PROXY_SSL_HEADER", default="" if DEBUG else "HTTP_X_FORWARDED_PROTO")
SECURE_PROXY_SSL_HEADER = (_PROXY_HEADER, "https") if _PROXY_HEADER else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and scrapes reach the pods over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# The admin's forms posted through a proxy under another name: https://ops.example.com
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pgtrigger",
    "django_fsm",
    "aegispay",
    "payments",
    "gateways",
    "routing",
    "outbox",
    "webhooks",
]

MIDDLEWARE = [
    "common.middleware.CorrelationIdMiddleware",
    "backoffice.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS, Swagger UI's JS) served by the app itself, DEBUG or not.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # NUL or an unpaired surrogate in a path or query string: 400, before any view reads it.
    "payments.middleware.UnstorableRequestMiddleware",
    # The RateLimit-* headers of the request's rate-limit decision (payments/authentication.py).
    "payments.middleware.RateLimitHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aegispay.urls"
WSGI_APPLICATION = "aegispay.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Inside the package, so that an installed (non-editable) project has them too.
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    config = env.db_url_config(url)
    # libpq-style socket URLs (postgresql://user@/db?host=/dir) arrive as OPTIONS["host"];
    # Django's test runner needs it in HOST to open its maintenance connection the same way.
    options = config.get("OPTIONS", {})
    if "host" in options and not config.get("HOST"):
        config["HOST"] = options.pop("host")
    # Persistent connections: a new PostgreSQL connection per request (a backend forked, TLS
    # and authentication) cost more than the request's own statements (issue 13, make
    # bench-api). Each gunicorn thread and Celery process keeps one. Not checked before each
    # request by default (a SELECT 1 per request, half again a read's statements): a connection
    # that broke since its last request fails that one request, which commits nothing, and
    # Django drops it; DB_CONN_HEALTH_CHECKS=true checks instead.
    config["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    config["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
    # Hand-written hot statements run on a server-bound cursor (common/db.py), which psycopg
    # prepares after this many runs on a connection; empty: never (a pooler in transaction
    # mode). Django's own cursors bind on the client and are never prepared.
    threshold = env("DB_PREPARE_THRESHOLD", default="5").strip()
    if threshold and not (threshold.isdigit()):
        raise ImproperlyConfigured(
            f"DB_PREPARE_THRESHOLD must be a whole number or empty, not {threshold!r}"
        )
    options["prepare_threshold"] = int(threshold) if threshold else None
    config["OPTIONS"] = options
    # Lets a subprocess (a Celery worker started by a test) point at the test database.
    config["NAME"] = env("DATABASE_NAME", default=config["NAME"])
    return config


def _required_url(name: str, example: str) -> str:
    """A service URL with no default: dialing localhost by mistake is worse than stopping."""
    value = env(name, default="")
    if not value:
        _MISSING.append(
            f"{name} is not set, and no make run is up in this checkout ({STATE_DIR / 'run.json'}"
            f" names none): set {name} (e.g. {example}), or start make run first, or run the "
            "command through the launcher (.venv/bin/python -m embedded manage <command>)"
        )
    return value


DATABASE_URL = _required_url("DATABASE_URL", "postgres://user:password@db-host:5432/aegispay")
REDIS_URL = _required_url("REDIS_URL", "redis://redis-host:6379/0")
if _MISSING:
    raise ImproperlyConfigured("; and ".join(_MISSING))
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="aegispay"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # A Redis that hangs must fail a request (breakers, locks and staff pages report
            # it) rather than stall it forever.
            "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_CONNECT_TIMEOUT_SECONDS", default=2.0),
            "SOCKET_TIMEOUT": env.float("REDIS_TIMEOUT_SECONDS", default=5.0),
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# collectstatic's output, which WhiteNoise serves: the image collects at build time.
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # WhiteNoise's: compressed, content-hashed names cached a year (aegispay/staticfiles.py).
    "staticfiles": {"BACKEND": "aegispay.staticfiles.StaticFilesStorage"},
}

# Request bodies above this size are refused before they are parsed (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BODY_BYTES", default=64 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.authentication.ApiKeyAuthentication"],
    # A key's scopes after authentication: a restricted key (rk_…) only where its scopes let it.
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "payments.scopes.ScopePermission",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON, refusing what may not be stored: too deep, NUL, unpaired surrogates, card numbers.
    "DEFAULT_PARSER_CLASSES": ["payments.parsers.MerchantJSONParser"],
    "EXCEPTION_HANDLER": "payments.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AegisPay merchant API",
    "VERSION": "1.0.0",
    "DESCRIPTION": "One REST API in front of many payment gateways.",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI's files come from the sidecar package, not a CDN: /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Three "status" choice sets: each enum gets its own name (otherwise drf-spectacular makes
    # up hashed ones and warns, W001, in every system check).
    "ENUM_NAME_OVERRIDES": {
        "PaymentStatusEnum": "payments.models.PaymentStatus",
        "RefundStatusEnum": ["pending", "succeeded", "failed"],
        "WebhookEndpointStatusEnum": ["enabled", "disabled"],
    },
}

# --- Celery (see docs/ARCHITECTURE.md: JSON only, acks late, prefetch 1, time limits) ---
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="aegispay")
# The outbox relay has a queue of its own (and, in make run and docker-compose, a worker of its
# own), so publishing never waits behind gateway calls. Workers started by hand take both:
# celery -A aegispay worker -Q aegispay,aegispay.outbox
CELERY_OUTBOX_QUEUE = env("CELERY_OUTBOX_QUEUE", default=f"{CELERY_TASK_DEFAULT_QUEUE}.outbox")
CELERY_TASK_ROUTES = {
    "outbox.tasks.outbox_relay": {"queue": CELERY_OUTBOX_QUEUE},
    "outbox.tasks.outbox_prune": {"queue": CELERY_OUTBOX_QUEUE},
    "outbox.tasks.outbox_consumers": {"queue": CELERY_OUTBOX_QUEUE},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Gateway calls time out well below the task's soft limit, which is below the hard limit.
GATEWAY_TIMEOUT_SECONDS = env.float("GATEWAY_TIMEOUT_SECONDS", default=10.0)
# Retryable gateway errors: exponential backoff with full jitter, bounded in count.
GATEWAY_MAX_RETRIES = env.int("GATEWAY_MAX_RETRIES", default=3)
GATEWAY_RETRY_BASE_SECONDS = env.float("GATEWAY_RETRY_BASE_SECONDS", default=1.0)
GATEWAY_RETRY_FACTOR = env.float("GATEWAY_RETRY_FACTOR", default=2.0)
GATEWAY_RETRY_MAX_SECONDS = env.float("GATEWAY_RETRY_MAX_SECONDS", default=10.0)
# Stop retrying an operation this long after its first attempt (the reconciler takes over).
GATEWAY_RETRY_DEADLINE_SECONDS = env.float("GATEWAY_RETRY_DEADLINE_SECONDS", default=60.0)
# The per-payment Redis lock lives 3 x GATEWAY_TIMEOUT_SECONDS (lookup, send, lookup) plus this
# margin.
PAYMENT_LOCK_MARGIN_SECONDS = env.float("PAYMENT_LOCK_MARGIN_SECONDS", default=5.0)
# Circuit breaker per gateway (state in Redis, shared by every worker): opens when the failure
# rate over the window reaches the threshold with at least the minimum calls; half-opens after
# the cool-down; closes after consecutive trial successes; reopens on a trial failure.
BREAKER_FAILURE_RATE = env.float("BREAKER_FAILURE_RATE", default=0.5)
BREAKER_MINIMUM_CALLS = env.int("BREAKER_MINIMUM_CALLS", default=10)
BREAKER_WINDOW_SECONDS = env.float("BREAKER_WINDOW_SECONDS", default=60.0)
BREAKER_OPEN_SECONDS = env.float("BREAKER_OPEN_SECONDS", default=30.0)
BREAKER_HALF_OPEN_MAX_CALLS = env.int("BREAKER_HALF_OPEN_MAX_CALLS", default=3)
BREAKER_HALF_OPEN_SUCCESSES = env.int("BREAKER_HALF_OPEN_SUCCESSES", default=2)
BREAKER_TRIAL_LEASE_SECONDS = env.float(
    "BREAKER_TRIAL_LEASE_SECONDS", default=GATEWAY_TIMEOUT_SECONDS + 5
)
# Bulkhead: at most this many concurrent calls per gateway across all workers.
BULKHEAD_LIMIT = env.int("BULKHEAD_LIMIT", default=20)
BULKHEAD_LEASE_SECONDS = env.float("BULKHEAD_LEASE_SECONDS", default=GATEWAY_TIMEOUT_SECONDS + 5)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
# The Redis visibility timeout must exceed every retry countdown, or a delayed task is redelivered.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
# Beat: its schedule and a leader lock live in Redis (celery-redbeat). Several beat processes
# may run; the one holding the lock schedules, extending it every loop (at most
# BEAT_MAX_LOOP_INTERVAL_SECONDS apart); the others wait for it. A leader that dies without
# releasing it (killed, its node lost) is replaced within BEAT_LOCK_TIMEOUT_SECONDS plus one
# loop. Each periodic task's last success is kept in Redis and exported at /metrics
# (common/heartbeats.py).
CELERY_BEAT_SCHEDULER = "redbeat.RedBeatScheduler"
CELERY_REDBEAT_REDIS_URL = env("BEAT_REDIS_URL", default=REDIS_URL)
CELERY_REDBEAT_REDIS_OPTIONS: dict[str, Any] = {}
CELERY_REDBEAT_KEY_PREFIX = f"{CELERY_TASK_DEFAULT_QUEUE}:redbeat"
CELERY_REDBEAT_LOCK_TIMEOUT = env.int("BEAT_LOCK_TIMEOUT_SECONDS", default=30)
CELERY_BEAT_MAX_LOOP_INTERVAL = env.int("BEAT_MAX_LOOP_INTERVAL_SECONDS", default=5)
BEAT_EXPIRE_SECONDS = env.float("BEAT_EXPIRE_SECONDS", default=60.0)
BEAT_SETTLE_SECONDS = env.float("BEAT_SETTLE_SECONDS", default=30.0)
BEAT_RECONCILE_SECONDS = env.float("BEAT_RECONCILE_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE = {
    "expire-authorizations": {
        "task": "payments.tasks.payments_expire_authorizations",
        "schedule": BEAT_EXPIRE_SECONDS,
    },
    "settle-captures": {
        "task": "payments.tasks.payments_settle_captures",
        "schedule": BEAT_SETTLE_SECONDS,
    },
    "reconcile": {"task": "payments.tasks.payments_reconcile", "schedule": BEAT_RECONCILE_SECONDS},
}

# --- Outbox relay and event bus (outbox/relay.py, outbox/bus.py) ---
# Events go to a kombu topic exchange: AMQP (RabbitMQ) when EVENT_BUS_URL says so, else Redis.
EVENT_BUS_URL = env("EVENT_BUS_URL", default=REDIS_URL)
EVENT_BUS_EXCHANGE = env("EVENT_BUS_EXCHANGE", default="aegispay.events")
# A publish that the broker has not confirmed within this many seconds counts as failed.
EVENT_BUS_PUBLISH_TIMEOUT_SECONDS = env.float("EVENT_BUS_PUBLISH_TIMEOUT_SECONDS", default=5.0)
# A larger event is refused before it is sent (brokers cap message size; events are small).
EVENT_BUS_MAX_MESSAGE_BYTES = env.int("EVENT_BUS_MAX_MESSAGE_BYTES", default=1024 * 1024)
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", default=200)
# A message the broker refused this many times is dead-lettered (staff requeue it). A broker
# outage is not the message's fault: it never dead-letters anything; the relay waits it out.
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=15)
OUTBOX_RETRY_BASE_SECONDS = env.float("OUTBOX_RETRY_BASE_SECONDS", default=1.0)
OUTBOX_RETRY_MAX_SECONDS = env.float("OUTBOX_RETRY_MAX_SECONDS", default=300.0)
# While the event bus is down, relays wait at most this long between tries (jittered).
OUTBOX_OUTAGE_MAX_BACKOFF_SECONDS = env.float("OUTBOX_OUTAGE_MAX_BACKOFF_SECONDS", default=30.0)
# Published rows go this long after publication, with their day's partition (outbox_prune).
OUTBOX_RETENTION_HOURS = env.float("OUTBOX_RETENTION_HOURS", default=7 * 24)
# After a commit the relay is kicked; at most one kick waits in the queue for this long.
OUTBOX_KICK_TTL_SECONDS = env.float("OUTBOX_KICK_TTL_SECONDS", default=5.0)
# A kick that comes less than this after the end of a run of its task (busy) queues the next
# run to start this long after the kick, so that one run takes every event committed meanwhile:
# under load, fewer and larger runs; idle, a kick's run starts at once (outbox/services.py).
OUTBOX_KICK_DELAY_SECONDS = env.float("OUTBOX_KICK_DELAY_SECONDS", default=0.1)
BEAT_OUTBOX_SWEEP_SECONDS = env.float("BEAT_OUTBOX_SWEEP_SECONDS", default=5.0)
BEAT_OUTBOX_PRUNE_SECONDS = env.float("BEAT_OUTBOX_PRUNE_SECONDS", default=3600.0)
# The in-process consumers (read models, webhook dispatcher) are registered in code, in their
# apps' AppConfig.ready(), and read the outbox themselves (outbox/consumers.py); kicked after
# commit and swept by beat every BEAT_OUTBOX_SWEEP_SECONDS, like the relay but apart from it.

# --- Partitioned tables (common/partitions.py): events, audit trail, outbox ---
# Beat keeps partitions made this many periods (months for events and audit, days for the
# outbox) ahead of now; rows of a period without one go to the default partition, never lost.
PARTITIONS_AHEAD = env.int("PARTITIONS_AHEAD", default=3)
BEAT_PARTITIONS_SECONDS = env.float("BEAT_PARTITIONS_SECONDS", default=3600.0)
# Dropping an old outbox partition locks the outbox for an instant; waiting longer than this
# for that lock gives up until the next run rather than hold event writes behind it.
PARTITION_LOCK_TIMEOUT_MS = env.int("PARTITION_LOCK_TIMEOUT_MS", default=500)

# --- Merchant webhooks (webhooks/) ---
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
# A failing delivery is retried for at least this long before it is given up.
WEBHOOK_RETRY_WINDOW_HOURS = env.float("WEBHOOK_RETRY_WINDOW_HOURS", default=24.0)
# Outside DEBUG, webhook URLs must be https and must not resolve to private addresses.
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=DEBUG)
WEBHOOK_SIGNATURE_TOLERANCE_SECONDS = env.int("WEBHOOK_SIGNATURE_TOLERANCE_SECONDS", default=300)
BEAT_WEBHOOK_SWEEP_SECONDS = env.float("BEAT_WEBHOOK_SWEEP_SECONDS", default=10.0)

CELERY_BEAT_SCHEDULE |= {
    "outbox-sweep": {"task": "outbox.tasks.outbox_relay", "schedule": BEAT_OUTBOX_SWEEP_SECONDS},
    "outbox-consumers-sweep": {
        "task": "outbox.tasks.outbox_consumers",
        "schedule": BEAT_OUTBOX_SWEEP_SECONDS,
    },
    "outbox-prune": {"task": "outbox.tasks.outbox_prune", "schedule": BEAT_OUTBOX_PRUNE_SECONDS},
    "partitions-maintain": {
        "task": "aegispay.tasks.partitions_maintain",
        "schedule": BEAT_PARTITIONS_SECONDS,
    },
    # The webhook tasks live in webhooks/tasks.py but keep the names they had in outbox, which
    # queued messages and running beats already use.
    "webhooks-sweep": {
        "task": "outbox.webhook_tasks.webhook_deliveries_sweep",
        "schedule": BEAT_WEBHOOK_SWEEP_SECONDS,
    },
}

# --- Payments ---
AUTHORIZATION_EXPIRY_HOURS = env.int("AUTHORIZATION_EXPIRY_HOURS", default=7 * 24)
# Captures settle (captured -> completed) this long after capture; automatic capture settles
# at once.
SETTLEMENT_DELAY_SECONDS = env.float("SETTLEMENT_DELAY_SECONDS", default=0.0)
# Attempts and refunds still open this long after they started are resolved by the reconciler.
RECONCILE_AFTER_SECONDS = env.float("RECONCILE_AFTER_SECONDS", default=120.0)
# An open gateway operation is driven again by the reconciler with backoff: the wait doubles
# with every send, from RECONCILE_AFTER_SECONDS up to this.
RECONCILE_BACKOFF_MAX_SECONDS = env.float("RECONCILE_BACKOFF_MAX_SECONDS", default=3600.0)
# An operation the gateway has not answered for this long is listed for staff ("needs
# attention" in the admin) and counted in aegispay_unresolved_payments. Never guessed.
UNRESOLVED_ATTENTION_SECONDS = env.float("UNRESOLVED_ATTENTION_SECONDS", default=900.0)
# Rate limits (token buckets in Redis, common/rate_limit.py): each API key's budget unless the
# key sets its own; a budget per client address for requests with no key or a wrong one; and
# failed admin logins per client address. RATE_LIMIT_PROXY_HOPS: how many trusted proxies
# append to X-Forwarded-For in front of the app (0: the peer address is the client's).
API_RATE_LIMIT_PER_SECOND = env.float("API_RATE_LIMIT_PER_SECOND", default=100.0)
API_RATE_LIMIT_BURST = env.int("API_RATE_LIMIT_BURST", default=200)
API_CLIENT_RATE_LIMIT_PER_SECOND = env.float("API_CLIENT_RATE_LIMIT_PER_SECOND", default=5.0)
API_CLIENT_RATE_LIMIT_BURST = env.int("API_CLIENT_RATE_LIMIT_BURST", default=20)
ADMIN_LOGIN_FAILURES_PER_MINUTE = env.float("ADMIN_LOGIN_FAILURES_PER_MINUTE", default=5.0)
ADMIN_LOGIN_FAILURES_BURST = env.int("ADMIN_LOGIN_FAILURES_BURST", default=10)
RATE_LIMIT_PROXY_HOPS = env.int("RATE_LIMIT_PROXY_HOPS", default=0)
RATE_LIMIT_REDIS_TIMEOUT_SECONDS = env.float("RATE_LIMIT_REDIS_TIMEOUT_SECONDS", default=0.25)
# How long a web process keeps an API key it found, unless a change to any key or merchant tells
# every process to forget (payments/authentication.py); 0: read the database on every request.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=30.0)

# Idempotency keys are replayed this long (the retention), then forgotten and purged by beat.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# An in-progress idempotency key whose request died (worker killed, crash) is taken over after this.
IDEMPOTENCY_LOCK_TIMEOUT_SECONDS = env.int("IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", default=300)
# The purge deletes expired keys in transactions of at most this many rows.
IDEMPOTENCY_PURGE_BATCH_SIZE = env.int("IDEMPOTENCY_PURGE_BATCH_SIZE", default=1000)
BEAT_IDEMPOTENCY_PURGE_SECONDS = env.float("BEAT_IDEMPOTENCY_PURGE_SECONDS", default=3600.0)
CELERY_BEAT_SCHEDULE |= {
    "idempotency-purge": {
        "task": "payments.tasks.idempotency_keys_purge",
        "schedule": BEAT_IDEMPOTENCY_PURGE_SECONDS,
    },
}
# The largest payment accepted, in major units of its currency (10**10 USD is 10**12 cents).
MAX_AMOUNT_MAJOR_UNITS = env.int("MAX_AMOUNT_MAJOR_UNITS", default=10**10)

# Risk checks before authorization (payments/risk.py). The built-in rules' defaults, for
# merchants whose RiskRules (admin) leave them empty: 0 is off. Velocity counts payments per
# card token and per customer in fixed windows in Redis.
RISK_CARD_VELOCITY_LIMIT = env.int("RISK_CARD_VELOCITY_LIMIT", default=0)
RISK_CUSTOMER_VELOCITY_LIMIT = env.int("RISK_CUSTOMER_VELOCITY_LIMIT", default=0)
RISK_VELOCITY_WINDOW_SECONDS = env.int("RISK_VELOCITY_WINDOW_SECONDS", default=3600)
RISK_BLOCKED_COUNTRIES = env.list("RISK_BLOCKED_COUNTRIES", default=[])
# Checks of your own: dotted paths of callables taking a payments.risk.RiskFacts and answering
# a payments.risk.RiskVerdict or None, each run with a time limit and isolated from failures
# (payments/hooks.py); one that fails or runs over counts as RISK_CHECK_FAILURE: "allow" or
# "decline".
RISK_CHECKS = env.list("RISK_CHECKS", default=[])
RISK_CHECK_TIMEOUT_SECONDS = env.float("RISK_CHECK_TIMEOUT_SECONDS", default=0.5)
RISK_CHECK_FAILURE = env.str("RISK_CHECK_FAILURE", default="allow")
if RISK_CHECK_FAILURE not in ("allow", "decline"):
    raise ImproperlyConfigured("RISK_CHECK_FAILURE must be 'allow' or 'decline'")
# Extensibility hooks (payments/hooks.py): dotted paths of guards, run before a merchant's or
# staff's command and able to refuse it with a reason, and of listeners, called with each event
# after its transaction commits. Each call waits at most PAYMENT_HOOK_TIMEOUT_SECONDS.
PAYMENT_GUARDS = env.list("PAYMENT_GUARDS", default=[])
PAYMENT_LISTENERS = env.list("PAYMENT_LISTENERS", default=[])
PAYMENT_HOOK_TIMEOUT_SECONDS = env.float("PAYMENT_HOOK_TIMEOUT_SECONDS", default=0.5)
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500

# Sandbox gateways: simulated network latency, in milliseconds.
SANDBOX_LATENCY_MS = env.int("SANDBOX_LATENCY_MS", default=0)

# Sentry, when SENTRY_DSN is set: errors from web and workers, tagged with the environment and
# the release, and a cron monitor per periodic task that runs every whole number of minutes
# (beat checks in when it sends one, the worker when it succeeds or fails). Sentry Crons takes
# no shorter interval: the sweeps every few seconds are watched by their heartbeats at /metrics.
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    import re

    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", default="production"),
        release=env("SENTRY_RELEASE", default="") or None,
        traces_sample_rate=env.float("SENTRY_TRACES_RATE", 0.0),
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(
                monitor_beat_tasks=True,
                exclude_beat_tasks=[
                    f"^{re.escape(name)}$"
                    for name, entry in CELERY_BEAT_SCHEDULE.items()
                    if float(entry["schedule"]) % 60
                ],
            ),
        ],
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "common.logging.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
