# The hub's production image: gunicorn serving Django, static files collected at build time and
# served by WhiteNoise, running as an unprivileged user. docker-compose.yml runs it four ways:
# `migrate` (once), `web` (gunicorn), `worker` (manage.py run_worker) and `ingest` (manage.py
# run_ingest). See docs/deployment.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IOTHUB_BIND=0.0.0.0 \
    IOTHUB_PORT=8000

RUN groupadd --system --gid 10001 iothub \
    && useradd --system --uid 10001 --gid iothub --home-dir /app --no-create-home --shell /usr/sbin/nologin iothub

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. Every version is pinned.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code belongs to root and is only read by the hub's user.
COPY . .
# collectstatic imports the settings, which need a SECRET_KEY; this one exists only in this step.
RUN SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput --verbosity 0

# Prometheus multiprocess counters (docs/monitoring.md): a folder the hub's user owns, which the
# compose file's `metrics` volume, shared by `web` and `worker`, takes its ownership from.
RUN mkdir -p /var/lib/iothub/metrics && chown iothub:iothub /var/lib/iothub/metrics
# The MQTT broker's configuration (docs/mqtt.md), written by the hub, read by the `mqtt` service.
RUN mkdir -p /var/lib/iothub/mqtt && chown iothub:iothub /var/lib/iothub/mqtt

USER iothub
EXPOSE 8000
# gunicorn.conf.py reads IOTHUB_BIND, IOTHUB_PORT, IOTHUB_WORKERS and IOTHUB_THREADS.
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
