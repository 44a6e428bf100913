"""A private PostgreSQL cluster that a test or a benchmark may stop and start at will.

`initdb` in a temporary folder, a free loopback port, TimescaleDB preloaded where its library is
installed (so that the hub's migrations and `setup_timescaledb` behave as on the shared server).
The shared server on 5432 serves other people and CI: whatever needs to stop a database uses one of
these instead.

    cluster = PrivateCluster()                 # nothing on disk yet
    cluster.start()                            # initdb the first time (a few seconds), then ready
    url = cluster.create_database("iothub")
    cluster.stop("immediate")                  # a crash, as far as clients can tell
    cluster.start()                            # crash recovery, then ready again
    cluster.destroy()                          # stopped and its folder removed (also done at exit)

The binaries: `IOTHUB_PG_BIN` if set, else PostgreSQL 15's on Debian (`/usr/lib/postgresql/15/bin`,
the version the hub is tested with), else the newest under `/usr/lib/postgresql`, else `initdb` on
PATH. PostgreSQL refuses to run as root; under root the cluster runs as the `postgres` system user
that the server packages create.
"""

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

DEBIAN_PG = Path("/usr/lib/postgresql")
STOP_MODES = ("smart", "fast", "immediate")


def _bin_dir() -> Path:
    if configured := os.environ.get("IOTHUB_PG_BIN"):
        return Path(configured)
    preferred = DEBIAN_PG / "15" / "bin"
    if (preferred / "initdb").exists():
        return preferred
    found = sorted(DEBIAN_PG.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True)
    if found:
        return found[0].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("no PostgreSQL server binaries found: install them or set IOTHUB_PG_BIN to their folder")


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateCluster:
    """One PostgreSQL server of our own. `durable=False` turns fsync off: faster to set up, and
    still crash-safe against a server stop of any mode (the operating system keeps what was
    written), only not against a power cut."""

    def __init__(self, *, durable: bool = True, max_connections: int = 200):
        self.bin = _bin_dir()
        self.port = free_port()
        self.durable = durable
        self.max_connections = max_connections
        self.folder: Path | None = None
        self.running = False
        # Root may not run PostgreSQL: run it as the packages' system user.
        self._user = "postgres" if os.geteuid() == 0 else None

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.folder is not None, "the cluster was never started"
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None, "the cluster was never started"
        return self.folder / "server.log"

    def start(self, timeout: float = 60) -> None:
        """Start the server (creating the cluster the first time) and return once it accepts
        connections."""
        if self.folder is None:
            self._initdb()
            atexit.register(self.destroy)
        self._pg_ctl("start", "-l", str(self.log_path), "-t", str(int(timeout)))
        self.running = True
        self.wait_ready(timeout)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server: `smart` waits for clients to leave, `fast` disconnects them, `immediate`
        kills every server process at once (crash recovery at the next start)."""
        if mode not in STOP_MODES:
            raise ValueError(f"mode must be one of {STOP_MODES}, not {mode!r}")
        self._pg_ctl("stop", "-m", mode, "-t", str(int(timeout)))
        self.running = False

    def wait_ready(self, timeout: float = 60) -> None:
        """Return once a connection to the server answers a query."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the private PostgreSQL did not get ready:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its folder. Safe to call twice."""
        if self.folder is None:
            return
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> "PrivateCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # --- use ------------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # --- internals --------------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="iothub-pg-"))
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        self._run([*initdb, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"])
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            # TCP only: no socket file in a shared folder to collide with another cluster's.
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'64MB'",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        if self._has_timescaledb():
            settings["shared_preload_libraries"] = "'timescaledb'"
            settings["timescaledb.telemetry_level"] = "off"
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# Private cluster for tests and benchmarks\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _has_timescaledb(self) -> bool:
        pkglibdir = self._run([str(self.bin / "pg_config"), "--pkglibdir"]).strip()
        return (Path(pkglibdir) / "timescaledb.so").exists()

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args])

    def _run(self, command: list[str]) -> str:
        result = subprocess.run(
            command,
            cwd=self.folder,  # a folder the server's user may enter
            user=self._user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr + "\n" + self.log_tail()
            )
        return result.stdout
