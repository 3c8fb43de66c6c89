"""AegisPay settings. Every value comes from the environment, with defaults that run locally.

``DATABASE_URL`` and ``REDIS_URL`` default to the embedded servers that ``make run`` and
``make test`` start (the development launcher ``python -m embedded``, in ``embedded/``), which
export the URLs they chose. Settings never import the launcher; it runs the project as child
processes.
"""

from __future__ import annotations

from pathlib import Path

import django_stubs_ext
import environ

# Lets the classes that django-stubs makes generic be subscripted at run time too
# (``admin.ModelAdmin[Payment]``), as mypy needs them in the strictly typed apps.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="dev-insecure-secret-key-change-me-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

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
        "DIRS": [BASE_DIR / "templates"],
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


def _database(url: str) -> dict:
    config = env.db_url_config(url)
    # libpq-style socket URLs (postgresql://user@/db?host=/dir) arrive as OPTIONS["host"];
    # Django's test runner needs it in HOST to open its maintenance connection the same way.
    options = config.get("OPTIONS", {})
    if "host" in options and not config.get("HOST"):
        config["HOST"] = options.pop("host")
    config["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
    # Lets a subprocess (a Celery worker started by a test) point at the test database.
    config["NAME"] = env("DATABASE_NAME", default=config["NAME"])
    return config


DATABASE_URL = env("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/aegispay")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
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
STATIC_ROOT = BASE_DIR / ".aegispay" / "static"

# Request bodies above this size are refused before they are parsed (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BODY_BYTES", default=64 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
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
# Beat: exactly one beat process runs these (make run and docker-compose start one).
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
# Published rows are deleted this long after publication.
OUTBOX_RETENTION_HOURS = env.float("OUTBOX_RETENTION_HOURS", default=7 * 24)
# After a commit the relay is kicked; at most one kick waits in the queue for this long.
OUTBOX_KICK_TTL_SECONDS = env.float("OUTBOX_KICK_TTL_SECONDS", default=5.0)
BEAT_OUTBOX_SWEEP_SECONDS = env.float("BEAT_OUTBOX_SWEEP_SECONDS", default=5.0)
BEAT_OUTBOX_PRUNE_SECONDS = env.float("BEAT_OUTBOX_PRUNE_SECONDS", default=3600.0)
# The in-process consumers (read models, webhook dispatcher) are registered in code, in their
# apps' AppConfig.ready(), and read the outbox themselves (outbox/consumers.py); kicked after
# commit and swept by beat every BEAT_OUTBOX_SWEEP_SECONDS, like the relay but apart from it.

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
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500

# Sandbox gateways: simulated network latency, in milliseconds.
SANDBOX_LATENCY_MS = env.int("SANDBOX_LATENCY_MS", default=0)

SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, traces_sample_rate=env.float("SENTRY_TRACES_RATE", 0.0))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "common.logging.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
