"""Settings of the hub, read from the environment (see `.env.example` for every variable).

Grouped by topic; each odd setting links to the Django documentation that explains it.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# ------------------------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
# https://docs.djangoproject.com/en/6.0/ref/settings/#secret-key
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is not set: export a long random string (see .env.example)")
    SECRET_KEY = "development-only-key-never-used-without-DEBUG"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# ------------------------------------------------------------------------------------------------
# HTTPS: behind a reverse proxy that terminates TLS (docs/deployment.md, "HTTPS"). All off by
# default (./scripts/run serves plain HTTP on loopback); docker-compose.yml turns them on.
# https://docs.djangoproject.com/en/6.0/topics/security/#ssl-https
# ------------------------------------------------------------------------------------------------
# The header (and value) by which the proxy says the client came over HTTPS, e.g.
# "X-Forwarded-Proto: https". Trust it only when the proxy sets it and nothing else reaches the hub.
# https://docs.djangoproject.com/en/6.0/ref/settings/#secure-proxy-ssl-header
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    _name, _sep, _value = _proxy_ssl_header.partition(":")
    if not _sep or not _name.strip() or not _value.strip():
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER must read 'Header-Name: value', e.g. 'X-Forwarded-Proto: https', "
            f"not {_proxy_ssl_header!r}"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
# Plain HTTP requests are redirected to HTTPS, except the health check and /metrics, which probes
# and Prometheus reach inside the deployment's own network.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/$", r"^metrics$"]
# HTTP Strict Transport Security: browsers use HTTPS only, for this many seconds.
# https://docs.djangoproject.com/en/6.0/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The session (dashboard, admin) and CSRF cookies travel over HTTPS only.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Domain apps, lowest layer first.
    "iothub.accounts",
    "iothub.devices",
    "iothub.telemetry",
    "iothub.rules",
    "iothub.events",
    "iothub.notifications",
    "iothub.machines",
    # Flows.
    "iothub.ingest",
    "iothub.worker",
    # Faces.
    "iothub.api",
    "iothub.dashboard",
    "iothub.simulator",
    "iothub.monitoring",
]

MIDDLEWARE = [
    # Outermost: one log line and one count per request, whatever answers it (no database access).
    "iothub.monitoring.middleware.RequestLogMiddleware",
    # A view that fails because the database is unreachable answers 503 with Retry-After, not 500.
    "iothub.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "iothub.urls"
WSGI_APPLICATION = "iothub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# ------------------------------------------------------------------------------------------------
# Database: PostgreSQL (with TimescaleDB where installed) through psycopg 3 and Django's pool.
# https://docs.djangoproject.com/en/6.0/ref/databases/#connection-pool
# ------------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
# CONN_HEALTH_CHECKS: a connection kept from an earlier request is tested (an empty query, one
# round trip) before a request gets it, and replaced if the database restarted meanwhile; without
# it, the first requests after a restart fail on connections the server has closed. With the pool,
# Django hands this test to the pool as its `check`.
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)}
if env_bool("DB_POOL", True):
    # The pool keeps connections per process; CONN_MAX_AGE must stay 0 with it.
    # https://www.psycopg.org/psycopg3/docs/api/pool.html#the-connectionpool-class
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
        "max_size": env_int("DB_POOL_MAX_SIZE", 8, minimum=1),
        "timeout": env_int("DB_POOL_TIMEOUT", 10, minimum=1),
        # While the database is down, the pool retries each lost connection with a doubling delay
        # (1, 2, 4, … s) until this many seconds have passed, then gives up until a request asks
        # again, which starts over at once. Its default, 300 s, lets the delay grow to minutes, and
        # the hub would notice a database that is back only that much later.
        "reconnect_timeout": 10,
    }
# Django turns psycopg's prepared statements off (prepare_threshold None), which also ignores an
# explicit `prepare=True`. The hub prepares only the few statements every ingest request runs
# (iothub.db.execute_prepared); a threshold no query reaches keeps everything else unprepared, as
# Django intends. Django's own queries use client-side binding and are never prepared anyway.
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
# For those prepared statements, plan once per connection: PostgreSQL otherwise re-plans at every
# execution whenever it prices the generic plan above the custom ones, which for the ingest
# statement is every time. Affects prepared statements only, so nothing else of the hub.
# https://www.postgresql.org/docs/15/runtime-config-query.html#GUC-PLAN-CACHE-MODE
_pg_options = DATABASES["default"]["OPTIONS"].get("options", "")
DATABASES["default"]["OPTIONS"]["options"] = f"{_pg_options} -c plan_cache_mode=force_generic_plan".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django caps index names at 30 characters for Oracle's sake; PostgreSQL allows 63, and the spec's
# names (idx_notification_template_recipients_gin, ...) are longer than 30.
# https://docs.djangoproject.com/en/6.0/ref/checks/#models
SILENCED_SYSTEM_CHECKS = ["models.E034"]

# ------------------------------------------------------------------------------------------------
# Authentication and passwords
# ------------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The dashboard's own login page (Django's auth views); the admin keeps its own.
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "dashboard:login"

# ------------------------------------------------------------------------------------------------
# Internationalisation and time
# ------------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------------------------
# Static files (admin, Swagger UI from drf-spectacular-sidecar, dashboard assets), served by
# WhiteNoise from the installed packages, so no CDN and no separate web server is needed.
# https://whitenoise.readthedocs.io/en/stable/django.html
# ------------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Without collectstatic (development, tests) WhiteNoise finds files through the finders.
WHITENOISE_USE_FINDERS = True
# collectstatic also writes a gzip copy of each file, which WhiteNoise serves to browsers that
# accept it: plotly.js, the dashboard's chart library, is 4.8 MB as is and about 1.4 MB gzipped.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js for the dashboard's charts, from the installed `plotly` package.
    "iothub.dashboard.finders.PlotlyJsFinder",
]

# ------------------------------------------------------------------------------------------------
# REST API
# https://www.django-rest-framework.org/api-guide/settings/
# ------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["iothub.api.permissions.RolePermission"],
    # JSON only, bounded (iothub/api/parsers.py): no form or multipart encodings are accepted or
    # advertised in the schema.
    "DEFAULT_PARSER_CLASSES": ["iothub.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "iothub.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "iothub.api.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "iothub.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "iothub.api.errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "IoT Hub Alpha API",
    "DESCRIPTION": "Device registry, telemetry ingest and queries, rules, events and notifications.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI are anonymous: no authentication at all, so that a stale or wrong
    # token does not turn them into 401s.
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Tags and operation ids from the resource (`devices`), not from the version segment.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Several tables have a `status`; name each enum after its entity so they never collide.
    "ENUM_NAME_OVERRIDES": {
        "DeviceStatusEnum": "iothub.devices.models.DeviceStatus",
        "MetricNameEnum": "iothub.devices.models.MetricName",
        "RuleOperatorEnum": "iothub.rules.models.Operator",
        "SeverityEnum": "iothub.rules.models.Severity",
        "EventStatusEnum": "iothub.events.models.EventStatus",
        "DeliveryStatusEnum": "iothub.notifications.models.DeliveryStatus",
        "RecipientTypeEnum": "iothub.notifications.models.RecipientType",
    },
    # Devices authenticate to ingest with their own token; the ingest's authentication extension
    # refers to this scheme by name (see iothub/api/schema.py).
}

# ------------------------------------------------------------------------------------------------
# The hub
# ------------------------------------------------------------------------------------------------
# A device with no telemetry for this long is marked inactive.
IOTHUB_INACTIVE_AFTER_SECONDS = env_int("IOTHUB_INACTIVE_AFTER_SECONDS", 600, minimum=1)
# Ingest limits: messages per batch, bytes per request, how far a device's clock may run ahead.
IOTHUB_INGEST_MAX_BATCH = env_int("IOTHUB_INGEST_MAX_BATCH", 1000, minimum=1)
IOTHUB_INGEST_MAX_BODY_BYTES = env_int("IOTHUB_INGEST_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
IOTHUB_INGEST_MAX_FUTURE_SKEW = timedelta(seconds=env_int("IOTHUB_INGEST_MAX_FUTURE_SKEW_SECONDS", 300, minimum=0))
# Telemetry older than this is dropped (by TimescaleDB's policy job, or by the worker).
IOTHUB_TELEMETRY_RETENTION_DAYS = env_int("IOTHUB_TELEMETRY_RETENTION_DAYS", 365, minimum=1)
# A telemetry chunk whose time range ended this long ago is closed: the worker rewrites it once in
# (device_id, timestamp) order (docs/timescaledb.md, "Device-ordered chunks").
IOTHUB_TELEMETRY_REORDER_AFTER_HOURS = env_int("IOTHUB_TELEMETRY_REORDER_AFTER_HOURS", 24, minimum=0)
# Roll-ups of telemetry per device, metric and minute/hour: each ingest batch queued in the
# readings' transaction, rolled up by the worker, read by aggregates (docs/telemetry.md). Off:
# neither kept nor read (for benchmarks); turning them on again needs `manage.py
# telemetry_rollups_rebuild`.
IOTHUB_TELEMETRY_ROLLUPS = env_bool("IOTHUB_TELEMETRY_ROLLUPS", True)
# A reading older than the retention period would be dropped at once: refuse it instead.
IOTHUB_INGEST_MAX_AGE = timedelta(days=IOTHUB_TELEMETRY_RETENTION_DAYS)
# How long the answer to a request sent with an Idempotency-Key is kept for its retries.
IOTHUB_INGEST_IDEMPOTENCY_HOURS = env_int("IOTHUB_INGEST_IDEMPOTENCY_HOURS", 24, minimum=1)
# The batched writer (docs/ingest.md): at most this many messages in one transaction, and how long
# it waits for more after the first (0: it takes whatever is queued when it is free, no timer).
IOTHUB_INGEST_BATCH_MESSAGES = env_int("IOTHUB_INGEST_BATCH_MESSAGES", 5000, minimum=1)
IOTHUB_INGEST_BATCH_WAIT_MS = env_int("IOTHUB_INGEST_BATCH_WAIT_MS", 0, minimum=0)
# Where people reach the hub; links in notifications ({event_url}) start with it.
IOTHUB_PUBLIC_URL = env_str("IOTHUB_PUBLIC_URL", "http://localhost:8000").rstrip("/")

# ------------------------------------------------------------------------------------------------
# MQTT ingest (docs/mqtt.md): the consumer `manage.py run_ingest`, and the broker configuration the
# hub keeps (`manage.py mqtt_broker_config`): Mosquitto's password file, ACL file and config.
# ------------------------------------------------------------------------------------------------
# Where the consumer (and the simulator) reach the broker.
IOTHUB_MQTT_HOST = env_str("IOTHUB_MQTT_HOST", "127.0.0.1")
IOTHUB_MQTT_PORT = env_int("IOTHUB_MQTT_PORT", 1883, minimum=1)
# The consumer's own broker account, in the password file beside the devices'.
IOTHUB_MQTT_USERNAME = env_str("IOTHUB_MQTT_USERNAME", "iothub-ingest")
IOTHUB_MQTT_PASSWORD = env_str("IOTHUB_MQTT_PASSWORD", "")
# A CA certificate file: the consumer then connects with TLS and checks the broker's certificate.
IOTHUB_MQTT_CA_FILE = env_str("IOTHUB_MQTT_CA_FILE", "")
# The consumer's MQTT client id: its persistent session at the broker, so it must stay the same
# from one start to the next and differ between consumers. Empty: iothub-ingest-<host name>.
IOTHUB_MQTT_CLIENT_ID = env_str("IOTHUB_MQTT_CLIENT_ID", "")
# Consumers of one group share the devices' messages ($share/<group>/devices/+/telemetry).
IOTHUB_MQTT_SHARE_GROUP = env_str("IOTHUB_MQTT_SHARE_GROUP", "iothub")
# Messages the broker may have in flight to one consumer, unacknowledged (MQTT 5 Receive Maximum):
# enough to cover a commit at full rate. At most 10,000 (the redelivery record relies on it).
IOTHUB_MQTT_RECEIVE_MAXIMUM = env_int("IOTHUB_MQTT_RECEIVE_MAXIMUM", 2000, minimum=1)
if IOTHUB_MQTT_RECEIVE_MAXIMUM > 10_000:
    raise ImproperlyConfigured(f"IOTHUB_MQTT_RECEIVE_MAXIMUM must be at most 10000, not {IOTHUB_MQTT_RECEIVE_MAXIMUM}")
# The folder of the hub's broker configuration. Set where this process can write it (beside the
# broker): every device change then rewrites the password file there, and run_ingest checks it
# every IOTHUB_MQTT_RESYNC_SECONDS. Empty: this process leaves the broker's files alone.
IOTHUB_MQTT_BROKER_DIR = env_str("IOTHUB_MQTT_BROKER_DIR", "")
# The broker's pid file: it is sent SIGHUP (reload) when the password file changed. Empty: the
# broker reloads by other means (docker-compose.yml's `mqtt` service watches the file).
IOTHUB_MQTT_BROKER_PID_FILE = env_str("IOTHUB_MQTT_BROKER_PID_FILE", "")
IOTHUB_MQTT_RESYNC_SECONDS = env_int("IOTHUB_MQTT_RESYNC_SECONDS", 30, minimum=1)
# What `mqtt_broker_config` writes: the plain listener (loopback by default), the TLS listener
# (when a certificate and key are given), where the broker keeps its sessions.
IOTHUB_MQTT_BROKER_BIND = env_str("IOTHUB_MQTT_BROKER_BIND", "127.0.0.1")
IOTHUB_MQTT_TLS_PORT = env_int("IOTHUB_MQTT_TLS_PORT", 8883, minimum=1)
IOTHUB_MQTT_TLS_BIND = env_str("IOTHUB_MQTT_TLS_BIND", "")
IOTHUB_MQTT_TLS_CERTFILE = env_str("IOTHUB_MQTT_TLS_CERTFILE", "")
IOTHUB_MQTT_TLS_KEYFILE = env_str("IOTHUB_MQTT_TLS_KEYFILE", "")
IOTHUB_MQTT_BROKER_DATA_DIR = env_str("IOTHUB_MQTT_BROKER_DATA_DIR", "")
# The user the broker runs as when started as root (Mosquitto's `user`): by default the one that
# writes its files; docker-compose.yml's broker container has its own `mosquitto` user.
IOTHUB_MQTT_BROKER_USER = env_str("IOTHUB_MQTT_BROKER_USER", "")
# Seconds between the broker's saves of its in-memory state (queued messages, sessions) to disk.
IOTHUB_MQTT_BROKER_AUTOSAVE_SECONDS = env_int("IOTHUB_MQTT_BROKER_AUTOSAVE_SECONDS", 5, minimum=1)

# ------------------------------------------------------------------------------------------------
# Serving (gunicorn.conf.py, iothub/asgi.py; docs/deployment.md)
# ------------------------------------------------------------------------------------------------
# Threads per process that run Django's requests (the ingest door needs none).
IOTHUB_THREADS = env_int("IOTHUB_THREADS", 4, minimum=1)
# A request body must arrive whole within this many seconds (408 otherwise), and be at most this
# large (413; ingest has its own, smaller cap). Until it has arrived, it holds no thread.
IOTHUB_HTTP_BODY_TIMEOUT_SECONDS = env_int("IOTHUB_HTTP_BODY_TIMEOUT_SECONDS", 30, minimum=1)
IOTHUB_HTTP_MAX_BODY_BYTES = env_int("IOTHUB_HTTP_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)

# ------------------------------------------------------------------------------------------------
# Notifications: delivery by the worker, and the settings of each channel (docs/notifications.md).
# ------------------------------------------------------------------------------------------------
# How many deliveries one worker process sends at a time: the worker's engine claims them in
# batches of at most IOTHUB_WORKER_BATCH_SIZE, one database connection per batch in flight.
IOTHUB_NOTIFICATION_CONCURRENCY = env_int("IOTHUB_NOTIFICATION_CONCURRENCY", 32, minimum=1)
# A template's retry_delay_minutes counts in units of this many seconds: 60 in production; tests
# and demos shorten it to watch retries happen.
IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS = env_int("IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS", 60, minimum=1)

# Email goes through Django's email API.
# https://docs.djangoproject.com/en/6.0/topics/email/#smtp-backend
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 15, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "IoT Hub <iothub@localhost>")

# SMS goes through an HTTP gateway; the first adapter speaks Twilio's Messages API.
# https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
IOTHUB_SMS_PROVIDER = env_str("IOTHUB_SMS_PROVIDER", "twilio")
IOTHUB_SMS_API_URL = env_str("IOTHUB_SMS_API_URL", "https://api.twilio.com").rstrip("/")
IOTHUB_SMS_ACCOUNT_SID = env_str("IOTHUB_SMS_ACCOUNT_SID", "")
IOTHUB_SMS_AUTH_TOKEN = env_str("IOTHUB_SMS_AUTH_TOKEN", "")
IOTHUB_SMS_FROM = env_str("IOTHUB_SMS_FROM", "")
IOTHUB_SMS_TIMEOUT_SECONDS = env_int("IOTHUB_SMS_TIMEOUT_SECONDS", 15, minimum=1)

# Webhooks are signed the Standard Webhooks way with this secret (`whsec_` + base64).
# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
IOTHUB_WEBHOOK_SECRET = env_str("IOTHUB_WEBHOOK_SECRET", "")
IOTHUB_WEBHOOK_TIMEOUT_SECONDS = env_int("IOTHUB_WEBHOOK_TIMEOUT_SECONDS", 15, minimum=1)
# Private, loopback and link-local addresses are refused (checked on every connection) unless
# this is true: a webhook URL must not become a way into the plant's own network.
IOTHUB_WEBHOOK_ALLOW_PRIVATE = env_bool("IOTHUB_WEBHOOK_ALLOW_PRIVATE", False)

# ------------------------------------------------------------------------------------------------
# The worker (`manage.py run_worker`) and the plant's machine API (the `stop_machine` action).
# See docs/worker.md.
# ------------------------------------------------------------------------------------------------
# Base URL of the machine-control API; the hub POSTs {base}/machines/{machine_id}/stop. Empty: not
# configured, and stop_machine actions fail after their retries, saying so.
IOTHUB_MACHINE_API_URL = env_str("IOTHUB_MACHINE_API_URL", "")
# Sent as `Authorization: Bearer <token>` when set.
IOTHUB_MACHINE_API_TOKEN = env_str("IOTHUB_MACHINE_API_TOKEN", "")
IOTHUB_MACHINE_API_TIMEOUT_SECONDS = env_int("IOTHUB_MACHINE_API_TIMEOUT_SECONDS", 10, minimum=1)
# Attempts per action, the first included; the delay before a retry doubles after each one.
IOTHUB_MACHINE_API_MAX_ATTEMPTS = env_int("IOTHUB_MACHINE_API_MAX_ATTEMPTS", 4, minimum=1)
IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS = env_int("IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS", 5, minimum=0)
# The most rows the worker's engine claims, sends and records together (docs/worker.md).
IOTHUB_WORKER_BATCH_SIZE = env_int("IOTHUB_WORKER_BATCH_SIZE", 16, minimum=1)
# How often the worker runs its periodic tasks.
IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS = env_int("IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS", 60, minimum=1)
IOTHUB_WORKER_RETENTION_CHECK_SECONDS = env_int("IOTHUB_WORKER_RETENTION_CHECK_SECONDS", 3600, minimum=1)
IOTHUB_WORKER_REORDER_CHECK_SECONDS = env_int("IOTHUB_WORKER_REORDER_CHECK_SECONDS", 3600, minimum=1)
# How often the worker looks for silent nodata rules and for due reminders and escalations
# (docs/rules.md): an alarm is at most this late.
IOTHUB_WORKER_ALARM_CHECK_SECONDS = env_int("IOTHUB_WORKER_ALARM_CHECK_SECONDS", 15, minimum=1)
# How often the worker rolls up the readings ingest queued (docs/telemetry.md, "Roll-ups").
IOTHUB_WORKER_ROLLUP_SECONDS = env_int("IOTHUB_WORKER_ROLLUP_SECONDS", 1, minimum=1)

# ------------------------------------------------------------------------------------------------
# The dashboard (docs/dashboard.md)
# ------------------------------------------------------------------------------------------------
# How often the live parts of its pages (overview figures, latest events, lists) refresh, seconds.
IOTHUB_DASHBOARD_REFRESH_SECONDS = env_int("IOTHUB_DASHBOARD_REFRESH_SECONDS", 10, minimum=1)

# ------------------------------------------------------------------------------------------------
# Metrics for Prometheus at /metrics (docs/monitoring.md): who may scrape.
# ------------------------------------------------------------------------------------------------
# A scraper presenting `Authorization: Bearer <token>` is served; empty: no token accepted.
IOTHUB_METRICS_TOKEN = env_str("IOTHUB_METRICS_TOKEN", "")
# Client addresses served without the token (the TCP peer: behind a proxy, use the token).
IOTHUB_METRICS_ALLOWED_NETWORKS = env_list("IOTHUB_METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])

# ------------------------------------------------------------------------------------------------
# Logging: one line per record on stderr, for the process manager to collect: JSON objects
# (LOG_FORMAT=json, the default) or plain text. One line per request (logger iothub.request).
# ------------------------------------------------------------------------------------------------
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "iothub.monitoring.logformat.HubJsonFormatter"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "line"}},
    "root": {"handlers": ["stderr"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Libraries' per-request chatter: the hub logs each delivery itself, with its ids.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},  # aiosmtpd (the demo receivers, the tests' SMTP server)
    },
}
